"""Cooldown policy: how long a key or provider sits out after a failure, and
which failures count towards it.

Pure and clock-free: the caller passes the provider's hint (from `hints`), the
scope's recent strikes, the time and a random number, and adds the result to
its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..vocabulary import Reason


@dataclass(frozen=True)
class Cooling:
    """A scope that must not be used until `until` (epoch seconds)."""

    until: float
    reason: Reason
    no_retry: bool = False
    # When one live call may try the scope again before `until` (epoch seconds):
    # only a cooldown on Switchback's own backoff has one, never a provider's hint.
    probe_at: float | None = None

    def probe_due(self, now: float) -> bool:
        return self.probe_at is not None and self.probe_at <= now < self.until


@dataclass(frozen=True)
class Strikes:
    """Recent failures of one scope (a key, or a provider's model)."""

    count: int = 0
    last: float = 0.0  # when the latest counted failure happened
    reacted: float = 0.0  # when the latest cooldown of this scope began


@dataclass(frozen=True)
class CooldownPolicy:
    """Seconds: `floor` is the first backoff, `ceiling` caps every cooldown
    except the long one, `long` is for quota, billing and dead keys, `jitter`
    is the largest fraction added to a backoff, and failures further apart
    than `window` do not add up. A cooldown on the policy's own backoff (no
    hint) is `probe`d that long after its failure (0: never)."""

    floor: float = 1.0
    ceiling: float = 300.0
    long: float = 3600.0
    jitter: float = 0.2
    window: float = 60.0
    probe: float = 10.0

    def probe_at(self, now: float, seconds: float, hinted: bool, long: bool) -> float | None:
        """When a cooldown of `seconds` begun `now` may be probed: never when the
        provider said how long (its hint is never probed early), nor for a
        spent or dead key, nor when it ends before a probe would be due."""
        if hinted or long or not self.probe or self.probe >= seconds:
            return None
        return now + self.probe

    def strike(self, strikes: Strikes, now: float, started: float) -> Strikes | None:
        """`strikes` after one more failure, of an attempt begun at `started`.

        None when the failure is no news: its attempt began before the
        scope's latest cooldown, so it belongs to the burst that cooldown
        already answered — a thousand streams that failed together are one
        incident, not a thousand doublings of the backoff.
        """
        if started < strikes.reacted:
            return None
        fresh = now - strikes.last > self.window
        return replace(strikes, count=1 if fresh else strikes.count + 1, last=now)

    def duration(self, hint: float | None, failures: int, rand: float) -> float:
        """Cooldown after the `failures`-th failure in the window (1 for the first).

        The provider knows its own limits, so its hint wins even below `floor`
        (0 stays 0); only `ceiling` caps it. Without one, back off exponentially
        from `floor`, stretched by up to `jitter` (`rand` in [0, 1)) so keys that
        failed together do not all come back at once.
        """
        if hint is not None:
            return min(max(hint, 0.0), self.ceiling)
        doublings = min(max(failures, 1) - 1, 64)  # 2**64 s is past any ceiling; no overflow
        return min(self.floor * 2.0**doublings * (1 + self.jitter * rand), self.ceiling)

    def long_duration(self, hint: float | None) -> float:
        """Cooldown for a spent quota, billing trouble or a dead key: until the
        provider's reset when it says one, but never less than `long`."""
        return self.long if hint is None else max(hint, self.long)
