"""The loopback relay in-process: delivery, expiry and hangups close the upstream."""

from __future__ import annotations

import asyncio

from switchback.dispatch import Committed
from switchback.relay import Relay


class Upstream:
    """Stands in for an upstream stream: counts closes, yields on demand."""

    def __init__(self, chunks: list[bytes], pause: float = 0.0) -> None:
        self.chunks, self.pause, self.closed = chunks, pause, 0

    async def body(self):
        try:
            for chunk in self.chunks:
                await asyncio.sleep(self.pause)
                yield chunk
        finally:
            self.closed += 1

    async def close(self) -> None:
        self.closed += 1

    def committed(self) -> Committed:
        return Committed(200, [("content-type", "text/event-stream")], self.body(), self.close)


async def fetch(relay: Relay, token: str, read_all: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(f"GET /{token} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    await writer.drain()
    data = await (reader.read() if read_all else reader.read(200))
    writer.close()
    return data


def test_delivers_chunked_and_closes_the_upstream():
    async def go():
        relay = Relay()
        await relay.start()
        upstream = Upstream([b"data: a\n\n", b"data: b\n\n"])
        data = await fetch(relay, relay.park(upstream.committed()))
        await relay.stop()
        return data, upstream.closed
    data, closed = asyncio.run(go())
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"9\r\ndata: a\n\n\r\n9\r\ndata: b\n\n\r\n0\r\n\r\n" in data
    assert closed >= 1


def test_uncollected_stream_expires_and_closes_its_upstream():
    async def go():
        relay = Relay(ttl=0.1)
        await relay.start()
        upstream = Upstream([b"data: a\n\n"])
        token = relay.park(upstream.committed())
        await asyncio.sleep(0.3)
        late = await fetch(relay, token)
        await relay.stop()
        return late, upstream.closed
    late, closed = asyncio.run(go())
    assert closed >= 1  # closed although its body never started
    assert late.startswith(b"HTTP/1.1 404")  # single use, and gone


def test_hangup_stops_the_pump_and_closes_the_upstream():
    async def go():
        relay = Relay()
        await relay.start()
        upstream = Upstream([b"data: x\n\n"] * 1000, pause=0.01)
        await fetch(relay, relay.park(upstream.committed()), read_all=False)
        for _ in range(100):
            if upstream.closed:
                break
            await asyncio.sleep(0.02)
        await relay.stop()
        return upstream.closed
    assert asyncio.run(go()) >= 1


def test_unknown_token_is_404():
    async def go():
        relay = Relay()
        await relay.start()
        data = await fetch(relay, "nope")
        await relay.stop()
        return data
    assert asyncio.run(go()).startswith(b"HTTP/1.1 404")
