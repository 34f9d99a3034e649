"""What an open stream holds, and that a hang-up gives it all back.

Hundreds of streams stay open at once for minutes, so what each one holds
is the proxy's memory. Measured with tracemalloc (deterministic), never as
time; scripts/bench_stream_memory.py prints RSS against a bare mitmproxy.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import tracemalloc
import weakref

from support.fakeprovider import chat_events, sse
from support.loopserver import LoopServer, Script
from switchback.engine.relay import Relay
from switchback.engine.upstream import Upstream
from test_relay import Upstream as FakeStream, eventually, request

STREAMS = 20
EVENTS = [sse(e) for e in chat_events("m", " ".join(["word"] * 40), usage=False)]


def test_an_open_upstream_stream_holds_a_few_kib_not_a_read_buffer_of_256(server_cert):
    """asyncio's TLS read buffer (256 KiB, zero-filled at connect) was most
    of an open stream's memory; both ends of each TLS connection here are
    in this process."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_cert.cert, server_cert.key)

    async def go() -> int:
        upstream = Upstream(insecure=False, cafile=str(server_cert.ca), capath=None, modes=(),
                            connect_timeout=5)
        async with LoopServer(lambda seen: Script.sse(EVENTS, pause=0.5), tls) as server:
            replies = [await upstream.send(f"{server.base_url}/chat/completions", [], b"{}", 5)]
            await anext(replies[0].chunks())  # the client made: caches, pools
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                replies += await asyncio.gather(*(
                    upstream.send(f"{server.base_url}/chat/completions", [], b"{}", 5)
                    for _ in range(STREAMS)))
                for reply in replies[1:]:
                    await anext(reply.chunks())
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
                for reply in replies:
                    reply.close()
                await upstream.aclose()
        return held // STREAMS

    assert asyncio.run(go()) < 128 << 10  # both ends: 2 × 256 KiB before


def test_a_client_hanging_up_leaves_nothing_of_its_stream_behind():
    async def go() -> None:
        relay = Relay()
        await relay.start()
        try:
            fake = FakeStream([b"data: x\n\n"] * 1000, pause=0.01)
            stream = fake.committed()
            gone = weakref.ref(stream)
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(request(relay.park(stream)))
            del stream
            await reader.readuntil(b"data: x")
            writer.close()
            await eventually(lambda: fake.closed and not relay._tasks)
            gc.collect()
            assert fake.closed == 1 and gone() is None and not relay._tasks
        finally:
            await relay.stop()
    asyncio.run(go())
