"""The loopback relay that delivers committed streams.

mitmproxy cannot stream a response set in the `request` hook, so a stream
that passed the gate is parked here under a single-use random token and the
flow is pointed at `http://127.0.0.1:<port>/<token>`. The relay answers with
the status, the headers and the held head of the stream in one write, then
the rest as the upstream produces it.

Connections are kept alive: mitmproxy reuses its connection to the relay for
the next stream of the same client connection, as it would with any server,
so a stream costs no new connection here. When mitmproxy drops the
connection mid-stream (the client went away) the stream is closed, which
closes the upstream so the provider stops generating. Streams nobody
collects expire, and the addon discards the stream of a flow that died
before collecting it.

A protocol rather than stream reader and writer: one task per stream, and
a hang-up is a callback, not a second task waiting on a read.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from http import HTTPStatus
from urllib.parse import urlsplit

from ..protocols.envelope import error_body
from .delivery import Committed

logger = logging.getLogger(__name__)
PARKED_TTL = 10.0  # seconds: mitmproxy collects a parked stream within milliseconds
MAX_HEAD = 64 << 10
_STARTING = object()  # a pump being started


class Relay:
    def __init__(self, ttl: float = PARKED_TTL) -> None:
        self.ttl = ttl
        self.port = 0
        self._server: asyncio.Server | None = None
        self._parked: dict[str, tuple[Committed, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Listen, once: the proxy may take a call before every addon is running."""
        async with self._starting:
            if self._server is None:
                loop = asyncio.get_running_loop()
                self._server = await loop.create_server(lambda: _Connection(self),
                                                        "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):  # live pumps and expiries: close their upstreams
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for token in list(self._parked):
            await self.discard(token)

    def park(self, stream: Committed) -> str:
        """Keep a committed stream until the relay flow collects it."""
        token = secrets.token_urlsafe(18)
        timer = asyncio.get_running_loop().call_later(self.ttl, self._expire, token)
        self._parked[token] = (stream, timer)
        return token

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.port}/{token}"

    async def discard(self, token: str) -> bool:
        """Close a parked stream nobody will collect; False if it was not parked."""
        stream = self.collect(token)
        if stream is None:
            return False
        await stream.aclose()
        return True

    def collect(self, token: str) -> Committed | None:
        """Take a parked stream (once)."""
        stream, timer = self._parked.pop(token, (None, None))
        if timer is not None:
            timer.cancel()
        return stream

    def track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expire(self, token: str) -> None:
        if token in self._parked:
            logger.info("switchback: a parked stream was not collected; closing its upstream")
            self.track(asyncio.ensure_future(self.discard(token)))


class _Connection(asyncio.Protocol):
    """One connection from mitmproxy: requests one after another, each
    answered with the stream its token names."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()  # request bytes not yet answered
        self.pump: asyncio.Task | object | None = None  # the stream being written
        self.writable: asyncio.Future | None = None  # set while the peer reads slowly

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if isinstance(self.pump, asyncio.Task):
            self.pump.cancel()  # the client went away: the pump closes the upstream
        self._wake()

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake()

    def _wake(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def _next_request(self) -> None:
        """Answer the next complete request in the buffer, if no stream is running."""
        if self.pump is not None or self.transport is None:
            return  # mitmproxy sends the next request only after the answer
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self.transport.close()
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                       if k.strip().lower() == "content-length" and v.strip().isdigit()), 0)
        if len(self.buffer) < end + 4 + length:
            return  # its body (the addon sends none) is still on its way
        del self.buffer[:end + 4 + length]
        parts = lines[0].split(" ")
        # The token is the path, whatever form the request target takes.
        token = urlsplit(parts[1]).path.lstrip("/") if len(parts) >= 2 else ""
        stream = self.relay.collect(token)
        if stream is None:
            self.transport.write(_GONE)
            return self._next_request()
        try:
            head = _head(stream)
        except Exception:  # a bug of ours: the stream must still close (and settle)
            logger.exception("switchback: could not write a relayed stream's head")
            self.transport.write(_GONE)
            self.relay.track(asyncio.ensure_future(stream.aclose()))
            return self._next_request()
        self.transport.write(head + _chunk(stream.first))
        stream.show(stream.first)
        # Under an eager task factory (mitmproxy 12 on Python 3.12+) the pump may
        # run to its end inside ensure_future: it clears `pump` itself then.
        self.pump = _STARTING
        pump = asyncio.ensure_future(self._pump(stream))
        self.relay.track(pump)
        if self.pump is _STARTING:
            self.pump = pump

    async def _pump(self, stream: Committed) -> None:
        """The rest of the stream, then the next request on this connection."""
        try:
            async for chunk in stream.rest:
                if self.transport is None:
                    return
                if chunk:
                    self.transport.write(_chunk(chunk))
                    stream.show(chunk)
                if self.writable is not None:
                    await self.writable
            if self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        except Exception:
            # Never leave mitmproxy waiting on a body that will not end.
            logger.exception("switchback: a relayed stream failed")
            if self.transport is not None:
                self.transport.abort()
            return
        finally:
            try:
                await stream.aclose()
            finally:
                self.pump = None
        self._next_request()


_GONE_BODY = error_body("Switchback: this answer was not collected in time and is gone",
                        "server_error", "switchback_stream_gone")
_GONE = (b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\n"
         b"content-length: %d\r\n\r\n%s" % (len(_GONE_BODY), _GONE_BODY))


def _head(stream: Committed) -> bytes:
    try:
        reason = HTTPStatus(stream.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {stream.status} {reason}", *(f"{k}: {v}" for k, v in stream.headers),
             "transfer-encoding: chunked", "", ""]
    # Header values keep the bytes the provider sent (aiohttp decodes them so).
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
