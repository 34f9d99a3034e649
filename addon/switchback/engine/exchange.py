"""One exchange with one candidate: send, and read until there is something
to judge.

Everything here speaks to a `Transport`. A whole answer is read (an error's
first MiB); a stream is read only until its head decides (the first-chunk
gate), and a head that shows an answer is `Held` — not yet committed: the
attempt loop judges it like any other outcome, and commits it only on that
verdict. The upstream answer is closed here unless a held stream owns it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from ..config import Timeouts
from ..health.verdict import Outcome
from ..protocols.metered import Metered
from ..protocols.shapers import StreamShaper
from ..protocols.splice import Diverged
from ..protocols.sse import EventTooLarge, SseParser
from ..redact import Redactor
from ..vocabulary import Break, FailureKind, Protocol
from .delivery import Committed, Resumer, Tap, deliver, first_bytes
from .gate import Head, read_head
from .headers import response_headers
from .results import AttemptRecord
from .transport import Reply, Transport
from .upstream import TRANSPORT_ERRORS, transport_detail, transport_failure

MAX_ERROR_BODY = 1 << 20
logger = logging.getLogger(__name__)


@dataclass
class Held:
    """A stream whose head showed an answer, holding its upstream open."""

    reply: Reply
    chunks: AsyncIterator[bytes]
    parser: SseParser
    head: Head

    def commit(self, shaper: StreamShaper, redact: Callable[[bytes], bytes],
               headers: list[tuple[str, str]], completed: Callable[[], None],
               upstream: Protocol, meter: Metered | None = None,
               rescue: Resumer | None = None, splicing: bool = False) -> Committed:
        """The stream for the relay: the held head shaped for the client, then
        the rest. ValueError-like failures of the shaper on the head propagate.
        `meter` reads its usage (the shaper itself when it is a `Metered`);
        `rescue` carries it on if it stops short; `splicing`: it carries on
        another (every event is looked at)."""
        first, stop = first_bytes(self.head, shaper, redact,
                                  upstream if rescue is not None else None, splicing)
        if stop is not None and stop.kind is Break.REPHRASED:
            raise Diverged(stop.why)  # a continuation that differs at once: not committed
        if rescue is not None:
            rescue.record(first)
        made: list[Committed] = []  # the stream, once made: its delivery says how it ended

        def broke(why: str) -> None:
            made[0].broke = why

        tap = Tap(self.head, redact)
        made.append(Committed(200, headers, first,
                              deliver(self.chunks, self.parser, shaper, redact, completed, broke,
                                      tap, rescue, upstream, self.reply.close, stop, splicing),
                              self.reply.close,
                              meter or (shaper if isinstance(shaper, Metered) else None),
                              upstream=tap, rescue=rescue))
        return made[0]


@dataclass
class Exchanged:
    outcome: Outcome
    held: Held | None = None  # a stream's head that showed an answer

    def release(self) -> None:
        """Close a held stream that will not be delivered."""
        if self.held is not None:
            self.held.reply.close()
            self.held = None


@dataclass(frozen=True)
class Sending:
    """One request, and what the exchange needs to read its answer."""

    url: str
    headers: Iterable[tuple[str, str]]
    body: bytes
    stream: bool
    protocol: Protocol  # what the upstream speaks: how its stream head reads
    own: bool  # the client's own call: its account headers may come back
    client_key: bool  # sent with the client's credential, not a configured key


async def exchange(transport: Transport, sending: Sending, timeouts: Timeouts,
                   record: AttemptRecord, redact: Redactor, clock: Callable[[], float]
                   ) -> Exchanged:
    """Send and read until there is something to judge."""
    try:
        reply = await transport.send(
            sending.url, sending.headers, sending.body,
            read_timeout=timeouts.first_byte if sending.stream else timeouts.response)
    except TRANSPORT_ERRORS as exc:
        return Exchanged(_transport_outcome(exc, sending.url))
    held: Held | None = None
    try:
        record.status = reply.status
        record.first_byte = clock() - record.started
        record.response_headers = redact.headers(response_headers(reply.headers.items(),
                                                                  sending.own))
        ok = 200 <= reply.status < 300
        if sending.stream and ok:
            if not reply.is_event_stream():
                record.response_body = redact.bytes(await reply.read(MAX_ERROR_BODY))
                return Exchanged(Outcome(reply.status, reply.headers, record.response_body,
                                         FailureKind.NOT_A_STREAM, sending.client_key))
            chunks, parser, head = reply.chunks(), SseParser(), Head(sending.protocol)
            await read_head(chunks, parser, head, lambda: reply.keep_waiting(timeouts.idle),
                            within=timeouts.first_byte)
            if head.failure is None:
                held = Held(reply, chunks, parser, head)
                return Exchanged(Outcome(reply.status, reply.headers,
                                         client_key=sending.client_key), held)
            record.response_body = redact.bytes(head.raw())
            culprit = head.culprit.data if head.culprit and head.culprit.data else ""
            return Exchanged(Outcome(reply.status, reply.headers, culprit.encode(),
                                     head.failure, sending.client_key))
        record.response_body = redact.bytes(await reply.read(None if ok else MAX_ERROR_BODY))
        return Exchanged(Outcome(reply.status, reply.headers, record.response_body,
                                 client_key=sending.client_key))
    except EventTooLarge:
        return Exchanged(Outcome(reply.status, reply.headers, failure=FailureKind.TOO_LARGE,
                                 client_key=sending.client_key))
    except TRANSPORT_ERRORS as exc:
        return Exchanged(_transport_outcome(exc, sending.url))
    finally:
        if held is None:
            reply.close()


def _transport_outcome(exc: BaseException, url: str) -> Outcome:
    return Outcome(None, failure=transport_failure(exc), detail=transport_detail(exc, url))
