"""What a committed stream looks like to the client, event by event.

Every stream the relay delivers goes through a `StreamShaper`: it turns each
upstream event into the bytes the client receives, and knows how to end the
stream properly when the upstream breaks after commit. The pass-through
shapers here forward events untouched; the protocol translators implement the
same interface. `gate_class` is the first-chunk gate's reading of one upstream
event. Both are pure.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from .sse import Event, encode

CHAT = "chat"
RESPONSES = "responses"


class StreamShaper(Protocol):
    """Shapes one upstream stream for the client; one instance per stream."""

    @property
    def complete(self) -> bool:
        """True once the upstream sent its terminal event."""

    def feed(self, event: Event) -> bytes:
        """Bytes for the client for one upstream event (may be empty)."""

    def finish(self) -> bytes:
        """Closing bytes when the upstream ended; a stream that ended without
        its terminal event is closed as failed."""

    def fail(self, message: str) -> bytes:
        """Closing bytes when the upstream broke after commit."""


class GateClass(enum.Enum):
    PREAMBLE = "preamble"  # says nothing about success yet: keep holding
    CONTENT = "content"  # the answer has started: commit
    ERROR = "error"  # the answer failed: try the next candidate
    END = "end"  # terminal event: commit what is held


_RESPONSES_PREAMBLE = {"response.created", "response.in_progress", "response.queued"}
_RESPONSES_END = {"response.completed", "response.incomplete"}
_RESPONSES_ERROR = {"error", "response.failed"}


def event_type(event: Event, payload: Any) -> str | None:
    """A Responses event's type: the `type` field, else the SSE event name."""
    if isinstance(payload, dict) and isinstance(payload.get("type"), str):
        return payload["type"]
    return event.name


def gate_class(protocol: str, event: Event) -> GateClass:
    """Read one upstream event for the first-chunk gate."""
    payload = event.json()
    if event.name == "error":
        return GateClass.ERROR
    if protocol == CHAT:
        if isinstance(payload, dict) and payload.get("error") is not None:
            return GateClass.ERROR
        if event.data.strip() == "[DONE]":
            return GateClass.END
        choices = payload.get("choices") if isinstance(payload, dict) else None
        for choice in choices if isinstance(choices, list) else []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if choice.get("finish_reason") or any(
                delta.get(k) for k in ("content", "tool_calls", "refusal",
                                       "reasoning_content", "reasoning", "function_call")
            ):
                return GateClass.CONTENT
        return GateClass.PREAMBLE
    kind = event_type(event, payload)
    if kind in _RESPONSES_ERROR:
        return GateClass.ERROR
    if kind in _RESPONSES_END:
        return GateClass.END
    if kind in _RESPONSES_PREAMBLE or kind is None:
        return GateClass.PREAMBLE
    return GateClass.CONTENT


class ChatPassthrough:
    """A chat/completions stream forwarded as is; a break ends it with an
    error chunk and `data: [DONE]` so SDKs stop cleanly."""

    def __init__(self) -> None:
        self.complete = False
        self._finished = False

    def feed(self, event: Event) -> bytes:
        if event.data.strip() == "[DONE]":
            self.complete = True
        else:
            payload = event.json()
            choices = payload.get("choices") if isinstance(payload, dict) else None
            if isinstance(choices, list):
                self._finished |= any(isinstance(c, dict) and c.get("finish_reason")
                                      for c in choices)
        return event.raw

    def finish(self) -> bytes:
        if self.complete or self._finished:
            return b""
        return self.fail("upstream stream ended before the answer was complete")

    def fail(self, message: str) -> bytes:
        self.complete = True
        error = {"error": {"message": message, "type": "server_error",
                           "code": "switchback_stream_broken"}}
        return encode(error) + encode("[DONE]")


class ResponsesPassthrough:
    """A Responses stream forwarded as is; a break ends it with
    `response.failed` carrying the same response id and the next
    sequence number."""

    def __init__(self) -> None:
        self.complete = False
        self._sequence = -1
        self._response: dict[str, Any] = {}

    def feed(self, event: Event) -> bytes:
        payload = event.json()
        if isinstance(payload, dict):
            if isinstance(payload.get("sequence_number"), int):
                self._sequence = payload["sequence_number"]
            if isinstance(payload.get("response"), dict):
                self._response = payload["response"]
            kind = event_type(event, payload)
            if kind in _RESPONSES_END or kind in _RESPONSES_ERROR:
                self.complete = True
        return event.raw

    def finish(self) -> bytes:
        if self.complete:
            return b""
        return self.fail("upstream stream ended before response.completed")

    def fail(self, message: str) -> bytes:
        self.complete = True
        self._sequence += 1
        response = dict(self._response) or {"id": "resp_switchback", "object": "response"}
        response.update(status="failed", error={"code": "server_error", "message": message})
        return encode(
            {"type": "response.failed", "sequence_number": self._sequence, "response": response},
            "response.failed",
        )


def passthrough(protocol: str) -> StreamShaper:
    return ChatPassthrough() if protocol == CHAT else ResponsesPassthrough()
