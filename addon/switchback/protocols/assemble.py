"""An LLM call as a person reads it: the request as a conversation, the
answer — streamed or whole — assembled into its text, reasoning, tool calls
and finish reason, and both laid out as plain text.

A stream is forty `data:` lines that each carry a word; nobody reads it that
way. Each protocol has one reader here (what its request says, what its
whole answer and each of its stream events add); the layout is shared. A new
protocol adds its reader to `READERS`. Pure: mitmproxy's content view
(`shell/llmview.py`) only picks the protocol and shows the text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..jsonsafe import loads
from ..vocabulary import Protocol
from .kinds import event_type, is_done
from .sse import SseParser
from .translate_request import text_of
from . import messages
from .spec import SPECS, spec
from .usage import Usage

RULE = "──"


@dataclass(frozen=True)
class Said:
    """One labelled turn of a conversation: who said it, and what."""

    who: str  # instructions, system, developer, user, assistant, reasoning, tool call, tool result
    text: str


@dataclass
class ToolCall:
    name: str
    arguments: str  # as the model wrote them (a JSON text for function tools)
    call_id: str = ""


@dataclass
class Assembled:
    """A whole answer, however it arrived."""

    text: str = ""
    reasoning: str = ""
    refusal: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: str | None = None
    model: str | None = None
    usage: Usage | None = None
    error: str | None = None  # the provider's error message (an error body or event)
    events: int = 0  # stream events read; 0 for a whole answer


class Reader:
    """What one protocol's requests, answers and stream events say."""

    protocol: Protocol

    def conversation(self, body: dict) -> list[Said]:
        raise NotImplementedError

    def whole(self, answer: dict, into: Assembled) -> None:
        raise NotImplementedError

    def event(self, kind: str | None, payload: dict, into: Assembled,
              calls: dict[Any, ToolCall]) -> None:
        raise NotImplementedError


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _chat_calls(calls: Any) -> list[ToolCall]:
    """A chat message's `tool_calls`."""
    return [ToolCall(str(function.get("name", "?")), _arguments(function.get("arguments", "")),
                     str(call.get("id", "")))
            for call in (calls if isinstance(calls, list) else ())
            if isinstance(call, dict) and isinstance(function := call.get("function"), dict)]


def _error(body: dict) -> str | None:
    """The message of an OpenAI error envelope (or a bare error object)."""
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = str(error.get("message") or "error")
        return f"{message} ({code})" if code else message
    return None


class ChatReader(Reader):
    protocol = Protocol.CHAT

    def conversation(self, body: dict) -> list[Said]:
        said: list[Said] = []
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            role = str(message.get("role") or "?")
            content = message.get("content")
            text = text_of(content) if content is not None else ""
            if role == "tool":
                said.append(Said("tool result", f"[{message.get('tool_call_id', '')}] {text}"))
                continue
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                said.append(Said("reasoning", reasoning))
            if text or not message.get("tool_calls"):
                said.append(Said(role, text))
            said += [_call_said(call) for call in _chat_calls(message.get("tool_calls"))]
        return said

    def whole(self, answer: dict, into: Assembled) -> None:
        into.model, into.usage = answer.get("model"), spec(self.protocol).answer_usage(answer)
        choices = answer.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        message = choice.get("message") or {}
        into.text = text_of(message.get("content")) if message.get("content") else ""
        into.reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        into.refusal = message.get("refusal") or ""
        into.tool_calls = _chat_calls(message.get("tool_calls"))
        into.finish = choice.get("finish_reason")

    def event(self, kind: str | None, payload: dict, into: Assembled,
              calls: dict[Any, ToolCall]) -> None:
        into.model = into.model or payload.get("model")
        into.error = _error(payload) or into.error
        into.usage = spec(self.protocol).answer_usage(payload) or into.usage
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only the first choice is shown (as the translators carry it)
            delta = choice.get("delta") or {}
            into.text += delta.get("content") or ""
            into.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            into.refusal += delta.get("refusal") or ""
            for part in delta.get("tool_calls") or ():
                call = calls.setdefault(part.get("index", 0), ToolCall("", ""))
                function = part.get("function") or {}
                call.call_id = part.get("id") or call.call_id
                call.name += function.get("name") or ""
                call.arguments += function.get("arguments") or ""
            into.finish = choice.get("finish_reason") or into.finish


_RESPONSES_SAYS: dict[str, Callable[[dict], list[Said]]] = {
    "message": lambda item: [Said(str(item.get("role") or "user"),
                                  text_of(item.get("content"), "\n"))],
    "function_call": lambda item: [_call_said(ToolCall(
        str(item.get("name", "?")), _arguments(item.get("arguments", "")),
        str(item.get("call_id", ""))))],
    "custom_tool_call": lambda item: [_call_said(ToolCall(
        str(item.get("name", "?")), str(item.get("input", "")), str(item.get("call_id", ""))))],
    "function_call_output": lambda item: [Said(
        "tool result", f"[{item.get('call_id', '')}] {text_of(item.get('output'))}")],
    "custom_tool_call_output": lambda item: [Said(
        "tool result", f"[{item.get('call_id', '')}] {text_of(item.get('output'))}")],
    "reasoning": lambda item: [Said("reasoning", text_of(item.get("summary")) or
                                    "(encrypted)")],
}


class ResponsesReader(Reader):
    protocol = Protocol.RESPONSES

    def conversation(self, body: dict) -> list[Said]:
        said = [Said("instructions", body["instructions"])] \
            if isinstance(body.get("instructions"), str) else []
        if isinstance(body.get("previous_response_id"), str):
            said.append(Said("continues", body["previous_response_id"]))
        items = body.get("input")
        if isinstance(items, str):
            return [*said, Said("user", items)]
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict):
                kind = item.get("type") or ("message" if "role" in item else "?")
                says = _RESPONSES_SAYS.get(kind)
                said += says(item) if says else [Said(kind, json.dumps(item)[:200])]
        return said

    def whole(self, answer: dict, into: Assembled) -> None:
        into.model, into.usage = answer.get("model"), spec(self.protocol).answer_usage(answer)
        into.error = _error({"error": answer.get("error")}) if answer.get("error") else None
        for item in answer.get("output") or ():
            self._item(item, into)
        into.finish = _status(answer)

    def event(self, kind: str | None, payload: dict, into: Assembled,
              calls: dict[Any, ToolCall]) -> None:
        if kind == "response.output_text.delta":
            into.text += payload.get("delta") or ""
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            into.reasoning += payload.get("delta") or ""
        elif kind == "response.refusal.delta":
            into.refusal += payload.get("delta") or ""
        elif kind == "response.output_item.done":
            item = payload.get("item") or {}
            if item.get("type") in ("function_call", "custom_tool_call"):
                calls[payload.get("output_index", len(calls))] = _tool_call(item)
        elif kind == "error":
            into.error = _error({"error": payload}) or _error(payload)
        elif isinstance(payload.get("response"), dict):  # created, …, completed, failed
            response = payload["response"]
            into.model = response.get("model") or into.model
            into.usage = spec(self.protocol).answer_usage(response) or into.usage
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                into.finish = _status(response)
                if response.get("error"):
                    into.error = _error({"error": response["error"]})

    def _item(self, item: Any, into: Assembled) -> None:
        if not isinstance(item, dict):
            return
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "refusal":
                    into.refusal += part.get("refusal") or ""
                else:
                    into.text += part.get("text") or ""
        elif kind == "reasoning":
            into.reasoning += text_of(item.get("summary"))
        elif kind in ("function_call", "custom_tool_call"):
            into.tool_calls.append(_tool_call(item))


def _tool_call(item: dict) -> ToolCall:
    payload = item.get("arguments") if item.get("type") == "function_call" else item.get("input")
    return ToolCall(str(item.get("name", "?")), _arguments(payload or ""),
                    str(item.get("call_id", "")))


def _status(response: dict) -> str | None:
    """A response's status, with why when incomplete."""
    status = response.get("status")
    details = response.get("incomplete_details")
    if status == "incomplete" and isinstance(details, dict) and details.get("reason"):
        return f"incomplete ({details['reason']})"
    return status if isinstance(status, str) else None


def _call_said(call: ToolCall) -> Said:
    return Said("tool call", f"{call.name}{f' [{call.call_id}]' if call.call_id else ''}\n"
                             f"{_pretty(call.arguments)}")


class MessagesReader(Reader):
    protocol = Protocol.MESSAGES

    def conversation(self, body: dict) -> list[Said]:
        system = body.get("system")
        said = [Said("system", text_of(system))] if system else []
        for message in body.get("messages") or ():
            if isinstance(message, dict):
                said += self._turn(str(message.get("role") or "?"), message.get("content"))
        return said

    def _turn(self, role: str, content: Any) -> list[Said]:
        if not isinstance(content, list):
            return [Said(role, text_of(content))]
        said: list[Said] = []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                said.append(Said(role, str(block.get("text") or "")))
            elif kind == "thinking":
                said.append(Said("reasoning", str(block.get("thinking") or "")))
            elif kind == "redacted_thinking":
                said.append(Said("reasoning", "(redacted)"))
            elif kind == "tool_use":
                said.append(_call_said(ToolCall(str(block.get("name", "?")),
                                                json.dumps(block.get("input")),
                                                str(block.get("id", "")))))
            elif kind == "tool_result":
                said.append(Said("tool result", f"[{block.get('tool_use_id', '')}] "
                                                f"{text_of(block.get('content'))}"))
            elif kind is not None:
                said.append(Said(role, f"[{kind}]"))
        return said

    def whole(self, answer: dict, into: Assembled) -> None:
        into.model, into.usage = answer.get("model"), spec(self.protocol).answer_usage(answer)
        for block in answer.get("content") or ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                into.text += str(block.get("text") or "")
            elif kind == "thinking":
                into.reasoning += str(block.get("thinking") or "")
            elif kind == "tool_use":
                into.tool_calls.append(ToolCall(str(block.get("name", "?")),
                                                json.dumps(block.get("input")),
                                                str(block.get("id", ""))))
        into.finish = answer.get("stop_reason")

    def event(self, kind: str | None, payload: dict, into: Assembled,
              calls: dict[Any, ToolCall]) -> None:
        into.error = _error(payload) or into.error
        into.usage = messages.reported_usage(payload, into.usage)
        if kind == "message_start" and isinstance(payload.get("message"), dict):
            into.model = payload["message"].get("model") or into.model
        block = payload.get("content_block")
        if kind == "content_block_start" and isinstance(block, dict) \
                and block.get("type") == "tool_use":
            calls[payload.get("index", 0)] = ToolCall(str(block.get("name", "?")), "",
                                                      str(block.get("id", "")))
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return
        if kind == "content_block_delta":
            into.text += str(delta.get("text") or "")
            into.reasoning += str(delta.get("thinking") or "")
            if isinstance(call := calls.get(payload.get("index", 0)), ToolCall):
                call.arguments += str(delta.get("partial_json") or "")
        elif kind == "message_delta":
            into.finish = delta.get("stop_reason") or into.finish


READERS: dict[Protocol, Reader] = {reader.protocol: reader
                                   for reader in (ChatReader(), ResponsesReader(),
                                                  MessagesReader())}


def protocol_of(path: str) -> Protocol | None:
    """The protocol an endpoint path speaks (`…/v1/chat/completions`), if any."""
    path = path.partition("?")[0].rstrip("/")
    return next((p for p, s in SPECS.items() if path.endswith(s.path) and p in READERS), None)


def is_stream(body: bytes) -> bool:
    """Server-sent events rather than one JSON document."""
    head = body.lstrip()[:16]
    return head.startswith((b"data:", b"event:", b":", b"id:"))


def assemble(protocol: Protocol, body: bytes) -> Assembled | None:
    """The answer in `body` — a stream or a whole JSON answer, an error
    envelope included; None when it is neither."""
    reader, into = READERS[protocol], Assembled()
    if not is_stream(body):
        answer = loads(body)
        if not isinstance(answer, dict):
            return None
        into.error = _error(answer)
        if into.error is None:
            reader.whole(answer, into)
        return into
    parser, calls = SseParser(), {}
    events = parser.feed(body)
    last = parser.close()
    for event in [*events, last] if last is not None else events:
        if event.data is None or is_done(event):
            continue
        payload = event.json()
        if isinstance(payload, dict):
            into.events += 1
            reader.event(event_type(event), payload, into, calls)
    into.tool_calls += [calls[k] for k in sorted(calls, key=str)]
    return into


def conversation(protocol: Protocol, body: bytes) -> tuple[dict, list[Said]] | None:
    """The request body and its turns; None when it is not a JSON object."""
    request = loads(body)
    if not isinstance(request, dict):
        return None
    return request, READERS[protocol].conversation(request)


# --- layout ------------------------------------------------------------------------------------


def _pretty(arguments: str) -> str:
    """Tool arguments as a person reads them: indented JSON when they are JSON."""
    value = loads(arguments) if arguments.strip()[:1] in ("{", "[") else None
    return json.dumps(value, indent=2, ensure_ascii=False) if value is not None else arguments


def section(title: str, text: str = "") -> list[str]:
    return [f"{RULE} {title} {RULE}", *(text.splitlines() or ([""] if text else []))]


def strip_lines(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Label/value lines, labels aligned (a value's further lines too);
    empty values left out."""
    shown = [(k, v) for k, v in pairs if v]
    width = max((len(k) for k, _ in shown), default=0)
    return [line for k, v in shown
            for line in f"{k.ljust(width)}  {v}".replace("\n", "\n" + " " * (width + 2))
            .split("\n")]


def render_request(protocol: Protocol, body: bytes) -> list[str] | None:
    """A request as a conversation, each turn labelled, then what it asks for."""
    read = conversation(protocol, body)
    if read is None:
        return None
    request, said = read
    lines = strip_lines([("model", str(request.get("model") or "")),
                         ("protocol", str(protocol)),
                         ("stream", "yes" if request.get("stream") else "")])
    for turn in said:
        lines += ["", *section(turn.who, turn.text)]
    tools = [str(t.get("name") or (t.get("function") or {}).get("name") or t.get("type"))
             for t in request.get("tools") or () if isinstance(t, dict)]
    if tools:
        lines += ["", *section("tools offered", ", ".join(tools))]
    return lines


def render_answer(answer: Assembled) -> list[str]:
    """An assembled answer: text, reasoning, refusal, tool calls, how it ended."""
    where = f"assembled from {answer.events} stream events" if answer.events else "whole"
    lines = strip_lines([("model", answer.model or ""),
                         ("usage", answer.usage.text() if answer.usage else "")])
    if answer.error:
        lines += ["", *section("error", answer.error)]
    if answer.reasoning:
        lines += ["", *section("reasoning", answer.reasoning)]
    if answer.text or not (answer.error or answer.tool_calls or answer.refusal):
        lines += ["", *section(f"answer ({where})", answer.text)]
    if answer.refusal:
        lines += ["", *section("refusal", answer.refusal)]
    for call in answer.tool_calls:
        lines += ["", *section("tool call", _call_said(call).text)]
    if answer.finish:
        lines += ["", *section("finish", answer.finish)]
    return lines[1:] if lines and not lines[0] else lines
