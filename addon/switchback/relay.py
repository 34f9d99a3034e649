"""The loopback relay that delivers committed streams.

mitmproxy cannot stream a response set in the `request` hook, so a stream
that passed the gate is parked here under a single-use random token and the
flow is pointed at `http://127.0.0.1:<port>/<token>`. The relay writes the
status and headers, then the body as the upstream produces it. When mitmproxy
drops the connection (the client went away) the body iterator is closed,
which closes the upstream stream so the provider stops generating. Streams
nobody collects expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator
from http import HTTPStatus

from .dispatch import Committed

logger = logging.getLogger(__name__)


class Relay:
    def __init__(self, ttl: float = 30.0) -> None:
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
        for task in list(self._tasks):  # expiries and live pipes: close their upstreams
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for token in list(self._parked):
            await self._expire(token)

    def park(self, stream: Committed) -> str:
        """Keep a committed stream until the relay flow collects it."""
        token = secrets.token_urlsafe(18)
        timer = asyncio.get_running_loop().call_later(self.ttl, self._spawn_expire, token)
        self._parked[token] = (stream, timer)
        return token

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.port}/{token}"

    def _collect(self, token: str | None) -> Committed | None:
        stream, timer = self._parked.pop(token or "", (None, None))
        if timer is not None:
            timer.cancel()
        return stream

    def _spawn_expire(self, token: str) -> None:
        self._track(asyncio.ensure_future(self._expire(token)))

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, token: str) -> None:
        stream = self._collect(token)
        if stream is not None:
            logger.info("switchback: a parked stream was not collected; closing its upstream")
            await stream.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(asyncio.current_task())
        try:
            token = await _read_request(reader)
            stream = self._collect(token)
            if stream is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n"
                             b"connection: close\r\n\r\n")
                return
            await self._pipe(stream, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    async def _pipe(self, stream: Committed, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Write the stream chunk by chunk until it ends or the reader hangs up."""
        hangup = pump = None
        try:
            try:
                reason = HTTPStatus(stream.status).phrase
            except ValueError:
                reason = ""
            head = [f"HTTP/1.1 {stream.status} {reason}"]
            head += [f"{k}: {v}" for k, v in stream.headers]
            head += ["transfer-encoding: chunked", "connection: close", "", ""]
            writer.write("\r\n".join(head).encode("utf-8"))
            # mitmproxy closes this connection when the client goes away: reading
            # EOF (or an error) is the signal to stop and close the upstream.
            hangup = asyncio.ensure_future(reader.read(1))
            pump = asyncio.ensure_future(_write_chunked(stream.body, writer))
            await asyncio.wait({hangup, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [t for t in (hangup, pump) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stream.aclose()


async def _write_chunked(body: AsyncGenerator[bytes, None], writer: asyncio.StreamWriter) -> None:
    async for chunk in body:
        if chunk:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> str | None:
    """The token from the request line; a request body (the addon sends
    none) is drained so closing the socket later does not reset it."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return parts[1].lstrip("/") if len(parts) >= 2 else None
