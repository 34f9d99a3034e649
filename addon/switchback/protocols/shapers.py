"""What a committed stream looks like to the client, event by event.

Every stream the relay delivers goes through a `StreamShaper`: it turns each
upstream event into the bytes the client receives, and knows how to end the
stream properly when the upstream breaks after commit. The pass-through
shapers here forward every block they are given untouched — events,
comments and unknown types alike (delivery leaves out the blocks no client
parser dispatches) — and read as little as they can: a name, a marker, no
JSON until a break needs it. The protocol translators implement the same
interface. Pure.
"""

from __future__ import annotations

from typing import Any, Protocol as Interface

from .kinds import (DONE, RESPONSES_PREAMBLE, RESPONSES_TERMINAL, chat_finished, is_done,
                    tracked_type)
from .envelope import error_object
from .sse import Event, encode

BROKEN = "switchback_stream_broken"  # the error code of a stream closed by Switchback


class StreamShaper(Interface):
    """Shapes one upstream stream for the client; one instance per stream."""

    @property
    def complete(self) -> bool:
        """True once the upstream sent its terminal event."""

    def feed(self, event: Event) -> bytes:
        """Bytes for the client for one upstream event (may be empty)."""

    def finish(self) -> bytes:
        """Closing bytes when the upstream ended: the protocol's end if the
        client has not had it yet; a stream that ended before its answer
        completed is closed as failed."""

    def fail(self, message: str) -> bytes:
        """Closing bytes when the upstream broke after commit: as `finish`,
        saying `message` when the answer had not completed."""

    @property
    def final(self) -> dict | None:
        """For a Responses client: the response object as it completed (the
        conversation record keeps its output); None otherwise."""


def chat_error(message: str, code: str = BROKEN) -> bytes:
    """How a chat stream ends in failure: an error chunk, then `[DONE]` so SDKs stop."""
    return encode(error_object(message, "server_error", code)) + encode(DONE)


class ChatPassthrough:
    """A chat/completions stream forwarded as is. Its answer is complete at
    the chunk with a finish_reason (what may follow — usage — adds nothing a
    client must have), but SDKs stop reading at `[DONE]`: a stream that
    lost it after the finish gets it here, once."""

    final = None  # a chat client keeps no conversation here

    def __init__(self) -> None:
        self.complete = False
        self._done = False  # the client has had a `[DONE]`

    def feed(self, event: Event) -> bytes:
        if not self._done:
            self._done = is_done(event)
            self.complete = self.complete or self._done or chat_finished(event)
        return event.raw

    def finish(self) -> bytes:
        return self.fail("upstream stream ended before the answer was complete")

    def fail(self, message: str) -> bytes:
        if self._done:
            return b""
        self._done = True
        end = encode(DONE) if self.complete else chat_error(message)
        self.complete = True
        return end


class ResponsesPassthrough:
    """A Responses stream forwarded as is; a break ends it with
    `response.failed` carrying the same response id and the next sequence
    number — read from the events only then."""

    def __init__(self) -> None:
        self.complete = False
        self._last: Event | None = None  # the latest event with data
        self._started: Event | None = None  # the latest created/in_progress event
        self._terminal: Event | None = None

    def feed(self, event: Event) -> bytes:
        if b"data:" in event.raw:
            self._last = event
            kind = tracked_type(event)
            if kind in RESPONSES_TERMINAL:
                self.complete, self._terminal = True, event
            elif kind in RESPONSES_PREAMBLE:
                self._started = event
        return event.raw

    def finish(self) -> bytes:
        return self.fail("upstream stream ended before response.completed")

    @property
    def final(self) -> dict | None:
        """The response object of the terminal event, for the conversation record."""
        payload = self._terminal.json() if self._terminal is not None else None
        response = payload.get("response") if isinstance(payload, dict) else None
        return response if isinstance(response, dict) else None

    def fail(self, message: str) -> bytes:
        if self.complete:
            return b""
        self.complete = True
        last = self._last.json() if self._last is not None else None
        sequence = last.get("sequence_number") if isinstance(last, dict) else None
        started = self._started.json() if self._started is not None else None
        response: dict[str, Any] = dict(started.get("response") or {}) \
            if isinstance(started, dict) and isinstance(started.get("response"), dict) else {}
        response = response or {"id": "resp_switchback", "object": "response"}
        response.update(status="failed", error={"code": "server_error", "message": message})
        return encode({"type": "response.failed",
                       "sequence_number": sequence + 1 if isinstance(sequence, int) else 0,
                       "response": response}, "response.failed")
