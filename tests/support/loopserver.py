"""A raw HTTP/1.1 server inside the test's own event loop, on 127.0.0.1.

For in-process tests of the engine with its real upstream client: a handler
sees each request and returns a `Script` — status, headers and body bytes
written exactly as the pieces given (a pause between them), close-delimited
so nothing re-frames them. Or it can hang up without answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Script:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[bytes] = field(default_factory=list)
    pause: float = 0.0  # between pieces
    delay: float = 0.0  # before the answer's head
    hang_up: bool = False  # close without answering

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> Script:
        return cls(status, {"content-type": "application/json", **headers},
                   [json.dumps(payload).encode()])

    @classmethod
    def sse(cls, pieces: list[bytes], pause: float = 0.0, delay: float = 0.0,
            **headers: str) -> Script:
        return cls(200, {"content-type": "text/event-stream", **headers}, pieces, pause, delay)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers.get("authorization", "").removeprefix("Bearer ")


class LoopServer:
    """`async with LoopServer(handler) as server:` serves until the block ends."""

    def __init__(self, handler: Callable[[Seen], Script],
                 tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.tls = handler, tls
        self.seen: list[Seen] = []
        self.hangups = 0  # clients that went away while the server waited to write
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def base_url(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}/v1"
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> LoopServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls,
                                                  backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = Seen(lines[0].split(" ")[1], headers, body)
            self.seen.append(seen)
            script = self.handler(seen)
            if script.hang_up or await self._gone(reader, script.delay):
                return
            writer.write(f"HTTP/1.1 {script.status} X\r\n".encode() + "".join(
                f"{k}: {v}\r\n" for k, v in script.headers.items()).encode()
                + b"connection: close\r\n\r\n")
            for piece in script.pieces:
                writer.write(piece)
                await writer.drain()
                if await self._gone(reader, script.pause):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a cancelled handler ends quietly: asyncio 3.11 logs cancelled ones
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    async def _gone(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Wait, watching the client: True when it hung up meanwhile."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return False
        try:
            data = await asyncio.wait_for(reader.read(1), seconds)
        except asyncio.TimeoutError:
            return False
        if data:
            return False
        self.hangups += 1
        return True
