"""Streams translated event by event between the protocols.

Each translator is a `StreamShaper`: every upstream event yields at once the
client bytes it allows, so the client sees tokens as the provider sends them.
The only things held back are tool-call argument fragments that arrive before
the call's id and name, and a custom tool's input, which arrives wrapped in
JSON arguments and can only be unwrapped whole. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .sse import Event, encode
from .kinds import (DONE, RESPONSES_END, RESPONSES_ERROR, RESPONSES_PREAMBLE, event_type,
                    is_done)
from .shapers import BROKEN, StreamShaper, chat_error
from .translate_request import custom_input
from .translate_response import (
    assistant_message,
    call_item,
    chat_id,
    custom_tool_names,
    finish_reason,
    item_id,
    message_item,
    output_text_part,
    reasoning_item,
    reasoning_of,
    refusal_part,
    response_object,
    response_status,
    summary_part,
    usage_to_chat,
    usage_to_responses,
)

# ------------------------------------------------------- Chat → Responses


@dataclass(frozen=True)
class _PartKind:
    """How one kind of text part is opened, streamed and closed."""

    added: str
    delta: str
    done: str
    part_done: str
    index_key: str  # content_index, or summary_index for reasoning
    done_key: str  # the field of the `done` event holding the full text
    make: Callable[[str], dict]
    extra: tuple[tuple[str, Any], ...] = ()  # constant fields of delta/done events


_PARTS = {
    "output_text": _PartKind(
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "content_index", "text", output_text_part, (("logprobs", ()),)),
    "refusal": _PartKind(
        "response.content_part.added", "response.refusal.delta",
        "response.refusal.done", "response.content_part.done",
        "content_index", "refusal", refusal_part),
    "summary_text": _PartKind(
        "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "summary_index", "text", summary_part),
}


@dataclass
class _Part:
    kind: str
    text: str = ""


@dataclass
class _TextItem:
    """The open message or reasoning item."""

    kind: str  # "message" | "reasoning"
    id: str
    index: int
    parts: list[_Part] = field(default_factory=list)


@dataclass
class _Call:
    """One tool call, assembled from fragments sharing a chat `index`."""

    id: str = ""
    name: str = ""
    arguments: str = ""
    item_id: str = ""
    index: int | None = None  # output_index, once announced
    custom: bool = False


def call_key(calls: Mapping[int, Any], fragment: dict) -> int:
    """The chat index of a tool-call fragment among the `calls` (each with an
    `id`) gathered so far; providers that omit it send one call per id, so a
    new id starts a new call and no id continues the last."""
    if isinstance(fragment.get("index"), int):
        return fragment["index"]
    known = next((k for k, c in calls.items() if c.id == fragment.get("id")), None)
    if known is not None:
        return known
    return len(calls) if fragment.get("id") or not calls else max(calls)


class ChatToResponsesStream:
    """Upstream chat/completions chunks → Responses events for the client."""

    def __init__(self, request: dict, response_id: str) -> None:
        self.complete = False
        self._request, self._id = request, response_id
        self._custom_names = custom_tool_names(request)
        self._model, self._created = request.get("model", ""), 0
        self._started = self._failed = False
        self._sequence = 0
        self._ids: dict[str, int] = {}  # next number per id prefix
        self._output: list[dict] = []  # latest state of each item, by output_index
        self._text: _TextItem | None = None
        self._calls: dict[int, _Call] = {}  # by chat tool-call index
        self._finish: str | None = None
        self._usage: dict | None = None
        self._final: dict | None = None

    # StreamShaper

    def feed(self, event: Event) -> bytes:
        if self.complete:
            return b""
        if event.comment:  # keepalives keep the client's idle timers quiet in any protocol
            return event.raw
        if is_done(event):
            return self.finish()
        payload = event.json()
        if not isinstance(payload, dict):
            return b""
        if payload.get("error") is not None:
            return self._upstream_error(payload["error"])
        out = self._start(payload)
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        if payload.get("usage"):
            self._usage = payload["usage"]
        if self._finish and self._usage:
            out += self._finalize()
        return out

    def finish(self) -> bytes:
        return self.fail("upstream stream ended without a finish_reason")

    def fail(self, message: str) -> bytes:
        """A chat answer is whole at its finish_reason: once that came, the
        response completes (without the usage that did not); before, it fails."""
        if self.complete:
            return b""
        return self._finalize() if self._finish else self._failure(message, "server_error")

    @property
    def final(self) -> dict | None:
        """The response object as completed, for the conversation record."""
        return self._final

    # events

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return encode(payload, kind)

    def _response(self, status: str, **extra: Any) -> dict:
        return response_object(self._request, self._id, model=self._model,
                               created_at=self._created, status=status,
                               output=list(self._output), **extra)

    def _start(self, chunk: dict | None = None) -> bytes:
        if self._started:
            return b""
        self._started = True
        if chunk:
            self._model = chunk.get("model") or self._model
            self._created = chunk.get("created") or 0
        response = self._response("in_progress")
        return (self._event("response.created", response=response)
                + self._event("response.in_progress", response=response))

    def _next_id(self, prefix: str) -> str:
        n = self._ids.get(prefix, 0)
        self._ids[prefix] = n + 1
        return item_id(prefix, self._id, n)

    def _added(self, item: dict) -> bytes:
        self._output.append(item)
        return self._event("response.output_item.added", output_index=len(self._output) - 1,
                           item=item)

    def _done(self, index: int, item: dict) -> bytes:
        self._output[index] = item
        return self._event("response.output_item.done", output_index=index, item=item)

    # chunks

    def _choice(self, choice: dict) -> bytes:
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        out = b""
        if reasoning := reasoning_of(delta):
            out += self._text_delta("summary_text", reasoning)
        for kind, key in (("output_text", "content"), ("refusal", "refusal")):
            if isinstance(delta.get(key), str) and delta[key]:
                out += self._text_delta(kind, delta[key])
        fragments = delta.get("tool_calls")
        for fragment in fragments if isinstance(fragments, list) else []:
            if isinstance(fragment, dict):
                out += self._call_fragment(fragment)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        return out

    # text and reasoning

    def _text_delta(self, part_kind: str, delta: str) -> bytes:
        item_kind = "reasoning" if part_kind == "summary_text" else "message"
        out = b""
        if self._text and self._text.kind != item_kind:
            out += self._close_text()
        if self._text is None:
            out += self._open_text(item_kind)
        item = self._text
        assert item is not None
        if not item.parts or item.parts[-1].kind != part_kind:
            if item.parts:
                out += self._close_part(item)
            out += self._open_part(item, part_kind)
        item.parts[-1].text += delta
        spec = _PARTS[part_kind]
        return out + self._event(spec.delta, **self._part_ids(item), delta=delta,
                                 **dict(spec.extra))

    def _open_text(self, kind: str) -> bytes:
        if kind == "reasoning":
            rid = self._next_id("rs")
            item = reasoning_item(rid, [])
        else:
            rid = self._next_id("msg")
            item = message_item(rid, [], "in_progress")
        self._text = _TextItem(kind, rid, len(self._output))
        return self._added(item)

    def _part_ids(self, item: _TextItem) -> dict:
        spec = _PARTS[item.parts[-1].kind]
        return {"item_id": item.id, "output_index": item.index,
                spec.index_key: len(item.parts) - 1}

    def _open_part(self, item: _TextItem, kind: str) -> bytes:
        item.parts.append(_Part(kind))
        return self._event(_PARTS[kind].added, **self._part_ids(item), part=_PARTS[kind].make(""))

    def _close_part(self, item: _TextItem) -> bytes:
        part, ids = item.parts[-1], self._part_ids(item)
        spec = _PARTS[part.kind]
        return (self._event(spec.done, **ids, **{spec.done_key: part.text}, **dict(spec.extra))
                + self._event(spec.part_done, **ids, part=spec.make(part.text)))

    def _close_text(self, status: str = "completed") -> bytes:
        item, self._text = self._text, None
        assert item is not None
        out = self._close_part(item) if item.parts else b""
        if item.kind == "reasoning":
            final = reasoning_item(item.id, [p.text for p in item.parts])
        else:
            final = message_item(item.id, [_PARTS[p.kind].make(p.text) for p in item.parts],
                                 status)
        return out + self._done(item.index, final)

    # tool calls

    def _call_fragment(self, fragment: dict) -> bytes:
        call = self._calls.setdefault(call_key(self._calls, fragment), _Call())
        function = fragment.get("function") or {}
        call.id = call.id or fragment.get("id") or ""
        call.name = call.name or function.get("name") or ""
        arguments = function.get("arguments") or ""
        call.arguments += arguments
        if call.index is None:
            return self._open_call(call) if call.id and call.name else b""
        return self._arguments_delta(call, arguments)

    def _arguments_delta(self, call: _Call, text: str) -> bytes:
        """Function arguments stream through; a custom tool's wrapped input
        waits for the end, where it can be unwrapped."""
        if not text or call.custom:
            return b""
        return self._event("response.function_call_arguments.delta", item_id=call.item_id,
                           output_index=call.index, delta=text)

    def _open_call(self, call: _Call) -> bytes:
        out = self._close_text() if self._text else b""
        call.custom = call.name in self._custom_names
        call.item_id, call.index = self._next_id("fc"), len(self._output)
        out += self._added(call_item(call.item_id, call.id, call.name, "", call.custom,
                                     "in_progress"))
        return out + self._arguments_delta(call, call.arguments)  # held until id and name

    def _close_call(self, key: int, call: _Call) -> bytes:
        out = b""
        if call.index is None:  # the provider never sent an id
            if not call.name:
                return b""
            call.id = call.id or item_id("call", self._id, key)
            out += self._open_call(call)
        ids = {"item_id": call.item_id, "output_index": call.index}
        if call.custom:
            payload = custom_input(call.arguments)
            out += (self._event("response.custom_tool_call_input.delta", **ids, delta=payload)
                    + self._event("response.custom_tool_call_input.done", **ids, input=payload))
        else:
            payload = call.arguments
            out += self._event("response.function_call_arguments.done", **ids, name=call.name,
                               arguments=payload)
        return out + self._done(call.index or 0, call_item(call.item_id, call.id, call.name,
                                                           payload, call.custom))

    # endings

    def _finalize(self) -> bytes:
        status, incomplete = response_status(self._finish)
        out = self._close_text(status) if self._text else b""
        order = sorted(self._calls.items(),
                       key=lambda kv: (kv[1].index is None, kv[1].index or 0, kv[0]))
        for key, call in order:
            out += self._close_call(key, call)
        self.complete = True
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._final = self._response(status, usage=usage_to_responses(self._usage),
                                     incomplete_details=incomplete)
        return out + self._event(kind, response=self._final)

    def _upstream_error(self, error: Any) -> bytes:
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "upstream error")
            code = str(error.get("code") or "server_error")
        else:
            message, code = str(error), "server_error"
        out = self._start()
        out += self._event("error", code=code, message=message, param=None)
        return out + self._failure(message, code)

    def _failure(self, message: str, code: str) -> bytes:
        out = self._start()
        self.complete = self._failed = True
        return out + self._event("response.failed", response=self._response(
            "failed", usage=usage_to_responses(self._usage),
            error={"code": code, "message": message}))


# ------------------------------------------------------- Responses → Chat

# Responses text deltas → the chat delta field they feed.
_DELTA_FIELDS = {
    "response.output_text.delta": "content",
    "response.refusal.delta": "refusal",
    "response.reasoning_summary_text.delta": "reasoning_content",
    "response.reasoning_text.delta": "reasoning_content",
}
_ARGUMENT_DELTAS = {"response.function_call_arguments.delta",
                    "response.custom_tool_call_input.delta"}
_CALL_PAYLOAD = {"function_call": "arguments", "custom_tool_call": "input"}


@dataclass
class _Slot:
    """A tool call's place in the chat stream."""

    index: int
    streamed: bool = False  # argument deltas were sent


class ResponsesToChatStream:
    """Upstream Responses events → chat.completion.chunk frames for the client."""

    final = None  # a chat client keeps no conversation here

    def __init__(self, request: dict) -> None:
        self.complete = False
        self._usage_wanted = bool((request.get("stream_options") or {}).get("include_usage"))
        self._id, self._created = chat_id("switchback"), 0
        self._model = request.get("model", "")
        self._started = False
        self._slots: dict[int, _Slot] = {}  # by output_index
        self._streamed: set[int] = set()  # output indexes whose text came as deltas

    # StreamShaper

    def feed(self, event: Event) -> bytes:
        if self.complete:
            return b""
        if event.comment:
            return event.raw
        payload = event.json()
        if not isinstance(payload, dict):
            return b""
        kind = event_type(event)
        if kind in RESPONSES_ERROR:
            # `error` events carry message/code; response.failed nests them.
            response = payload.get("response")
            error = (response.get("error") if isinstance(response, dict) else None) or payload
            if not isinstance(error, dict):
                error = {"message": str(error)}
            return self._error(str(error.get("message") or "upstream stream failed"),
                               str(error.get("code") or "upstream_error"))
        if kind in RESPONSES_PREAMBLE:
            return self._on_start(payload.get("response") or {})
        if kind in _DELTA_FIELDS:
            return self._on_text(_DELTA_FIELDS[kind], payload)
        if kind == "response.reasoning_summary_part.added" and payload.get("summary_index"):
            return self._delta({"reasoning_content": "\n\n"})
        if kind in _ARGUMENT_DELTAS:
            return self._on_arguments(payload)
        if kind == "response.output_item.added":
            return self._on_item_added(payload)
        if kind == "response.output_item.done":
            return self._on_item_done(payload)
        if kind in RESPONSES_END:
            return self._on_end(payload.get("response") or {})
        return b""

    def finish(self) -> bytes:
        return b"" if self.complete else self.fail(
            "upstream stream ended before response.completed")

    def fail(self, message: str) -> bytes:
        return b"" if self.complete else self._error(message, BROKEN)

    # chunks

    def _chunk(self, choices: list[dict], **extra: Any) -> bytes:
        return encode({"id": self._id, "object": "chat.completion.chunk",
                       "created": self._created, "model": self._model,
                       "choices": choices, **extra})

    def _open(self) -> bytes:
        """The role chunk every chat stream starts with."""
        if self._started:
            return b""
        self._started = True
        return self._delta({"role": "assistant", "content": ""})

    def _delta(self, delta: dict, finish: str | None = None) -> bytes:
        return self._open() + self._chunk(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    # events

    def _on_start(self, response: dict) -> bytes:
        if not self._started:
            self._id = chat_id(response.get("id") or "switchback")
            self._created = int(response.get("created_at") or 0)
            self._model = response.get("model") or self._model
        return self._open()

    def _on_text(self, field_name: str, payload: dict) -> bytes:
        self._streamed.add(payload.get("output_index", -1))
        delta = payload.get("delta") or ""
        return self._delta({field_name: delta}) if delta else b""

    def _tool_header(self, output_index: int, item: dict) -> bytes:
        slot = self._slots[output_index] = _Slot(len(self._slots))
        return self._delta({"tool_calls": [{
            "index": slot.index, "id": item.get("call_id", ""), "type": "function",
            "function": {"name": item.get("name", ""), "arguments": ""}}]})

    def _arguments(self, slot: _Slot, text: str) -> bytes:
        slot.streamed = True
        return self._delta({"tool_calls": [{"index": slot.index,
                                            "function": {"arguments": text}}]})

    def _on_item_added(self, payload: dict) -> bytes:
        item = payload.get("item") or {}
        if item.get("type") not in _CALL_PAYLOAD:
            return b""
        return self._tool_header(payload.get("output_index", -1), item)

    def _on_arguments(self, payload: dict) -> bytes:
        slot = self._slots.get(payload.get("output_index", -1))
        delta = payload.get("delta") or ""
        return self._arguments(slot, delta) if slot and delta else b""

    def _on_item_done(self, payload: dict) -> bytes:
        """Sends whatever of the item did not arrive as deltas."""
        item, index = payload.get("item") or {}, payload.get("output_index", -1)
        key = _CALL_PAYLOAD.get(item.get("type", ""))
        if key:
            out = b"" if index in self._slots else self._tool_header(index, item)
            slot = self._slots[index]
            if not slot.streamed and item.get(key):
                out += self._arguments(slot, item[key])
            return out
        if index in self._streamed:
            return b""
        message = assistant_message([item])
        delta = {k: message[k] for k in ("reasoning_content", "content", "refusal")
                 if message.get(k)}
        return self._delta(delta) if delta else b""

    def _on_end(self, response: dict) -> bytes:
        out = self._delta({}, finish_reason(response, bool(self._slots)))
        usage = usage_to_chat(response.get("usage"))
        if self._usage_wanted and usage:
            out += self._chunk([], usage=usage)
        self.complete = True
        return out + encode(DONE)

    def _error(self, message: str, code: str) -> bytes:
        self.complete = True
        return chat_error(message, code)
