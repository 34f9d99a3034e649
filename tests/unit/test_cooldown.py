"""Cooldown policy: hints win (even short ones), backoff grows and is bounded."""

from __future__ import annotations

import dataclasses

import pytest

from switchback.health.cooldown import CooldownPolicy, Strikes

POLICY = CooldownPolicy()
RANDS = [0.0, 0.25, 0.5, 0.999999]


@pytest.mark.parametrize(
    ("hint", "failures", "expected"),
    [
        (0.2, 1, 0.2),  # shorter than the floor: the provider knows best
        (0.0, 1, 0.0),  # 0 stays 0
        (0.2, 10, 0.2),  # a hint ignores the failure count
        (42.0, 3, 42.0),
        (300.0, 1, 300.0),
        (1000.0, 1, 300.0),  # the ceiling caps a hint
        (float("inf"), 1, 300.0),
        (-5.0, 1, 0.0),
    ],
)
def test_hint_wins_capped_by_ceiling(hint: float, failures: int, expected: float) -> None:
    for rand in RANDS:
        assert POLICY.duration(hint, failures, rand) == expected


@pytest.mark.parametrize(
    ("failures", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (9, 256.0), (10, 300.0)]
)
def test_backoff_doubles_from_floor(failures: int, expected: float) -> None:
    assert POLICY.duration(None, failures, 0.0) == expected


@pytest.mark.parametrize("failures", [0, -3])
def test_backoff_treats_no_count_as_first_failure(failures: int) -> None:
    assert POLICY.duration(None, failures, 0.0) == POLICY.floor


@pytest.mark.parametrize("failures", [20, 64, 65, 10_000, 10**9])
def test_backoff_bounded_by_ceiling(failures: int) -> None:
    for rand in RANDS:
        assert POLICY.duration(None, failures, rand) == POLICY.ceiling


@pytest.mark.parametrize("rand", RANDS)
def test_backoff_grows_per_failure(rand: float) -> None:
    durations = [POLICY.duration(None, n, rand) for n in range(1, 30)]
    assert durations == sorted(durations)
    assert durations[0] < durations[5]


@pytest.mark.parametrize("failures", range(1, 12))
def test_jitter_bounds(failures: int) -> None:
    base = POLICY.floor * 2 ** (failures - 1)
    for rand in RANDS:
        d = POLICY.duration(None, failures, rand)
        assert POLICY.floor <= d <= POLICY.ceiling
        assert base <= d <= base * (1 + POLICY.jitter) or d == POLICY.ceiling
    assert POLICY.duration(None, failures, 0.5) == min(base * 1.1, POLICY.ceiling)


def test_jitter_spreads_keys_that_failed_together() -> None:
    assert POLICY.duration(None, 3, 0.0) != POLICY.duration(None, 3, 0.9)
    assert CooldownPolicy(jitter=0).duration(None, 3, 0.9) == 4.0


def test_custom_policy() -> None:
    policy = CooldownPolicy(floor=2, ceiling=10, jitter=0)
    assert [policy.duration(None, n, 0.5) for n in range(1, 6)] == [2, 4, 8, 10, 10]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [(None, 3600.0), (0.0, 3600.0), (60.0, 3600.0), (7200.0, 7200.0), (86_400.0, 86_400.0)],
)
def test_long_duration(hint: float | None, expected: float) -> None:
    """Quota, billing, dead keys: the provider's reset if later, never capped by the ceiling."""
    assert POLICY.long_duration(hint) == expected


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        POLICY.floor = 5  # type: ignore[misc]


STRIKES = [
    # (strikes before, now, attempt started, count after or None)
    (Strikes(), 100.0, 99.0, 1),
    (Strikes(count=1, last=90.0), 100.0, 99.0, 2),  # inside the window: they add up
    (Strikes(count=5, last=30.0), 100.0, 99.0, 1),  # 70 s apart: forgotten
    (Strikes(count=1, last=90.0, reacted=95.0), 100.0, 94.0, None),  # began before the cooldown
    (Strikes(count=1, last=90.0, reacted=95.0), 100.0, 95.0, 2),  # began with it: news
]


@pytest.mark.parametrize(("strikes", "now", "started", "count"), STRIKES)
def test_strikes_decay_and_bursts_count_once(strikes, now, started, count) -> None:
    counted = POLICY.strike(strikes, now, started)
    assert (counted.count if counted else None) == count
    if counted:
        assert counted.last == now and counted.reacted == strikes.reacted
