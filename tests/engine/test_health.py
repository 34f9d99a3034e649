"""Health state with an injected clock: cooldowns, backoff, bursts, and
stores kept apart so churn in one kind never evicts another."""

from __future__ import annotations

import asyncio

import pytest

from support.engine import Clock
from switchback.health.cooldown import CooldownPolicy
from switchback.health.hints import Hints
from switchback.state.conversations import Conversations
from switchback.state.cooldowns import Health, key_scope, model_scope
from switchback.state.protocol_memory import ProtocolMemory
from switchback.state.stores import MemoryStore, Stores
from switchback.health.verdict import Action, Cooldown, Scope, Verdict
from switchback.protocols.history import Turn
from switchback.vocabulary import Protocol, Reason

KEY, MODEL = key_scope("p", "#abc"), model_scope("p", "m")




@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(clock: Clock) -> Stores:
    return Stores.memory(clock, conversation_bytes=10_000, entries=1_000)


@pytest.fixture
def health(clock: Clock, stores: Stores) -> Health:
    return Health(stores.cooldowns, stores.strikes, stores.uses,
                  CooldownPolicy(floor=1, ceiling=300, long=3600, jitter=0, window=60),
                  clock, rand=lambda: 0.0)


def verdict(scope=Scope.KEY, wait=None, long=False, after=1, reason=Reason.RATE_LIMIT
            ) -> Verdict:
    return Verdict(Action.NEXT_KEY, reason, Cooldown(scope, long=long, after=after),
                   Hints(retry_after=wait))


def test_hint_shorter_than_floor_wins(health, clock):
    assert health.record(verdict(wait=0.3), KEY, MODEL) == 0.3
    assert health.cooling(KEY).until == pytest.approx(clock.now + 0.3)
    clock.now += 0.31
    assert health.cooling(KEY) is None


def test_ceiling_caps_a_hint(health):
    assert health.record(verdict(wait=10_000), KEY, MODEL) == 300


def test_backoff_grows_then_resets_on_success(health, clock):
    grows = []
    for _ in range(4):
        grows.append(health.record(verdict(scope=Scope.MODEL), KEY, MODEL, started=clock.now))
        clock.now += grows[-1]  # the next attempt comes once the cooldown is over
    assert grows == [1, 2, 4, 8]
    health.succeeded(KEY, MODEL)
    assert health.record(verdict(scope=Scope.MODEL), KEY, MODEL) == 1


def test_failures_outside_the_window_do_not_add_up(health, clock):
    for _ in range(5):
        assert health.record(verdict(scope=Scope.MODEL), KEY, MODEL, started=clock.now) == 1
        clock.now += 61


def test_a_burst_of_concurrent_failures_is_one_incident(health, clock):
    started = clock.now  # a thousand attempts in flight together
    clock.now += 30
    seconds = [health.record(verdict(scope=Scope.MODEL), KEY, MODEL, started=started)
               for _ in range(1000)]
    assert seconds[0] == 1 and seconds[1:] == [None] * 999
    clock.now += 1.5  # the cooldown is over; a new attempt fails: the backoff grows once
    assert health.record(verdict(scope=Scope.MODEL), KEY, MODEL, started=clock.now) == 2


def test_a_longer_hint_in_a_burst_still_counts(health, clock):
    started = clock.now - 1  # all three attempts were in flight when the first failed
    assert health.record(verdict(wait=5), KEY, MODEL, started=started) == 5
    assert health.record(verdict(wait=3), KEY, MODEL, started=started) is None
    assert health.record(verdict(wait=20), KEY, MODEL, started=started) == 20
    assert health.cooling(KEY).until == pytest.approx(clock.now + 20)


def test_ambiguous_error_needs_a_second_strike(health):
    assert health.record(verdict(scope=Scope.MODEL, after=2), KEY, MODEL) is None
    assert health.cooling(MODEL) is None
    assert health.record(verdict(scope=Scope.MODEL, after=2), KEY, MODEL) == 2
    assert health.cooling(MODEL) is not None


def test_quota_cools_long_and_scopes_stay_apart(health):
    assert health.record(verdict(long=True, wait=5, reason=Reason.QUOTA), KEY, MODEL) == 3600
    assert health.cooling(KEY).reason is Reason.QUOTA
    assert health.cooling(MODEL) is None
    assert health.cooling(key_scope("sibling", "#abc")) is None


def test_an_active_cooldown_survives_churn_in_every_other_kind(health, stores, clock):
    health.cool(KEY, 600, Reason.RATE_LIMIT)
    protocols = ProtocolMemory(stores.protocols)
    conversations = Conversations(stores.conversations, stores.affinity)
    for i in range(20_000):
        other = key_scope(f"p{i}", f"#{i:06x}")
        health.used(other)
        health.record(verdict(scope=Scope.MODEL, after=3), other, model_scope(f"p{i}", "m"))
        health.cool(model_scope(f"p{i}", f"m{i}"), 1, Reason.SERVER_ERROR)
        protocols.put(f"p{i}", "m", Protocol.CHAT, Protocol.RESPONSES)
        conversations.record(f"resp_{i}", Turn((("", {"role": "user", "content": "x" * 100}),),
                                               f"p{i}#k"))
        clock.now += 0.01
    assert health.cooling(KEY) is not None and health.cooling(KEY).reason is Reason.RATE_LIMIT
    clock.now += 600
    assert health.cooling(KEY) is None


def test_conversations_are_bounded_in_bytes_oldest_out_and_affinity_outlives_them(stores):
    conversations = Conversations(stores.conversations, stores.affinity)  # 10,000 bytes

    def turn(size: int) -> Turn:
        return Turn((("", {"role": "user", "content": "x" * size}),), "p#k1")

    def known(response_id: str) -> tuple:
        async def both():
            return (await conversations.turn(response_id),
                    await conversations.producer(response_id))
        return asyncio.run(both())

    for i in range(5):
        conversations.record(f"resp_{i}", turn(3000))
    assert stores.conversations.size <= 10_000
    assert known("resp_0") == (None, "p#k1")  # its items are gone, who made it is not
    assert known("resp_4") == (turn(3000), "p#k1")
    conversations.record("resp_huge", turn(20_000))
    assert known("resp_huge")[0] is None and known("resp_4")[0] == turn(3000)


def test_protocol_memory_is_per_client_protocol(stores):
    memory = ProtocolMemory(stores.protocols)
    memory.put("p", "m", Protocol.CHAT, Protocol.RESPONSES)
    assert memory.get("p", "m", Protocol.CHAT) is Protocol.RESPONSES
    assert memory.get("p", "m", Protocol.RESPONSES) is None


def test_entry_bounded_stores_evict_least_recently_used(clock):
    store = MemoryStore(3, clock)
    for i in range(10):
        store.put(i, i, 60)
    assert [k for k, _ in store.items()] == [7, 8, 9]


def test_a_spent_key_in_a_burst_still_cools_long(health, clock):
    started = clock.now - 1  # both attempts were in flight together
    assert health.record(verdict(), KEY, MODEL, started=started) == 1  # a 429: a second
    assert health.record(verdict(long=True, reason=Reason.QUOTA), KEY, MODEL,
                         started=started) == 3600  # then its quota is gone: an hour
    assert health.cooling(KEY).reason is Reason.QUOTA
