"""Many concurrent streams through a real mitmdump on a healthy provider: every
stream arrives whole, nothing fails over, nothing cools down.

Marked `load`. CI runs SWITCHBACK_LOAD_STREAMS=300 (the default); the issue's
figure is 1,000: `SWITCHBACK_LOAD_STREAMS=1000 scripts/test -m load`.
Loopback only; every stream and server stops with the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.request

import httpx
import pytest

from support.fakeprovider import chat_events, sse
from support.loopserver import LoopServer, Script, Seen
from support.proxy import free_port

STREAMS = int(os.environ.get("SWITCHBACK_LOAD_STREAMS", "300"))
TEXT = " ".join(["word"] * 18)
EVENTS = [sse(event) for event in chat_events("m", TEXT, usage=False)]
# What the provider sends when asked for usage, as Switchback asks for it
WITH_USAGE = [sse(event) for event in chat_events("m", TEXT, usage=True)]


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as answer:
        return json.load(answer)


@pytest.mark.load
def test_concurrent_streams_on_a_healthy_provider_never_fail_over(proxy, fakes, server_cert):
    backup = fakes("backup")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_cert.cert, server_cert.key)
    status_port = free_port()

    async def go() -> list[bytes]:
        # Each stream lasts about a second, so all of them are open at once.
        def handler(seen: Seen) -> Script:
            events = WITH_USAGE if b'"include_usage":true' in seen.body else EVENTS
            return Script.sse(events, pause=1 / len(events))
        async with LoopServer(handler, tls) as primary:
            running = proxy(f"""
providers:
  primary: {{base_url: "{primary.base_url}"}}
  backup: {{base_url: "{backup.base_url}", keys: [sk-backup-load-0000]}}
fallbacks: {{"*": [backup/*]}}
""", extra=("--set", f"switchback_status_port={status_port}"))
            context = ssl.create_default_context(cafile=str(running.ca))
            limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
            async with httpx.AsyncClient(proxy=running.url, verify=context, trust_env=False,
                                         limits=limits, timeout=120) as client:
                async def one(n: int) -> bytes:
                    body = {"model": "m", "stream": True,
                            "messages": [{"role": "user", "content": f"stream {n}"}]}
                    answer = await client.post(primary.base_url + "/chat/completions",
                                               json=body, headers={"authorization": "Bearer sk-c"})
                    return answer.content
                bodies = await asyncio.gather(*(one(n) for n in range(STREAMS)))
            assert len(primary.seen) == STREAMS
            return bodies

    bodies = asyncio.run(go())
    assert all(body == b"".join(EVENTS) for body in bodies)  # the usage asked for, hidden
    state = status(status_port)
    assert state["cooldowns"] == []
    assert state["counters"]["switchback_failovers"] == 0
    assert state["counters"]["switchback_calls"] == STREAMS
    assert state["counters"]["switchback_attempts"] == STREAMS
    assert state["counters"]["switchback_tokens"] == STREAMS * 8  # each stream's usage, read
    assert backup.count() == 0
