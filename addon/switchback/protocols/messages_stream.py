"""Streams translated event by event between the Messages API and OpenAI's.

Two translators of their own — Messages events → chat chunks, chat chunks →
Messages events — and two compositions through the chat ⇄ Responses
translators, which lose nothing on the way (see `messages_response`):
Messages → chat → Responses, and Responses → chat → Messages.

A Messages client gets Anthropic's own order: `message_start`, then each
block as `content_block_start`, its deltas, `content_block_stop`, then
`message_delta` (stop reason, usage) and `message_stop`. One block is open
at a time, so of parallel tool calls the first streams and the others are
held until it ends (a chat provider may interleave their arguments). A
break before the finish ends the stream with `event: error`, the form
Claude Code retries on — never with a finish the provider did not send.
Upstream keep-alives pass through as comments; a Messages `ping` becomes one
for an OpenAI client. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .kinds import DONE, event_type, is_done
from .messages_errors import messages_error, messages_to_openai_error, openai_to_messages_error
from .messages_response import (THINKING_JOIN, block_dropped, chat_id_of, item_dropped,
                                message_id_of, thinking_block)
from .messages_terms import finish_of_stop, stop_of_finish, usage_to_chat, usage_to_messages
from .shapers import BROKEN, StreamShaper, chat_error
from .sse import Event, SseParser, encode
from .tool_ids import to_messages_id, to_openai_id
from .translate_response import reasoning_of
from .translate_stream import ChatToResponsesStream, ResponsesToChatStream, call_key

PING = b": ping\n\n"  # a Messages ping, for a client of another protocol
_NO_CHAT_FORM = {"signature_delta": "thinking signature", "citations_delta": "citations"}


# ------------------------------------------------------- Messages → chat


class MessagesToChatStream:
    """Upstream Messages events → chat.completion.chunk frames for the client."""

    final = None  # a chat client keeps no conversation here

    def __init__(self, request: dict, *, created: int = 0) -> None:
        self.complete = False
        options = request.get("stream_options")
        self._usage_wanted = isinstance(options, dict) and options.get("include_usage") is True
        self._id, self._created = chat_id_of("msg_switchback"), created
        self._model = request.get("model", "")
        self._started = self._finished = False
        self._tools: dict[int, tuple[int, bool]] = {}  # block index → (tool index, streamed)
        self._usage: dict = {}  # Messages usage: message_start's, then message_delta's
        self._thought = False  # a thinking block came
        self._dropped: list[str] = []

    @property
    def dropped(self) -> tuple[str, ...]:
        """What of the upstream answer the client never saw, for the trail."""
        return tuple(dict.fromkeys(self._dropped))

    def feed(self, event: Event) -> bytes:
        if self.complete:
            return b""
        if event.comment:
            return event.raw
        payload = event.json()
        if not isinstance(payload, dict):
            return b""
        kind = event_type(event)
        if kind == "ping":
            return PING
        if kind == "error":
            self.complete = True
            error = messages_to_openai_error(payload)["error"]
            return chat_error(error["message"], error["code"] or error["type"])
        handle = self._HANDLERS.get(kind or "")
        return handle(self, payload) if handle else b""

    def finish(self) -> bytes:
        return self.fail("upstream stream ended before message_stop")

    def fail(self, message: str) -> bytes:
        """After the provider's finish only the usage and `[DONE]` are missing."""
        if self.complete:
            return b""
        return self._end() if self._finished else self._error(message)

    # chunks

    def _chunk(self, choices: list[dict], **extra: Any) -> bytes:
        return encode({"id": self._id, "object": "chat.completion.chunk",
                       "created": self._created, "model": self._model,
                       "choices": choices, **extra})

    def _delta(self, delta: dict, finish: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}])

    def _open(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._delta({"role": "assistant", "content": ""})

    # events

    def _on_start(self, payload: dict) -> bytes:
        message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
        if not self._started:
            self._id = chat_id_of(str(message.get("id") or "msg_switchback"))
            self._model = message.get("model") or self._model
        if isinstance(message.get("usage"), dict):
            self._usage.update(message["usage"])
        return self._open()

    def _on_block_start(self, payload: dict) -> bytes:
        block = payload.get("content_block") if isinstance(payload.get("content_block"),
                                                           dict) else {}
        out = self._open()
        kind = block.get("type")
        self._dropped += block_dropped(block)
        if kind == "text" and block.get("text"):
            out += self._delta({"content": block["text"]})
        elif kind == "thinking":
            if self._thought:  # thinking blocks read apart, as a whole answer joins them
                out += self._delta({"reasoning_content": THINKING_JOIN})
            self._thought = True
            if block.get("thinking"):
                out += self._delta({"reasoning_content": block["thinking"]})
        elif kind == "tool_use":
            tool = len(self._tools)
            self._tools[payload.get("index", -1)] = (tool, False)
            out += self._delta({"tool_calls": [{
                "index": tool, "id": to_openai_id(str(block.get("id", ""))), "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""}}]})
        return out

    def _on_block_delta(self, payload: dict) -> bytes:
        delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
        kind = delta.get("type")
        out = self._open()
        if kind == "text_delta" and delta.get("text"):
            return out + self._delta({"content": delta["text"]})
        if kind == "thinking_delta" and delta.get("thinking"):
            return out + self._delta({"reasoning_content": delta["thinking"]})
        if kind == "input_json_delta" and delta.get("partial_json"):
            return out + self._arguments(payload.get("index", -1), delta["partial_json"])
        if kind in _NO_CHAT_FORM:
            self._dropped.append(_NO_CHAT_FORM[kind])
        return out

    def _arguments(self, block: int, text: str) -> bytes:
        if block not in self._tools:
            return b""
        tool, _ = self._tools[block]
        self._tools[block] = (tool, True)
        return self._delta({"tool_calls": [{"index": tool, "function": {"arguments": text}}]})

    def _on_block_stop(self, payload: dict) -> bytes:
        """A tool call with no input deltas still gets its arguments: `{}`."""
        block = payload.get("index", -1)
        if block in self._tools and not self._tools[block][1]:
            return self._arguments(block, "{}")
        return b""

    def _on_message_delta(self, payload: dict) -> bytes:
        delta = payload.get("delta") if isinstance(payload.get("delta"), dict) else {}
        if isinstance(payload.get("usage"), dict):
            self._usage.update({k: v for k, v in payload["usage"].items() if v is not None})
        if self._finished or not delta.get("stop_reason"):
            return b""
        self._finished = True
        finish = finish_of_stop(delta["stop_reason"], bool(self._tools))
        return self._open() + self._delta({}, finish)

    def _on_message_stop(self, payload: dict) -> bytes:
        if not self._finished:
            return self._error("upstream stream stopped without a stop reason")
        return self._end()

    def _end(self) -> bytes:
        self.complete = True
        usage = usage_to_chat(self._usage) if self._usage else None
        out = self._chunk([], usage=usage) if self._usage_wanted and usage else b""
        return out + encode(DONE)

    def _error(self, message: str, code: str = BROKEN) -> bytes:
        self.complete = True
        return chat_error(message, code)

    _HANDLERS = {"message_start": _on_start, "content_block_start": _on_block_start,
                 "content_block_delta": _on_block_delta, "content_block_stop": _on_block_stop,
                 "message_delta": _on_message_delta, "message_stop": _on_message_stop}


# ------------------------------------------------------- chat → Messages


@dataclass
class _Call:
    """A tool call gathered from chat fragments sharing an `index`."""

    id: str = ""
    name: str = ""
    arguments: str = ""
    block: int | None = None  # its Messages block index, once opened


@dataclass
class _Open:
    kind: str  # "text" | "thinking" | "tool_use"
    index: int
    call: _Call | None = None


@dataclass
class _Answer:
    """What the stream has said so far."""

    calls: dict[int, _Call] = field(default_factory=dict)
    finish: str | None = None
    refused: bool = False
    usage: dict | None = None


class ChatToMessagesStream:
    """Upstream chat/completions chunks → Messages events for the client."""

    final = None  # a Messages client keeps its own conversation
    dropped: tuple[str, ...] = ()  # a chat answer's first choice carries over whole

    def __init__(self, request: dict) -> None:
        self.complete = False
        self._model = request.get("model", "")
        self._id = message_id_of("chatcmpl-switchback")
        self._started = False
        self._blocks = 0  # Messages blocks opened so far
        self._open: _Open | None = None
        self._answer = _Answer()

    def feed(self, event: Event) -> bytes:
        if self.complete:
            return b""
        if event.comment:
            return event.raw
        if is_done(event):
            return self.finish()
        payload = event.json()
        if not isinstance(payload, dict):
            return b""
        if payload.get("error") is not None:
            self.complete = True
            return self._event("error", openai_to_messages_error(payload))
        out = self._start(payload)
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        if payload.get("usage"):
            self._answer.usage = payload["usage"]
        if self._answer.finish and self._answer.usage:
            out += self._finalize()
        return out

    def finish(self) -> bytes:
        return self.fail("upstream stream ended without a finish_reason")

    def fail(self, message: str) -> bytes:
        """Once the provider's finish came the answer is whole (its usage
        may be missing); before, the stream ends in an error event."""
        if self.complete:
            return b""
        if self._answer.finish:
            return self._finalize()
        self.complete = True
        return self._event("error", messages_error(message))

    # events

    def _event(self, kind: str, payload: dict) -> bytes:
        return encode(payload, kind)

    def _start(self, chunk: dict) -> bytes:
        """`message_start`; chat tells the input tokens only at the end, so
        they come with `message_delta`."""
        if self._started:
            return b""
        self._started = True
        self._id = message_id_of(str(chunk.get("id") or "chatcmpl-switchback"))
        self._model = chunk.get("model") or self._model
        message = {"id": self._id, "type": "message", "role": "assistant", "model": self._model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return self._event("message_start", {"type": "message_start", "message": message})

    def _block_start(self, kind: str, block: dict, call: _Call | None = None) -> bytes:
        out = self._close()
        self._open = _Open(kind, self._blocks, call)
        self._blocks += 1
        return out + self._event("content_block_start", {
            "type": "content_block_start", "index": self._open.index, "content_block": block})

    def _block_delta(self, delta: dict) -> bytes:
        assert self._open is not None
        return self._event("content_block_delta", {"type": "content_block_delta",
                                                   "index": self._open.index, "delta": delta})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open.index, None
        return self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    # chunks

    def _choice(self, choice: dict) -> bytes:
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        out = b""
        if reasoning := reasoning_of(delta):
            out += self._text("thinking", reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            out += self._text("text", delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self._answer.refused = True
            out += self._text("text", delta["refusal"])
        fragments = delta.get("tool_calls")
        for fragment in fragments if isinstance(fragments, list) else []:
            if isinstance(fragment, dict):
                out += self._fragment(fragment)
        if choice.get("finish_reason"):
            self._answer.finish = choice["finish_reason"]
        return out

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._open.kind != kind:
            block = thinking_block("") if kind == "thinking" else {"type": "text", "text": ""}
            out += self._block_start(kind, block)
        field_name = "thinking" if kind == "thinking" else "text"
        return out + self._block_delta({"type": f"{field_name}_delta", field_name: text})

    def _fragment(self, fragment: dict) -> bytes:
        call = self._answer.calls.setdefault(call_key(self._answer.calls, fragment), _Call())
        function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
        call.id = call.id or str(fragment.get("id") or "")
        call.name = call.name or str(function.get("name") or "")
        text = function.get("arguments") if isinstance(function.get("arguments"), str) else ""
        call.arguments += text
        if self._open is not None and self._open.call is call:
            return self._block_delta({"type": "input_json_delta", "partial_json": text}) \
                if text else b""
        if call.block is None and call.id and call.name and (
                self._open is None or self._open.call is None):
            return self._open_call(call)
        return b""  # held: another call is streaming, or its id and name are not known yet

    def _open_call(self, call: _Call) -> bytes:
        call.block = self._blocks
        out = self._block_start("tool_use", {"type": "tool_use", "id": to_messages_id(call.id),
                                             "name": call.name, "input": {}}, call)
        if call.arguments:
            out += self._block_delta({"type": "input_json_delta",
                                      "partial_json": call.arguments})
        return out

    def _finalize(self) -> bytes:
        out = self._close()
        for key in sorted(self._answer.calls):
            call = self._answer.calls[key]
            if call.block is None and call.name:
                call.id = call.id or f"{self._id}_{key}"  # the provider gave it none
                out += self._open_call(call) + self._close()
        answer = self._answer
        has_calls = any(c.block is not None for c in answer.calls.values())
        stop = "refusal" if answer.refused and not has_calls else \
            stop_of_finish(answer.finish, has_calls)
        self.complete = True
        return out + self._event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": usage_to_messages(answer.usage)}) + self._event(
            "message_stop", {"type": "message_stop"})


# ------------------------------------------------------- compositions


class _Chained:
    """Two shapers in a row: the first's client bytes are the second's upstream."""

    def __init__(self, first: StreamShaper, second: StreamShaper,
                 watch: Callable[[Event], list[str]] | None = None) -> None:
        self._first, self._second, self._watch = first, second, watch
        self._parser = SseParser()
        self._dropped: list[str] = []

    @property
    def dropped(self) -> tuple[str, ...]:
        """What of the upstream answer the client never saw, for the trail."""
        return tuple(dict.fromkeys([*getattr(self._first, "dropped", ()), *self._dropped]))

    @property
    def complete(self) -> bool:
        return self._second.complete

    @property
    def final(self) -> dict | None:
        return self._second.final

    def _relay(self, data: bytes) -> bytes:
        return b"".join(self._second.feed(event) for event in self._parser.feed(data))

    def feed(self, event: Event) -> bytes:
        if self._watch is not None:
            self._dropped += self._watch(event)
        return self._relay(self._first.feed(event))

    def finish(self) -> bytes:
        return self._relay(self._first.finish()) + self._second.finish()

    def fail(self, message: str) -> bytes:
        return self._relay(self._first.fail(message)) + self._second.fail(message)


_WITH_USAGE = {"stream_options": {"include_usage": True}}  # the middle leg always carries usage


def messages_to_responses_stream(request: dict, response_id: str, *,
                                 created: int = 0) -> StreamShaper:
    """Upstream Messages events → Responses events for a Responses client."""
    middle = {"model": request.get("model", ""), **_WITH_USAGE}
    return _Chained(MessagesToChatStream(middle, created=created),
                    ChatToResponsesStream(request, response_id))


def _finished_item_dropped(event: Event) -> list[str]:
    """What a finished Responses output item carries that Messages has no form for."""
    if b"response.output_item.done" not in event.raw:
        return []
    payload = event.json()
    item = payload.get("item") if isinstance(payload, dict) else None
    return item_dropped(item) if isinstance(item, dict) else []


def responses_to_messages_stream(request: dict) -> StreamShaper:
    """Upstream Responses events → Messages events for a Messages client."""
    return _Chained(ResponsesToChatStream({"model": request.get("model", ""), **_WITH_USAGE}),
                    ChatToMessagesStream(request), _finished_item_dropped)
