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

from ..protocols.kinds import discarded
from ..protocols.metered import Metered
from ..protocols.shapers import StreamShaper
from ..protocols.sse import Event, EventTooLarge, SseParser
from ..vocabulary import FailureKind
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


def first_bytes(head: Head, shaper: StreamShaper, redact: Callable[[bytes], bytes]) -> bytes:
    """The client's bytes of the held head."""
    return redact(shape(shaper, head.held))


async def deliver(chunks: AsyncIterator[bytes], parser: SseParser, shaper: StreamShaper,
                  redact: Callable[[bytes], bytes], completed: Callable[[], None],
                  broke: Callable[[str], None] = lambda why: None,
                  tap: Tap | None = None) -> AsyncGenerator[bytes, None]:
    """The client's bytes of a committed stream after its head. At its end
    exactly one of two runs: `completed` when the client got a whole answer,
    `broke` (with why) when it got its protocol's error instead. A client
    that hangs up first gets neither."""
    keep = tap.start() if tap is not None else None
    try:
        cut: FailureKind | None = None
        try:
            async for chunk in chunks:
                if keep is not None:
                    keep(chunk)
                out = shape(shaper, parser.feed(chunk))
                if out:
                    yield redact(out)
        except TRANSPORT_ERRORS as exc:
            cut = transport_failure(exc)
        # Ended or broken, a whole event the stream ended inside is the provider's.
        last = shape(shaper, ended(parser))
        if cut is None:
            answered = shaper.complete
            yield redact(last + shaper.finish())
            if answered:
                completed()
            else:
                broke("upstream stream ended before the answer was complete")
        else:
            yield redact(last) + _broken(shaper, cut, completed, broke)
    except EventTooLarge as exc:
        yield _broken(shaper, str(exc), completed, broke)
    except Exception:  # a bug of ours must still end the client's stream properly
        logger.exception("switchback: error while delivering a stream")
        yield _broken(shaper, "Switchback failed while delivering the stream", completed, broke)


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
