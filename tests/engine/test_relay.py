"""The loopback relay in-process: delivery on kept-alive connections, expiry,
discard, and hang-ups that close the upstream."""

from __future__ import annotations

import asyncio

from switchback.engine.delivery import Committed
from switchback.engine.relay import Relay, _head as relay_head


class Upstream:
    """Stands in for an upstream stream: counts closes, yields on demand."""

    def __init__(self, chunks: list[bytes], pause: float = 0.0) -> None:
        self.first, *self.chunks = chunks
        self.pause, self.closed = pause, 0
        self.finished = False

    async def body(self):
        for chunk in self.chunks:
            await asyncio.sleep(self.pause)
            yield chunk
        self.finished = True

    def close(self) -> None:
        self.closed += 1

    def committed(self) -> Committed:
        return Committed(200, [("content-type", "text/event-stream")], self.first, self.body(),
                         self.close)


def request(token: str) -> bytes:
    return f"GET /{token} HTTP/1.1\r\nhost: x\r\n\r\n".encode()


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One chunked or sized response off a kept-alive connection (bounded in time)."""
    async def read() -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.decode().lower().split("\r\n"):
            if line.startswith("content-length:"):
                return head + await reader.readexactly(int(line.split(":")[1]))
        return head + await reader.readuntil(b"0\r\n\r\n")
    return await asyncio.wait_for(read(), 10)


async def fetch(relay: Relay, token: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(request(token))
    data = await read_response(reader)
    writer.close()
    return data


async def eventually(condition, seconds: float = 2.0) -> None:
    """Wait (bounded) for something the relay does after the client has its bytes."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds}s")


def run(test) -> None:
    async def go() -> None:
        relay = Relay()
        await relay.start()
        try:
            await test(relay)
        finally:
            await relay.stop()
    asyncio.run(go())


def test_delivers_chunked_without_closing_the_connection():
    async def test(relay: Relay) -> None:
        upstream = Upstream([b"data: a\n\n", b"data: b\n\n"])
        data = await fetch(relay, relay.park(upstream.committed()))
        head = data.split(b"\r\n\r\n")[0].lower()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection" not in head and b"keep-alive" not in head
        assert data.endswith(b"9\r\ndata: a\n\n\r\n9\r\ndata: b\n\n\r\n0\r\n\r\n")
        await eventually(lambda: upstream.closed)
        assert upstream.finished and upstream.closed == 1
    run(test)


def test_one_connection_serves_stream_after_stream():
    async def test(relay: Relay) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        for n in range(3):
            upstream = Upstream([f"data: {n}\n\n".encode()])
            writer.write(request(relay.park(upstream.committed())))
            assert (await read_response(reader)).endswith(
                f"9\r\ndata: {n}\n\n\r\n0\r\n\r\n".encode())
        writer.write(request("nope"))
        gone = await read_response(reader)
        assert gone.startswith(b"HTTP/1.1 502") and b"switchback_stream_gone" in gone
        upstream = Upstream([b"data: after\n\n"])  # and the connection still serves
        writer.write(request(relay.park(upstream.committed())))
        assert b"data: after" in await read_response(reader)
        writer.close()
    run(test)


def test_uncollected_stream_expires_and_closes_its_upstream():
    async def test(relay: Relay) -> None:
        relay.ttl = 0.1
        upstream = Upstream([b"data: a\n\n"])
        token = relay.park(upstream.committed())
        await eventually(lambda: upstream.closed)
        assert upstream.closed == 1  # closed although its body never started
        assert (await fetch(relay, token)).startswith(b"HTTP/1.1 502")  # single use, and gone
    run(test)


def test_a_discarded_stream_is_closed_and_gone():
    async def test(relay: Relay) -> None:
        upstream = Upstream([b"data: a\n\n"])
        token = relay.park(upstream.committed())
        assert await relay.discard(token) and upstream.closed == 1
        assert not await relay.discard(token)
        assert (await fetch(relay, token)).startswith(b"HTTP/1.1 502")
    run(test)


def test_hangup_stops_the_pump_and_closes_the_upstream():
    async def test(relay: Relay) -> None:
        upstream = Upstream([b"data: x\n\n"] * 1000, pause=0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(request(relay.park(upstream.committed())))
        await reader.readuntil(b"data: x")
        writer.close()
        await eventually(lambda: upstream.closed)
        # Checked before the relay stops: stopping closes streams by itself.
        assert upstream.closed == 1 and not upstream.finished
    run(test)


def test_an_absolute_form_request_target_is_served():
    async def test(relay: Relay) -> None:
        upstream = Upstream([b"data: a\n\n"])
        token = relay.park(upstream.committed())
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(f"POST http://api.example/{token} HTTP/1.1\r\nhost: x\r\n"
                     f"content-length: 0\r\n\r\n".encode())
        assert b"data: a" in await read_response(reader)
        writer.close()
    run(test)


def test_header_bytes_pass_as_sent_and_a_head_that_cannot_be_written_still_closes():
    """aiohttp keeps undecodable header bytes as surrogates: they go out as
    they came. A head that cannot be written at all still closes its stream
    (and so settles its call), instead of leaving it open for good."""
    async def test(relay: Relay) -> None:
        upstream = Upstream([b"data: a\n\n"])
        stream = upstream.committed()
        stream.headers.append(("x-odd", b"caf\xe9".decode("utf-8", "surrogateescape")))
        assert b"x-odd: caf\xe9\r\n" in relay_head(stream)
        broken, ended = Upstream([b"data: a\n\n"]), []
        stream = broken.committed()
        stream.headers.append(("x-bad", "\ud800"))  # no bytes can stand for it

        async def settle() -> None:
            ended.append(True)
        stream.ended.append(settle)
        assert (await fetch(relay, relay.park(stream))).startswith(b"HTTP/1.1 502")
        await eventually(lambda: ended)
        assert broken.closed == 1
    run(test)
