"""Shared state between replicas, against a real redis-server on loopback:
two links in one process play two replicas. What one learns the other knows
within a message's latency; nothing ever waits for Redis; a replica that lost
Redis keeps working and rejoins when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
import redis.asyncio as aioredis

from support.engine import until
from support.redisserver import RedisServer
from switchback.state.link import Link, shared_stores
from switchback.health.cooldown import Cooling
from switchback.state.cooldowns import Health, key_scope
from switchback.state.stores import Stores
from switchback.vocabulary import Reason

KEY = key_scope("p", "#abc123")


class Replica:
    def __init__(self, url: str, prefix: str) -> None:
        self.link = Link(url, prefix)
        self.stores = shared_stores(self.link, Stores.memory())
        self.health = Health(self.stores.cooldowns, self.stores.strikes, self.stores.uses)




@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path) as server:
        yield server


def run(coroutine):
    return asyncio.run(coroutine)


@contextlib.asynccontextmanager
async def replicas(url: str, prefix: str, count: int = 2):
    """`count` replicas on one Redis, started, and stopped afterwards."""
    started = [Replica(url, prefix) for _ in range(count)]
    for replica in started:
        await replica.link.start()
    try:
        yield started
    finally:
        for replica in started:
            await replica.link.stop()


def test_a_cooldown_on_one_replica_is_honoured_by_the_other(redis_server, request):
    async def go() -> float:
        async with replicas(redis_server.url, request.node.name) as (a, b):
            assert a.link.healthy and b.link.healthy
            a.health.cool(KEY, 30, Reason.RATE_LIMIT)
            seconds = await until(lambda: b.health.cooling(KEY) is not None)
            assert b.health.cooling(KEY).reason is Reason.RATE_LIMIT
            a.health.used(KEY)
            await until(lambda: b.stores.uses.get(KEY) is not None)  # keys rotate together
            return seconds
    seconds = run(go())
    print(f"agreement: {seconds * 1000:.1f} ms")


def test_a_replica_that_joins_later_reads_what_the_others_learned(redis_server, request):
    async def go() -> None:
        a = Replica(redis_server.url, request.node.name)
        await a.link.start()
        a.health.cool(KEY, 30, Reason.QUOTA)
        a.stores.conversations.put("resp_1", '{"by":"p#k","items":[]}', 60)
        await until(lambda: not a.link._queue)
        await asyncio.sleep(0.05)
        b = Replica(redis_server.url, request.node.name)
        await b.link.start()
        try:
            assert b.health.cooling(KEY).reason is Reason.QUOTA  # mirrored: loaded at join
            assert b.stores.conversations.get("resp_1") is None  # not mirrored ...
            assert await b.stores.conversations.fetch("resp_1") == '{"by":"p#k","items":[]}'
        finally:
            await a.link.stop()
            await b.link.stop()
    run(go())


def test_prefixes_keep_deployments_apart_and_keys_hold_no_secret(redis_server, request):
    async def go() -> list[str]:
        a, other = Replica(redis_server.url, "team-a"), Replica(redis_server.url, "team-b")
        await a.link.start()
        await other.link.start()
        try:
            a.health.cool(KEY, 30, Reason.RATE_LIMIT)
            await asyncio.sleep(0.2)
            assert other.health.cooling(KEY) is None
            client = aioredis.from_url(redis_server.url, decode_responses=True)
            names = [name async for name in client.scan_iter("*")]
            ttls = [await client.pttl(name) for name in names]
            await client.aclose()
            assert all(ttl > 0 for ttl in ttls)  # every entry carries a TTL
            return names
        finally:
            await a.link.stop()
            await other.link.stop()
    names = run(go())
    assert names == ['team-a:cooldowns:["key","p","#abc123"]']


def test_redis_away_at_start_then_back(tmp_path, request, caplog):
    server = RedisServer(tmp_path)  # not started yet

    async def go() -> None:
        a = Replica(server.url, request.node.name)
        await a.link.start()  # returns at once: Redis refuses, the replica runs alone
        assert not a.link.healthy
        a.health.cool(KEY, 60, Reason.RATE_LIMIT)  # learned while alone
        assert a.health.cooling(KEY) is not None
        server.start()
        try:
            await until(lambda: a.link.healthy, seconds=10)
            b = Replica(server.url, request.node.name)
            await b.link.start()
            assert b.health.cooling(KEY) is not None  # written through on rejoining
            await b.link.stop()
        finally:
            await a.link.stop()
            server.stop()
    with caplog.at_level(logging.WARNING):
        run(go())
    warnings = [r for r in caplog.records if "not reachable at start" in r.getMessage()]
    assert len(warnings) == 1


def test_redis_lost_mid_run_costs_no_call_anything_and_the_replica_rejoins(redis_server,
                                                                          request):
    async def go() -> None:
        async with replicas(redis_server.url, request.node.name) as (a, b):
            redis_server.stop()
            await until(lambda: not a.link.healthy and not b.link.healthy)
            asked = []
            a.link._client.pipeline = lambda *args, **kwargs: asked.append(args)  # a spy
            for n in range(200):  # the hot path: reads, writes, a fetch
                assert a.health.cooling(KEY) is None
                a.health.used(KEY)
                assert await a.stores.conversations.fetch(f"resp_{n}") is None
            assert asked == []  # with the breaker open, nothing waits on Redis
            a.health.cool(KEY, 60, Reason.OVERLOADED)  # learned while Redis is away
            redis_server.start()
            await until(lambda: a.link.healthy and b.link.healthy, seconds=10)
            await until(lambda: b.health.cooling(KEY) is not None)
            assert b.health.cooling(KEY).reason is Reason.OVERLOADED
    run(go())


def test_a_reset_on_one_replica_clears_them_all(redis_server, request):
    async def go() -> None:
        async with replicas(redis_server.url, request.node.name) as (a, b):
            a.health.cool(KEY, 30, Reason.RATE_LIMIT)
            await until(lambda: b.health.cooling(KEY) is not None)
            b.stores.clear()
            await until(lambda: a.health.cooling(KEY) is None)
    run(go())


def test_the_later_cooldown_wins_when_replicas_disagree():
    later, sooner = Cooling(2000.0, Reason.QUOTA), Cooling(1000.0, Reason.RATE_LIMIT)
    from switchback.state.link import CODECS
    newer = CODECS["cooldowns"].newer
    assert newer(sooner, later) is later and newer(later, sooner) is later
