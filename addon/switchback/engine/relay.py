"""The loopback relay that delivers committed streams.

mitmproxy cannot stream a response set in the `request` hook, so a stream
that passed the gate is parked here under a single-use random token and the
flow is pointed at `http://127.0.0.1:<port>/<token>`. The relay answers with
the status and headers, then the body as the upstream produces it.

Connections are kept alive: mitmproxy reuses its connection to the relay for
the next stream of the same client connection, as it would with any server,
so a stream costs no new connection here. When mitmproxy drops the
connection mid-stream (the client went away) the stream is closed, which
closes the upstream so the provider stops generating. Streams nobody
collects expire, and the addon discards the stream of a flow that died
before collecting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from http import HTTPStatus

from .delivery import Committed

logger = logging.getLogger(__name__)
PARKED_TTL = 10.0  # seconds: mitmproxy collects a parked stream within milliseconds
_BAD_REQUEST = (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError)


class Relay:
    def __init__(self, ttl: float = PARKED_TTL) -> None:
        self.ttl = ttl
        self.port = 0
        self._server: asyncio.Server | None = None
        self._parked: dict[str, tuple[Committed, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):  # live pipes and expiries: close their upstreams
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
        stream = self._collect(token)
        if stream is None:
            return False
        await stream.aclose()
        return True

    def _collect(self, token: str | None) -> Committed | None:
        stream, timer = self._parked.pop(token or "", (None, None))
        if timer is not None:
            timer.cancel()
        return stream

    def _expire(self, token: str) -> None:
        if token in self._parked:
            logger.info("switchback: a parked stream was not collected; closing its upstream")
            self._track(asyncio.ensure_future(self.discard(token)))

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection from mitmproxy: requests one after another, each
        answered with the stream its token names."""
        self._track(asyncio.current_task())
        leftover: bytes | None = b""
        try:
            while leftover is not None and (token := await _read_request(reader, leftover)):
                stream = self._collect(token)
                if stream is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    leftover = b""
                else:
                    leftover = await self._pipe(stream, reader, writer)
        except _BAD_REQUEST:
            pass
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    async def _pipe(self, stream: Committed, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> bytes | None:
        """Write the stream chunk by chunk until it ends, or the reader hangs
        up (None: close the connection). After a complete stream, the bytes
        of the next request read meanwhile (usually none)."""
        hangup = pump = None
        try:
            try:
                reason = HTTPStatus(stream.status).phrase
            except ValueError:
                reason = ""
            head = [f"HTTP/1.1 {stream.status} {reason}"]
            head += [f"{k}: {v}" for k, v in stream.headers]
            head += ["transfer-encoding: chunked", "", ""]
            writer.write("\r\n".join(head).encode("utf-8"))
            # mitmproxy sends nothing more on this connection until the answer
            # is complete, so anything readable now is its hang-up (EOF).
            hangup = asyncio.ensure_future(reader.read(1))
            pump = asyncio.ensure_future(_write_chunked(stream, writer))
            await asyncio.wait({hangup, pump}, return_when=asyncio.FIRST_COMPLETED)
            if not pump.done() or pump.exception() is not None:
                return None
            if not hangup.done():
                return b""
            return (hangup.result() or None) if hangup.exception() is None else None
        finally:
            for task in (hangup, pump):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (hangup, pump) if t is not None),
                                 return_exceptions=True)
            await stream.aclose()


async def _write_chunked(stream: Committed, writer: asyncio.StreamWriter) -> None:
    async for chunk in stream.body:
        if chunk:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader, leftover: bytes) -> str | None:
    """The token of the next request on the connection (None at its end);
    `leftover` is its start, if already read. A request body (the addon
    sends none) is drained so the next request starts where it should."""
    try:
        head = leftover + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return parts[1].lstrip("/") if len(parts) >= 2 else ""
