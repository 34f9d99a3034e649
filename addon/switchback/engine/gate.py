"""The first-chunk gate: hold a stream's head until it shows success or failure.

Nothing of an attempt may reach the client before the gate commits, so a
failure at the head of a stream can still move on to another candidate.
`Head` is the pure part: it holds every event it is given — a decision in
the middle of a network read keeps the rest of that read, which is the
stream's next bytes — and remembers the first event that decided.
`read_head` feeds it from the upstream, for a bounded time: keepalives show
that a connection lives, not that an answer is coming.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

from ..protocols import sse
from ..protocols.kinds import Signal, whole
from ..protocols.spec import spec
from ..protocols.sse import Event, EventTooLarge, SseParser
from ..vocabulary import FailureKind, Protocol

_FAILURES = {Signal.ERROR: FailureKind.ERROR_EVENT, Signal.MALFORMED: FailureKind.MALFORMED,
             Signal.HOLD: FailureKind.NO_ANSWER}


class Head:
    """The held head of one stream and what it showed."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self._classify = spec(protocol).classify
        self.held: list[Event] = []
        self.size = 0  # bytes held
        self.signal = Signal.HOLD
        self.culprit: Event | None = None  # the event that decided

    def take(self, events: Iterable[Event]) -> bool:
        """Hold `events`; True once the head has decided. EventTooLarge when
        what is held before any answer outgrows what one event may be."""
        for event in events:
            self.held.append(event)
            self.size += len(event.raw)
            if self.signal is Signal.HOLD and self.size > sse.MAX_EVENT:
                raise EventTooLarge(f"{self.size} bytes before any answer")
            if self.signal is Signal.HOLD:
                signal = self._classify(event)
                if signal is not Signal.HOLD:
                    self.signal, self.culprit = signal, event
        return self.signal is not Signal.HOLD

    @property
    def failure(self) -> FailureKind | None:
        """None when the stream may be committed; else why it failed (a head
        still undecided when the stream ended had no answer)."""
        if self.signal in (Signal.CONTENT, Signal.END):
            return None
        return _FAILURES[self.signal]

    def raw(self) -> bytes:
        return b"".join(event.raw for event in self.held)


def ended(parser: SseParser) -> list[Event]:
    """The block a stream ended inside (no blank line after it), as a
    client's parser should get it. The SSE standard dispatches no such
    block; but a whole event that merely lacks its blank line (`data:
    [DONE]` and the close) is the provider's answer, so it is terminated —
    dispatched, and whatever follows starts on a fresh line. A fragment (an
    event cut short, garbage) is dropped, as the standard drops it."""
    tail = parser.close()
    if tail is None:
        return []
    text = tail.raw.rstrip(b"\r\n")
    line_ends = tail.raw[len(text):]
    if len(line_ends) - line_ends.count(b"\r\n") >= 2:  # a CRLF is one line end
        return [tail]  # a whole block after all, held only for the byte after its last CR
    if not whole(tail):
        return []
    # Parsed afresh: a byte order mark before a stream's only block is skipped again.
    return SseParser().feed(text + b"\n\n")


async def read_head(chunks: AsyncIterator[bytes], parser: SseParser, head: Head,
                    first_event: Callable[[], None], within: float | None = None) -> Head:
    """Read until `head` decides or the stream ends, for at most `within`
    seconds (None: no bound) counted from the answer's status, which the
    caller has just read: comments and lifecycle events hold the head without
    extending that wait.
    `first_event` is called once, when the first block arrives. TimeoutError
    when the time is up; SSE errors (an oversized event) and transport errors
    propagate."""
    async with asyncio.timeout(within):
        async for chunk in chunks:
            events = parser.feed(chunk)
            if events and not head.held:
                first_event()
            if head.take(events):
                return head
    head.take(ended(parser))
    return head
