"""The dispatcher in-process, with an injected clock and httpx's
MockTransport: rotation, proactive cooldown, exhaustion, protocol switches."""

from __future__ import annotations

import asyncio
import json

import httpx

from switchback.config import parse_config
from switchback.dispatch import Answer, Dispatcher
from switchback.providers import ProviderTable
from switchback.recognise import fingerprint, recognise
from switchback.state import Health, MemoryStore, key_scope


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


CONFIG = """
providers:
  p: {base_url: "https://localhost:9001/v1", keys: [k1, k2]}
"""


def dispatcher(clock: Clock, handler) -> Dispatcher:
    config = parse_config(CONFIG, "t.yaml", {})
    table = ProviderTable(config.providers)
    health = Health(MemoryStore(clock), config.cooldown, clock, rand=lambda: 0.0)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Dispatcher(client, config, table, health, clock)


def run_calls(d: Dispatcher, n: int) -> list[Answer]:
    table = d.table
    raw = json.dumps({"model": "m", "messages": []}).encode()
    call = recognise("POST", "https://localhost:9001/v1/chat/completions", [], raw, table)

    async def go():
        return [(await d.run(call)).delivery for _ in range(n)]
    return asyncio.run(go())


def test_keys_rotate_least_recently_used():
    clock = Clock()
    used = []

    def handler(request: httpx.Request) -> httpx.Response:
        used.append(request.headers["authorization"])
        clock.now += 1
        return httpx.Response(200, json={"choices": []})
    run_calls(dispatcher(clock, handler), 4)
    assert used == ["Bearer k1", "Bearer k2", "Bearer k1", "Bearer k2"]


def test_success_with_remaining_zero_puts_the_key_aside():
    clock = Clock()
    used = []

    def handler(request: httpx.Request) -> httpx.Response:
        used.append(request.headers["authorization"])
        clock.now += 1
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"} \
            if request.headers["authorization"] == "Bearer k1" else {}
        return httpx.Response(200, json={"choices": []}, headers=headers)
    d = dispatcher(clock, handler)
    run_calls(d, 3)
    # k1 emptied its bucket on the first call: the next two go to k2 without a 429.
    assert used == ["Bearer k1", "Bearer k2", "Bearer k2"]
    assert d.health.cooling(key_scope("p", fingerprint("k1"))).reason == "remaining 0"


def test_a_429_moves_to_the_next_key_and_exhaustion_says_when():
    clock = Clock()
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"retry-after": "30"},
                              json={"error": {"message": "Rate limit reached"}})
    d = dispatcher(clock, handler)
    answer = run_calls(d, 1)[0]
    assert answer.status == 429
    assert dict(answer.headers)["retry-after"] == "30"
    assert dict(answer.headers)["retry-after-ms"] == "30000"
    for key in ("k1", "k2"):
        assert d.health.cooling(key_scope("p", fingerprint(key))) is not None


def test_a_protocol_switch_applies_to_the_providers_other_keys():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["authorization"]))
        if request.url.path.endswith("/chat/completions"):
            return httpx.Response(404, json={"error": {"code": "unknown_url",
                                                       "message": "Unknown request URL"}})
        if request.headers["authorization"] == "Bearer k1":
            return httpx.Response(429, json={"error": {"message": "Rate limit reached"}})
        return httpx.Response(200, json={"id": "resp_1", "object": "response", "output": []})
    run_calls(dispatcher(Clock(), handler), 1)
    assert seen == [("/v1/chat/completions", "Bearer k1"), ("/v1/responses", "Bearer k1"),
                    ("/v1/responses", "Bearer k2")]
