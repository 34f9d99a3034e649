"""What one upstream SSE event means, per protocol: the first-chunk gate's
reading of a stream's head for chat and Responses, the event types their
shapers and translators agree on, and which blocks a client's parser can
read at all. `spec` says which reader belongs to which protocol.

The gate commits only on events that show the answer has started — content,
a tool call, a refusal, reasoning, or a clean end. Everything else before
that (lifecycle events, comments, pings, types this code has never heard of)
is held: an unknown event says nothing about success, and committing on it
would let a failure right behind it reach the client.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

from .sse import Event


class Signal(enum.Enum):
    HOLD = "hold"  # says nothing about success yet: keep holding
    CONTENT = "content"  # the answer has started: commit
    END = "end"  # a clean terminal event: commit what is held
    ERROR = "error"  # the answer failed: try the next candidate
    MALFORMED = "malformed"  # not this protocol at all: try the next candidate


RESPONSES_PREAMBLE = frozenset({"response.created", "response.in_progress", "response.queued"})
RESPONSES_END = frozenset({"response.completed", "response.incomplete"})
RESPONSES_ERROR = frozenset({"error", "response.failed"})
RESPONSES_TERMINAL = RESPONSES_END | RESPONSES_ERROR
# Families of events that carry the answer itself. Built-in tool events
# (web search, code interpreter, …) always follow an output_item.added.
_RESPONSES_ANSWER = ("response.output_item.", "response.content_part.", "response.output_text.",
                     "response.refusal.", "response.function_call_arguments.",
                     "response.custom_tool_call_input.", "response.reasoning", "response.audio.")
_CHAT_ANSWER_FIELDS = ("content", "tool_calls", "refusal", "reasoning_content", "reasoning",
                       "function_call", "audio")
DONE = "[DONE]"
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
# Bytes found in every lifecycle or terminal event a pass-through shaper tracks
# (and in few others); `error` is looked for apart: an alternation whose
# branches start differently defeats the regex engine's literal search (84 ms
# on a 10 MB event).
_LIFECYCLE = re.compile(rb"response\.(?:created|in_progress|queued|completed|incomplete|failed)")
# A line of a block that is neither blank nor a comment: a field (`event:`, `id:`) or garbage.
_FIELD_LINE = re.compile(rb"(?:\A|[\r\n])[^:\r\n]")


def is_done(event: Event) -> bool:
    """A chat stream's `data: [DONE]` (its bytes looked at first, parsed only if need be)."""
    return b"[DONE]" in event.raw and event.data is not None and event.data.strip() == DONE


def discarded(event: Event) -> bool:
    """A block without data that is more than comments: an `event:` line
    alone, an `id:`, garbage. The SSE standard dispatches no event without
    data, but the openai SDK's parser dispatches one that has a name or an id
    and then fails to parse its empty data — so no client needs it and some
    choke on it. Comments (`: ping`) are harmless and keep a client's idle
    timers quiet. A block with a `data:` line is answered off its bytes."""
    raw = event.raw
    if raw.startswith(b"data:") or b"\ndata:" in raw or b"\rdata:" in raw:
        return False
    return event.data is None and _FIELD_LINE.search(raw) is not None


def whole(event: Event) -> bool:
    """An event whose data is complete in itself — `[DONE]` or JSON — as
    opposed to a fragment of one (a stream cut inside an event) or garbage."""
    return is_done(event) or event.json() is not None


# Data that does not start as JSON (or `[DONE]`). Searched from its literal
# start alone (a leading line-start alternation makes the engine try every
# byte: 30 µs per 3 KB read); "data:" inside a text only costs a closer look.
_NOT_JSON = re.compile(rb"data:(?! ?[{\[])")


def suspicious(raw: bytes) -> bool:
    """Bytes of a stream (a read, or a held head) that may hold an event
    saying the answer failed: found in one pass in C, so a read without one
    costs no look at each of its events (`suspect` does that)."""
    return b"error" in raw or _NOT_JSON.search(raw) is not None


def suspect(event: Event) -> bool:
    """An event that may say a committed stream failed — it mentions an
    error, or its data is not JSON — read off its bytes; `classify` decides."""
    raw = event.raw
    if b"error" in raw:
        return True
    at = raw.find(b"data:")
    return at >= 0 and raw[at + 5:at + 8].lstrip()[:1] not in (b"{", b"[")


def chat_finished(event: Event) -> bool:
    """A chat chunk with a finish_reason — read off the bytes, no parsing."""
    return _FINISHED.search(event.raw) is not None


def tracked_type(event: Event) -> str | None:
    """`event_type`, for the lifecycle and terminal events a pass-through
    shaper tracks; None, without parsing, for the content between them."""
    raw = event.raw
    return event_type(event) if b"error" in raw or _LIFECYCLE.search(raw) else None


def event_type(event: Event) -> str | None:
    """A Responses event's type: its SSE name, else the `type` in its data."""
    if event.name:
        return event.name
    payload = event.json()
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else None


def classify(read: Callable[[Event], Signal], event: Event) -> Signal:
    """Read one event at the head of a stream with its protocol's `read`,
    which sees only events with data."""
    if event.data is None:  # a comment, keepalive or a name without data
        return Signal.ERROR if event.name == "error" else Signal.HOLD
    return read(event)


def chat_signal(event: Event) -> Signal:
    """A chat chunk at the head of a stream."""
    if is_done(event):
        return Signal.END
    payload = event.json()
    if not isinstance(payload, dict):
        return Signal.MALFORMED
    if event.name == "error" or payload.get("error") is not None:
        return Signal.ERROR
    choices = payload.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (choice.get("finish_reason") or any(
                delta.get(field) for field in _CHAT_ANSWER_FIELDS)):
            return Signal.CONTENT
    return Signal.HOLD  # the role chunk, a usage chunk, something new


def responses_signal(event: Event) -> Signal:
    """A Responses event at the head of a stream."""
    if not isinstance(event.json(), dict):
        return Signal.MALFORMED
    kind = event_type(event)
    if kind in RESPONSES_ERROR:
        return Signal.ERROR
    if kind in RESPONSES_END:
        return Signal.END
    if kind is not None and kind.startswith(_RESPONSES_ANSWER):
        return Signal.CONTENT
    return Signal.HOLD  # created, in_progress, ping, anything unknown
