"""A committed stream on its way to the client.

The held head goes first, then every upstream read as it comes, shaped
into the client's protocol and cleared of secrets: all complete events of a
read in one piece, so the client gets one write per network read. When the
upstream breaks after commit, the stream is closed the way the client's
protocol closes a failed stream — a client must never take a cut stream for
a complete one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from ..protocols.shapers import StreamShaper
from ..protocols.sse import EventTooLarge, SseParser
from .gate import Head
from .upstream import TRANSPORT_ERRORS, transport_failure


@dataclass
class Committed:
    """A stream that passed the gate: status, headers and the client's bytes."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncGenerator[bytes, None]
    close_upstream: Callable[[], None]

    async def aclose(self) -> None:
        """Close the body and the upstream, whether or not the body was started.
        An upstream read to its end has already gone back to the pool; any
        other is closed, so the provider stops generating."""
        try:
            await self.body.aclose()
        finally:
            self.close_upstream()


async def deliver(head: Head, chunks: AsyncIterator[bytes], parser: SseParser,
                  shaper: StreamShaper, redact: Callable[[bytes], bytes],
                  completed: Callable[[], None]) -> AsyncGenerator[bytes, None]:
    """The client's bytes of a committed stream; `completed` runs when the
    upstream ended properly."""
    yield redact(b"".join(map(shaper.feed, head.held)))
    try:
        async for chunk in chunks:
            out = b"".join(map(shaper.feed, parser.feed(chunk)))
            if out:
                yield redact(out)
        tail = parser.close()
        yield redact((shaper.feed(tail) if tail is not None else b"") + shaper.finish())
        completed()
    except EventTooLarge as exc:
        yield shaper.fail(f"upstream stream broke: {exc}")
    except TRANSPORT_ERRORS as exc:
        yield shaper.fail(f"upstream stream broke: {transport_failure(exc)}")

