"""The upstream client in-process against answers whose body breaks in ways
aiohttp's parser does not pass on to the body's reader: every read of the
body ends — with an error the engine counts as a transport failure — and
none waits past the connection or its read timeout."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import StreamReader, web

from support.loopserver import LoopServer, Script
from support.rawtls import RawTls
from switchback.engine import bounded
from switchback.engine.upstream import TRANSPORT_ERRORS, Upstream

HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
BROKEN = b"ZZZ\r\nnot a chunk\r\n"
CHUNK = b'data: {"choices": []}\n\n'
GOOD = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
HANG = 30  # seconds: far past every read timeout below; reaching it means a hang


async def read_all(upstream: Upstream, url: str, read_timeout: float,
                   then: float | None = None) -> list[bytes]:
    """The whole body; with `then`, the read timeout becomes `then` after
    the first read, as the gate does once a stream shows its first event."""
    reply = await upstream.send(url, [("content-type", "application/json")], b"{}",
                                read_timeout=read_timeout)
    try:
        chunks = []
        async for chunk in reply.chunks():
            if then is not None and not chunks:
                reply.keep_waiting(then)
            chunks.append(chunk)
        return chunks
    finally:
        reply.close()


def outcome(server: RawTls, ca, read_timeout: float, then: float | None = None
            ) -> BaseException | list[bytes]:
    """What reading the whole answer came to: its chunks, or what it raised."""
    async def go() -> BaseException | list[bytes]:
        upstream = Upstream(insecure=False, cafile=str(ca), capath=None, modes=["regular"],
                            connect_timeout=5)
        try:
            return await asyncio.wait_for(
                read_all(upstream, server.base_url + "/chat/completions", read_timeout, then),
                HANG)
        except asyncio.TimeoutError as exc:
            if isinstance(exc.__context__, asyncio.CancelledError):
                return AssertionError(f"still waiting on the provider after {HANG}s")
            return exc
        except Exception as exc:  # noqa: BLE001 — the test judges it
            return exc
        finally:
            await upstream.aclose()
    return asyncio.run(go())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pieces", [[HEAD, BROKEN], [HEAD, GOOD, BROKEN]],
                         ids=["at the head", "after an event"])
def test_a_garbage_chunk_then_close_fails_the_read_at_once(server_cert, pieces):
    # The head comes in a read of its own, the garbage in the next: aiohttp
    # hands out the body's reader, then fails the connection behind its back.
    # A read timeout longer than the test may wait: only the connection's
    # loss can end this read in time.
    with RawTls(server_cert, pieces) as server:
        result = outcome(server, server_cert.ca, read_timeout=HANG * 4)
    assert isinstance(result, TRANSPORT_ERRORS), result
    assert not isinstance(result, asyncio.TimeoutError), result
    assert server.requests == 1


@pytest.mark.timeout(120)
def test_a_garbage_chunk_from_a_provider_that_then_goes_silent_ends_in_its_read_timeout(
        server_cert):
    # The provider neither closes nor answers TLS's close: the connection is
    # not even lost. The read timeout is all that is left to end the wait.
    with RawTls(server_cert, [HEAD, BROKEN], hold_open=True) as server:
        result = outcome(server, server_cert.ca, read_timeout=1)
    assert isinstance(result, TRANSPORT_ERRORS), result
    assert server.requests == 1


@pytest.mark.timeout(120)
def test_garbage_then_silence_after_the_first_event_ends_in_the_idle_timeout(server_cert):
    # Read under a first-byte timeout longer than the test may wait; after
    # the first event the idle one applies, and so must the watch.
    with RawTls(server_cert, [HEAD, GOOD, BROKEN], hold_open=True) as server:
        result = outcome(server, server_cert.ca, read_timeout=HANG * 4, then=1)
    assert isinstance(result, TRANSPORT_ERRORS), result


@pytest.mark.timeout(120)
def test_an_answer_closed_midway_keeps_no_watch(server_cert):
    # A failover closes the answer it leaves: nothing of it may stay armed.
    async def go() -> None:
        upstream = Upstream(insecure=False, cafile=str(server_cert.ca), capath=None,
                            modes=["regular"], connect_timeout=5)
        try:
            reply = await upstream.send(server.base_url + "/chat/completions", [], b"{}",
                                        read_timeout=HANG * 4)
            protocol = reply.response.connection.protocol
            assert await asyncio.wait_for(anext(reply.chunks()), HANG) == CHUNK
            assert bounded._carrying.get(protocol) is not None  # watched while open
            reply.close()
            assert bounded._carrying.get(protocol, "unwatched") is None
        finally:
            await upstream.aclose()
    with RawTls(server_cert, [HEAD, GOOD], hold_open=True) as server:
        asyncio.run(go())


@pytest.mark.timeout(120)
def test_a_kept_alive_connection_carries_many_answers_and_keeps_no_watch():
    async def go() -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await asyncio.sleep(0.05)  # the head in a read of its own: the body is watched
            await response.write(CHUNK)
            await response.write_eof()
            return response
        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        upstream = Upstream(insecure=False, cafile=None, capath=None, modes=["regular"],
                            connect_timeout=5)
        try:
            for _ in range(20):
                chunks = await read_all(upstream, f"http://127.0.0.1:{port}/v1/chat/completions",
                                        read_timeout=30)
                assert b"".join(chunks) == CHUNK
            assert upstream._session is not None and upstream._session.connector is not None
            pooled = [protocol for idle in upstream._session.connector._conns.values()
                      for protocol, _ in idle]
            assert len(pooled) == 1  # one connection, reused for every answer
            # Registered once, and carrying nothing between answers.
            assert bounded._carrying.get(pooled[0], "unwatched") is None
        finally:
            await upstream.aclose()
            await runner.cleanup()
    asyncio.run(go())


@pytest.mark.timeout(300)
@pytest.mark.skipif(os.environ.get("AIOHTTP_NO_EXTENSIONS") == "1",
                    reason="already under the pure-Python parser")
def test_under_aiohttps_pure_python_parser_the_same_breaks_are_transport_errors():
    # Without its C extension aiohttp does fail the body, but with its own
    # HttpProcessingError: the engine must count that as a transport failure too.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider",
         "-k", "garbage"], cwd=Path(__file__).parents[2], capture_output=True, text=True,
        timeout=240, env={**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"},
        stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.timeout(120)
def test_a_body_that_ends_with_its_connection_is_whole_every_time(server_cert):
    """A body with neither a length nor chunks (`connection: close`) ends when
    the provider closes: that close is its end, not a failure — also when the
    close is already under way as the answer's head is read (a watch that
    took a closing connection for a failed one broke a third of these)."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_cert.cert, server_cert.key)

    async def go() -> list[BaseException | bytes]:
        upstream = Upstream(insecure=False, cafile=str(server_cert.ca), capath=None,
                            modes=["regular"], connect_timeout=5)
        async with LoopServer(lambda seen: Script.sse([CHUNK] * 3), tls) as server:
            url = server.base_url + "/chat/completions"
            try:
                return [await read_whole(upstream, url) for _ in range(30)]
            finally:
                await upstream.aclose()

    async def read_whole(upstream: Upstream, url: str) -> BaseException | bytes:
        try:
            return b"".join(await read_all(upstream, url, read_timeout=5))
        except TRANSPORT_ERRORS as exc:
            return exc

    results = asyncio.run(go())
    assert results == [CHUNK * 3] * 30


class Closing:
    """A connection whose close is under way: not connected any more, not
    failed, its loss (which ends a close-delimited body) still to come."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.closed = loop.create_future()

    def exception(self) -> BaseException | None:
        return None

    def is_connected(self) -> bool:
        return False


def test_a_closing_connection_is_not_a_failed_one():
    """Seen with a provider that closes (TLS close_notify) right after a body
    delimited by its close: the head was read while the close was under way,
    and the watch failed a body that was about to end whole (a third of
    such answers, in the big-event benchmark)."""
    async def go() -> None:
        loop = asyncio.get_running_loop()
        body = StreamReader(Closing(loop), 2 ** 16, loop=loop)
        body.feed_data(CHUNK)
        watch = bounded._Watch(SimpleNamespace(content=body), Closing(loop))
        assert watch.check() is True  # still to be read: the loss will end it
        assert body.exception() is None
    asyncio.run(go())
