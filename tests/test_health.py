"""Health state and the dispatcher's use of it, with an injected clock and
httpx's MockTransport: no sockets, no sleeping."""

from __future__ import annotations


import pytest

from switchback.cooldown import CooldownPolicy
from switchback.hints import Hints
from switchback.state import Health, MemoryStore, key_scope, model_scope
from switchback.verdict import Action, Cooldown, Scope, Verdict

KEY, MODEL = key_scope("p", "#abc"), model_scope("p", "m")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health(MemoryStore(clock), CooldownPolicy(floor=1, ceiling=300, long=3600, jitter=0),
                  clock, rand=lambda: 0.0)


def verdict(scope=Scope.KEY, wait=None, long=False, after=1, reason="rate limit") -> Verdict:
    return Verdict(Action.NEXT_KEY, reason, Cooldown(scope, long=long, after=after),
                   Hints(retry_after=wait))


def test_hint_shorter_than_floor_wins(health, clock):
    assert health.record(verdict(wait=0.3), KEY, MODEL) == 0.3
    assert health.cooling(KEY).until == pytest.approx(clock.now + 0.3)
    clock.now += 0.31
    assert health.cooling(KEY) is None


def test_ceiling_caps_a_hint(health):
    assert health.record(verdict(wait=10_000), KEY, MODEL) == 300


def test_backoff_grows_then_resets_on_success(health):
    grows = [health.record(verdict(scope=Scope.MODEL), KEY, MODEL) for _ in range(4)]
    assert grows == [1, 2, 4, 8]
    health.succeeded(KEY, MODEL)
    assert health.record(verdict(scope=Scope.MODEL), KEY, MODEL) == 1


def test_ambiguous_error_needs_a_second_strike(health):
    assert health.record(verdict(scope=Scope.MODEL, after=2), KEY, MODEL) is None
    assert health.cooling(MODEL) is None
    assert health.record(verdict(scope=Scope.MODEL, after=2), KEY, MODEL) == 2
    assert health.cooling(MODEL) is not None


def test_quota_cools_long_and_scopes_stay_apart(health):
    assert health.record(verdict(long=True, wait=5, reason="quota"), KEY, MODEL) == 3600
    assert health.cooling(KEY).reason == "quota"
    assert health.cooling(MODEL) is None
    assert health.cooling(key_scope("sibling", "#abc")) is None


def test_memory_store_is_bounded(clock):
    store = MemoryStore(clock, maxsize=3)
    for i in range(10):
        store.put(i, i, 60)
    assert len(list(store.items())) == 3
