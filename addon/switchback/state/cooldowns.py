"""Cooldowns per (provider, key) and per (provider, model), with the
failure strikes behind their backoff and when each key was last used.

The policy (how long) is pure and lives in `health.cooldown`; this is the
memory of it, kept in `Store`s, one per kind. Keys are fingerprints,
provider and model names, never secrets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace

from ..health.cooldown import Cooling, CooldownPolicy, Strikes
from ..health.verdict import Scope, Verdict
from ..vocabulary import Reason
from .stores import Store

Clock = Callable[[], float]
ScopeKey = tuple[str, str, str]  # (kind, provider, key fingerprint or model)


def key_scope(provider: str, fingerprint: str) -> ScopeKey:
    return (Scope.KEY.value, provider, fingerprint)


def model_scope(provider: str, model: str) -> ScopeKey:
    return (Scope.MODEL.value, provider, model)


class Health:
    """Cooldowns with backoff memory; the policy decides how long."""

    def __init__(self, cooldowns: Store, strikes: Store, uses: Store,
                 policy: CooldownPolicy = CooldownPolicy(), clock: Clock = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self._cooldowns, self._strikes, self._uses = cooldowns, strikes, uses
        self.policy, self.clock, self.rand = policy, clock, rand

    def cooling(self, scope: ScopeKey) -> Cooling | None:
        entry = self._cooldowns.get(scope)
        return entry if entry is not None and entry.until > self.clock() else None

    def record(self, verdict: Verdict, key: ScopeKey, model: ScopeKey,
               started: float | None = None) -> float | None:
        """Apply a failure verdict's cooldown for an attempt begun at `started`;
        returns the cooldown in seconds, or None when the failure earns none
        (yet, or any more: its burst was already answered)."""
        cooldown = verdict.cooldown
        if cooldown is None:
            return None
        scope = key if cooldown.scope is Scope.KEY else model
        now = self.clock()
        strikes = self._strikes.get(scope) or Strikes()
        counted = self.policy.strike(strikes, now, now if started is None else started)
        hint = verdict.hints.wait
        if counted is None:
            # Its burst was answered already. Only facts lengthen that: the
            # provider's hint, or a verdict that the key is spent or dead.
            if cooldown.long:
                seconds = self.policy.long_duration(hint)
            elif hint is not None:
                seconds = self.policy.duration(hint, 1, 0.0)
            else:
                return None
            current = self.cooling(scope)
            if current is not None and now + seconds <= current.until:
                return None
            self.cool(scope, seconds, verdict.reason, verdict.no_retry)
            return seconds
        if cooldown.long:
            seconds = self.policy.long_duration(hint)
        elif hint is None and counted.count < cooldown.after:
            seconds = None
        else:
            seconds = self.policy.duration(hint, counted.count, self.rand())
        if seconds:
            self.cool(scope, seconds, verdict.reason, verdict.no_retry)
            counted = replace(counted, reacted=now)
        self._strikes.put(scope, counted, self.policy.window)
        return seconds

    def cool(self, scope: ScopeKey, seconds: float, reason: Reason,
             no_retry: bool = False) -> None:
        self._cooldowns.put(scope, Cooling(self.clock() + seconds, reason, no_retry), seconds)

    def used(self, scope: ScopeKey) -> None:
        self._uses.put(scope, self.clock(), 86_400)

    def least_recently_used(self, scopes: list[ScopeKey]) -> list[ScopeKey]:
        """Scopes ordered for rotation: never used first, then oldest use."""
        return sorted(scopes, key=lambda s: self._uses.get(s) or 0.0)

    def succeeded(self, *scopes: ScopeKey) -> None:
        """A success resets the backoff of every scope that served it (a
        shared store's near cache knows every replica's strikes: nothing to
        tell anybody when it has none)."""
        for scope in scopes:
            if self._strikes.get(scope) is not None:
                self._strikes.delete(scope)

    def cooldowns(self) -> list[tuple[ScopeKey, Cooling]]:
        now = self.clock()
        return [(k, v) for k, v in self._cooldowns.items() if v.until > now]
