"""Probes with shared state, against a real redis-server on loopback (two
links in one process play two replicas): one probe per scope per probe
interval across replicas, not one per replica; a recovery on one replica
clears the scope on the other; and /status shows cooling, probing and the
next probe."""

from __future__ import annotations

import asyncio
import time

from support.engine import Clock, until
from support.redisserver import RedisServer
from switchback.health.cooldown import CooldownPolicy
from switchback.shell.metrics import Metrics
from switchback.shell.status import status_document
from switchback.providers import ProviderTable
from switchback.state.cooldowns import Health, model_scope
from switchback.state.learned import Learned
from switchback.state.link import Link, shared_stores
from switchback.state.stores import Stores
from switchback.vocabulary import Reason

SCOPE = model_scope("primary", "gpt-4o")




def test_one_probe_per_scope_across_replicas(tmp_path, request):
    async def go() -> None:
        with RedisServer(tmp_path) as server:
            links = [Link(server.url, request.node.name) for _ in range(3)]
            healths = []
            for link in links:
                stores = shared_stores(link, Stores.memory())
                healths.append(Health(stores.cooldowns, stores.strikes, stores.uses,
                                      CooldownPolicy(probe=10), probes=stores.probes))
                await link.start()
            try:
                a, b, c = healths
                a.cool(SCOPE, 60, Reason.SERVER_ERROR, probe_at=time.time() - 1)
                await until(lambda: c.cooling(SCOPE) is not None)
                # All three find the probe due at once: exactly one gets it.
                got = await asyncio.gather(*(h.claim_probe([SCOPE]) for h in healths))
                assert sorted(got) == [False, False, True]
                assert not await b.claim_probe([SCOPE])  # still taken
                winner = healths[got.index(True)]
                await until(lambda: all(h.probing(SCOPE) for h in healths))
                winner.recovered([SCOPE])  # it served: clear everywhere
                await until(lambda: all(h.cooling(SCOPE) is None and not h.probing(SCOPE)
                                        for h in healths))
            finally:
                for link in links:
                    await link.stop()
    asyncio.run(go())


def test_status_shows_cooling_probing_and_the_next_probe():
    clock = Clock()
    learned = Learned.over(Stores.memory(clock), CooldownPolicy(probe=10), clock=clock)
    health = learned.health
    health.cool(SCOPE, 40, Reason.OVERLOADED, probe_at=clock() + 10)
    health.cool(("key_model", "primary", "#abc123", "gpt-4o"), 20, Reason.RATE_LIMIT)

    def rows() -> list[dict]:
        return status_document(ProviderTable({}), set(), learned, Metrics(),
                               {"backend": "memory", "healthy": True})["cooldowns"]
    limited, down = rows()
    assert limited == {"scope": "key_model", "provider": "primary", "key": "#abc123",
                       "model": "gpt-4o", "remaining_s": 20, "reason": "rate limit",
                       "state": "cooling", "next_probe_s": None}
    assert down["state"] == "cooling" and down["next_probe_s"] == 10
    clock.advance(11)
    assert asyncio.run(health.claim_probe([SCOPE]))
    assert rows()[1]["state"] == "probing" and rows()[1]["next_probe_s"] is None
