"""One way to wire a dispatcher for engine tests: a config text, learned state
in memory on a given clock, and a transport — the real upstream client
(closed by the caller's `close`) or a scripted one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

from multidict import CIMultiDict

from switchback.config import parse_config
from switchback.engine.dispatch import Dispatcher
from switchback.engine.transport import Transport
from switchback.engine.upstream import Upstream
from switchback.providers import ProviderTable
from switchback.state.learned import Learned
from switchback.state.stores import Stores


class Clock:
    """A clock that moves only when told: `clock.now += 5`."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """The attempt loop's waits, on this clock: no real time passes."""
        self.now += seconds


def upstream() -> Upstream:
    return Upstream(insecure=False, cafile=None, capath=None, modes=["regular"],
                    connect_timeout=5)


def wire(config_text: str, clock: Callable[[], float] = time.time,
         transport: Transport | None = None, rand: Callable[[], float] = lambda: 0.0,
         sleep: Callable[[float], Awaitable[object]] | None = None) -> Dispatcher:
    """A dispatcher for `config_text`; backoff jitter is 0 unless `rand` says.
    On a fake `Clock` the loop's own waits move that clock (unless `sleep`
    says otherwise), so no test sleeps for real."""
    config = parse_config(config_text, "t.yaml", {})
    learned = Learned.over(Stores.memory(clock), config.cooldown, config.protocol_memory,
                           config.conversation_ttl, clock, rand)
    if sleep is None:
        sleep = clock.sleep if isinstance(clock, Clock) else asyncio.sleep
    return Dispatcher(transport or upstream(), config, ProviderTable(config.providers), learned,
                      clock=clock, sleep=sleep)


class ScriptedReply:
    """An upstream answer as scripted: the body's pieces, each one network
    read; an exception among them is raised when the reading reaches it."""

    def __init__(self, status: int = 200, pieces: Sequence[bytes | BaseException] = (),
                 content_type: str = "text/event-stream", **headers: str) -> None:
        self.status, self.pieces = status, list(pieces)
        self.headers = CIMultiDict({"content-type": content_type, **headers})
        self.closed = False
        self.idle: float | None = None  # the read timeout after the first event

    def is_event_stream(self) -> bool:
        return "text/event-stream" in self.headers.get("content-type", "")

    async def chunks(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            if isinstance(piece, BaseException):
                raise piece
            yield piece

    async def read(self, limit: int | None) -> bytes:
        body = b"".join([piece async for piece in self.chunks()])
        return body if limit is None else body[:limit]

    def keep_waiting(self, seconds: float | None) -> None:
        self.idle = seconds

    def close(self) -> None:
        self.closed = True


class ScriptedTransport:
    """A `Transport` that answers from a script, in order, and records what
    it was sent: engine tests with no sockets and no real timeouts. An
    exception in the script is raised by `send` (a refused connection)."""

    def __init__(self, *replies: ScriptedReply | BaseException) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[str, list[tuple[str, str]], bytes]] = []

    async def send(self, url: str, headers: Iterable[tuple[str, str]], body: bytes,
                   read_timeout: float) -> ScriptedReply:
        self.sent.append((url, list(headers), body))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def aclose(self) -> None:
        pass


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> float:
    """Seconds until `condition()` held, looking every millisecond; fails past
    `seconds` (what another task or replica does is seen a moment later)."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > seconds:
            raise AssertionError(f"not within {seconds}s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started
