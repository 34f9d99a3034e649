"""A committed stream on its way to the client.

The held head goes first (at once, with the answer's head), then every
upstream read as it comes, shaped into the client's protocol and cleared of
secrets: all complete events of a read in one piece, so the client gets one
write per network read. Byte-exact delivery is for what a client can read:
blocks its parser would not dispatch, and may choke on, are left out, and a
stream that ends inside a block is ended on a fresh line. However the
upstream ends, the client gets its protocol's end exactly once: the proper
one when the answer completed, else the way its protocol closes a failed
stream — a client must never take a cut stream for a complete one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from typing import Protocol as Interface

from ..protocols.kinds import Signal, discarded, suspect, suspicious
from ..protocols.spec import spec
from ..protocols.metered import Metered
from ..protocols.shapers import StreamShaper
from ..protocols.splice import Diverged
from ..protocols.sse import Event, EventTooLarge, SseParser
from ..vocabulary import Break, FailureKind, Protocol
from .gate import Head, ended
from .upstream import TRANSPORT_ERRORS, transport_failure

logger = logging.getLogger(__name__)


class Tap:
    """A bounded copy of what the provider sent for a committed stream — its
    held head, then every read as it came — for a person to compare with
    what the client got. Kept only when opened (somebody can look); until
    the stream starts it holds the head, and lets go of it then."""

    __slots__ = ("head", "redact", "kept", "limit")

    def __init__(self, head: Head | None, redact: Callable[[bytes], bytes]) -> None:
        self.head, self.redact = head, redact
        self.kept: bytearray | None = None
        self.limit = 0

    def open(self, limit: int) -> None:
        """Keep the first `limit` bytes, from the head on."""
        if self.head is not None:
            self.kept, self.limit = bytearray(self.head.raw()[:limit]), limit

    def start(self) -> Callable[[bytes], None] | None:
        """The stream starts: how to keep a read, or None when nobody looks."""
        self.head = None
        return self.keep if self.kept is not None else None

    def keep(self, data: bytes) -> None:
        kept = self.kept
        if kept is not None and len(kept) < self.limit:
            kept += data[:self.limit - len(kept)]

    def sent(self) -> bytes | None:
        """What was kept, cleared of secrets; None when nothing was."""
        return None if self.kept is None else self.redact(bytes(self.kept))


@dataclass
class Stop:
    """Why a committed stream stopped short of its answer's end."""

    kind: Break
    why: str  # for the client's clean error
    event: Event | None = None  # the provider's error event, held back
    closed: bool = False  # the upstream closed without its protocol's end


class Resumer(Interface):
    """What delivery needs of a rescue (`engine.rescue.Rescuer`)."""

    def record(self, data: bytes) -> None:
        """The client got `data` (kept until a break needs it)."""

    async def resume(self, stop: Stop) -> Committed | None:
        """The answer continued elsewhere, or None."""

    def delivered(self, stream: Committed) -> None:
        """A continuation has been delivered to its end."""

    afford: Callable[[], Awaitable[bool]] | None  # the budgets' leave for one more attempt

    @property
    def original(self) -> Stop | None:
        """The break the call's first stream stopped at: the clean error names it."""


@dataclass
class Committed:
    """A stream that passed the gate: status, headers, the client's bytes of
    the held head, and the rest as it comes."""

    status: int
    headers: list[tuple[str, str]]
    first: bytes
    rest: AsyncGenerator[bytes, None]
    close_upstream: Callable[[], None]
    meter: Metered | None = None  # its usage, as it comes
    ended: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run once, at close
    closed: bool = False
    shown: bytearray | None = None  # a bounded copy of what the client got, when wanted
    shown_limit: int = 0
    broke: str | None = None  # why the client got an error after part of the answer
    upstream: Tap | None = None  # what the provider sent, when somebody can look
    priced: tuple[str, str] = ("", "")  # the base URL and model its usage is priced at
    continued: list[Committed] = field(default_factory=list)  # the rescues that carried it on
    rescue: Resumer | None = None  # what carries it on if it stops short

    def show(self, data: bytes) -> None:
        """Keep (the start of) what was delivered, for a person to look at later."""
        if self.shown is not None and len(self.shown) < self.shown_limit:
            self.shown += data[:self.shown_limit - len(self.shown)]

    async def aclose(self) -> None:
        """Close the rest and the upstream, whether or not the rest was started.
        An upstream read to its end has already gone back to the pool; any
        other is closed, so the provider stops generating. Then whatever waits
        for the stream's end (the call's charge) runs, once."""
        self.closed = True
        try:
            await self.rest.aclose()
        finally:
            try:
                self.close_upstream()
            finally:
                ended, self.ended = self.ended, []
                for callback in ended:
                    await callback()


def shape(shaper: StreamShaper, events: Iterable[Event]) -> bytes:
    """The client's bytes of upstream events, leaving out the blocks a
    client's parser does not dispatch (see `kinds.discarded`)."""
    return b"".join(shaper.feed(event) for event in events if not discarded(event))


def first_bytes(head: Head, shaper: StreamShaper, redact: Callable[[bytes], bytes],
                watch: Protocol | None = None, each: bool = False) -> tuple[bytes, Stop | None]:
    """The client's bytes of the held head; with `watch` (the upstream's
    protocol, for a stream that may be rescued) up to an event that says the
    answer failed after all, and that break. `each`: every event is looked
    at (a continuation's splice may find it differs)."""
    if watch is None or not (each or suspicious(head.raw())):
        return redact(shape(shaper, head.held)), None
    out, stop = watched(shaper, head.held, watch)
    return redact(out), stop


def watched(shaper: StreamShaper, events: Iterable[Event], upstream: Protocol
            ) -> tuple[bytes, Stop | None]:
    """As `shape`, for a stream that may be rescued: it stops at the first
    event that says the answer failed — an error event, one that is not the
    protocol's, a continuation that says otherwise — before the client gets it
    (after the answer's end it is left out: the client has a whole answer)."""
    out = []
    for event in events:
        if discarded(event):
            continue
        if suspect(event):
            signal = spec(upstream).classify(event)
            if signal is Signal.ERROR:
                return b"".join(out), Stop(Break.ERROR_EVENT, "upstream sent an error event",
                                           event)
            if signal is Signal.MALFORMED:
                return b"".join(out), Stop(Break.MALFORMED, "upstream sent a malformed event")
        try:
            out.append(shaper.feed(event))
        except Diverged as exc:
            return b"".join(out), Stop(Break.REPHRASED, str(exc))
    return b"".join(out), None


async def deliver(chunks: AsyncIterator[bytes], parser: SseParser, shaper: StreamShaper,
                  redact: Callable[[bytes], bytes], completed: Callable[[], None],
                  broke: Callable[[str], None] = lambda why: None,
                  tap: Tap | None = None, rescue: Resumer | None = None,
                  upstream: Protocol = Protocol.CHAT, release: Callable[[], None] = lambda: None,
                  stopped: Stop | None = None, each: bool = False
                  ) -> AsyncGenerator[bytes, None]:
    """The client's bytes of a committed stream after its head. At its end
    exactly one of two runs: `completed` when the client got a whole answer,
    `broke` (with why) when it got its protocol's error instead. A client
    that hangs up first gets neither. With `rescue`, a stream that stops
    short of its answer's end is carried on by another attempt, in the same
    generator (`release` lets go of this one's upstream first). `stopped`:
    the held head already showed the break. A read is looked at event by
    event only when it may hold a break (`kinds.suspicious`, with the bytes
    around its edges and the rest of a block it left open), or `each` (a
    continuation's splice may find any event differs)."""
    keep = tap.start() if tap is not None else None
    try:
        stop = stopped
        edge, open_block = b"", parser.pending  # a read's last bytes; a block it left watched
        try:
            async for chunk in chunks if stop is None else _nothing():
                if keep is not None:
                    keep(chunk)
                events = parser.feed(chunk)
                if rescue is None:
                    out = shape(shaper, events)
                else:
                    look = each or open_block or suspicious(edge + chunk)
                    out, stop = watched(shaper, events, upstream) if look \
                        else (shape(shaper, events), None)
                    edge, open_block = chunk[-8:], look and parser.pending
                if out:
                    out = redact(out)
                    if rescue is not None:
                        rescue.record(out)
                    yield out
                if stop is not None:
                    break
        except TRANSPORT_ERRORS as exc:
            failure = transport_failure(exc)
            stop = Stop(Break.STALLED if failure is FailureKind.TIMEOUT else Break.CUT,
                        str(failure))
        except EventTooLarge as exc:
            stop = Stop(Break.MALFORMED, str(exc))
        last = b""
        if stop is None or stop.kind in (Break.CUT, Break.STALLED):
            # Ended or broken, a whole event the stream ended inside is the provider's.
            last, late = (shape(shaper, ended(parser)), None) if rescue is None \
                else watched(shaper, ended(parser), upstream)
            stop = stop or late
        if rescue is not None and shaper.complete:
            stop = None  # a break after the answer's end: the client has it whole
        if stop is None and not shaper.complete:
            stop = Stop(Break.CUT, "upstream stream ended before the answer was complete",
                        closed=True)
        if stop is not None and rescue is not None:
            if last:
                last = redact(last)
                rescue.record(last)
                yield last
                last = b""
            release()
            continued = await rescue.resume(stop)
            if continued is not None:
                try:
                    if continued.first:
                        yield continued.first
                    async for out in continued.rest:
                        yield out
                finally:
                    await continued.aclose()
                rescue.delivered(continued)
                if continued.broke is not None:
                    broke(continued.broke)
                return
            original = rescue.original or stop
            if stop is original and stop.event is not None:
                last += shape(shaper, [stop.event])  # the provider's own words, as today
                if shaper.complete:  # and its protocol's end (a Responses error event)
                    yield redact(last)
                    broke(stop.why)
                    return
            stop = original
        if stop is None or stop.closed:  # its protocol's own end for either
            answered = shaper.complete
            yield redact(last + shaper.finish())
            if answered:
                completed()
            elif stop is not None:
                broke(stop.why)
            return
        yield redact(last) + _broken(shaper, stop.why, completed, broke)
    except Exception:  # a bug of ours must still end the client's stream properly
        logger.exception("switchback: error while delivering a stream")
        yield _broken(shaper, "Switchback failed while delivering the stream", completed, broke)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield


def _broken(shaper: StreamShaper, why: str, completed: Callable[[], None],
            broke: Callable[[str], None]) -> bytes:
    """The end of a stream whose upstream broke: when the answer had already
    completed (the break came after its last event) its protocol's proper
    end if the client is still owed it — a translator that had its finish
    closes it as completed too; else its way of saying the stream failed."""
    answered = shaper.complete
    end = shaper.fail(f"upstream stream broke: {why}")
    if answered or shaper.final is not None:
        completed()
    else:
        broke(why)
    return end
