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
from typing import NamedTuple

from ..health.cooldown import Cooling, CooldownPolicy, Strikes
from ..health.verdict import Scope, Verdict
from ..vocabulary import Reason
from .stores import MemoryStore, Store

Clock = Callable[[], float]
# (kind, provider, key fingerprint or model), or (kind, provider, fingerprint, model)
ScopeKey = tuple[str, ...]


def key_scope(provider: str, fingerprint: str) -> ScopeKey:
    return (Scope.KEY.value, provider, fingerprint)


def model_scope(provider: str, model: str) -> ScopeKey:
    return (Scope.MODEL.value, provider, model)


def key_model_scope(provider: str, fingerprint: str, model: str) -> ScopeKey:
    return (Scope.KEY_MODEL.value, provider, fingerprint, model)


class Scopes(NamedTuple):
    """The three scopes one candidate (provider, key, model) answers to. A
    named tuple: built for every candidate a call looks at, so it is cheap."""

    key: ScopeKey
    model: ScopeKey
    key_model: ScopeKey

    @classmethod
    def of(cls, provider: str, fingerprint: str, model: str) -> Scopes:
        return cls((Scope.KEY.value, provider, fingerprint), (Scope.MODEL.value, provider, model),
                   (Scope.KEY_MODEL.value, provider, fingerprint, model))

    def named(self, scope: Scope) -> ScopeKey:
        """The scope a cooldown names."""
        return self.key if scope is Scope.KEY else self.model if scope is Scope.MODEL \
            else self.key_model


class Health:
    """Cooldowns with backoff memory; the policy decides how long."""

    def __init__(self, cooldowns: Store, strikes: Store, uses: Store,
                 policy: CooldownPolicy = CooldownPolicy(), clock: Clock = time.time,
                 rand: Callable[[], float] = random.random, probes: Store | None = None) -> None:
        self._cooldowns, self._strikes, self._uses = cooldowns, strikes, uses
        self._probes = probes if probes is not None else MemoryStore(clock=clock)
        self.policy, self.clock, self.rand = policy, clock, rand

    def cooling(self, scope: ScopeKey) -> Cooling | None:
        entry = self._cooldowns.get(scope)
        return entry if entry is not None and entry.until > self.clock() else None

    def cooling_of(self, provider: str, fingerprint: str, model: str
                   ) -> list[tuple[ScopeKey, Cooling]]:
        """The scopes of one candidate that are cooling — looked up only when
        anything cools at all: the common call finds nothing to look up."""
        if not len(self._cooldowns):
            return []
        return [(scope, c) for scope in Scopes.of(provider, fingerprint, model)
                if (c := self.cooling(scope)) is not None]

    def record(self, verdict: Verdict, key: ScopeKey, model: ScopeKey,
               started: float | None = None, key_model: ScopeKey | None = None
               ) -> float | None:
        """Apply a failure verdict's cooldown to the scope it names — the key,
        the model, or the key for that model (without `key_model`, the key) —
        for an attempt begun at `started`; returns the cooldown in seconds, or
        None when the failure earns none (yet, or any more: its burst was
        already answered)."""
        cooldown = verdict.cooldown
        if cooldown is None:
            return None
        scope = {Scope.KEY: key, Scope.MODEL: model,
                 Scope.KEY_MODEL: key_model or key}[cooldown.scope]
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
            self.cool(scope, seconds, verdict.reason, verdict.no_retry,
                      self.policy.probe_at(now, seconds, hint is not None, cooldown.long))
            counted = replace(counted, reacted=now)
        self._strikes.put(scope, counted, self.policy.window)
        return seconds

    def cool(self, scope: ScopeKey, seconds: float, reason: Reason,
             no_retry: bool = False, probe_at: float | None = None) -> None:
        self._cooldowns.put(scope, Cooling(self.clock() + seconds, reason, no_retry, probe_at),
                            seconds)

    def strikes(self, scope: ScopeKey) -> Strikes | None:
        return self._strikes.get(scope)

    def failed_recently(self, scope: ScopeKey) -> bool:
        """More than one failure of `scope` counted within the window: the
        latest was not its first."""
        strikes = self._strikes.get(scope)
        return strikes is not None and strikes.count > 1

    # probes: one live call tries a scope cooling on our own backoff

    def probing(self, scope: ScopeKey) -> bool:
        """A probe of `scope` is under way (here or, shared, on any replica)."""
        return self._probes.get(scope) is not None

    async def claim_probe(self, scopes: list[ScopeKey]) -> bool:
        """Claim the probe of every scope in `scopes` (each due): True when
        this call may try them — one at a time per scope, and with shared
        state one per probe interval across replicas."""
        ttl = max(self.policy.probe, 1.0)
        claimed: list[ScopeKey] = []
        for scope in scopes:
            if not await self._probes.claim(scope, self.clock(), ttl):
                for mine in claimed:  # all or none: another probe holds one of them
                    self._probes.delete(mine)
                return False
            claimed.append(scope)
        return True

    def release_probe(self, scopes: list[ScopeKey]) -> None:
        """A probe ended without recovering: the failure it recorded set the
        next probe's time, so another call may claim that one."""
        for scope in scopes:
            if self._probes.get(scope) is not None:
                self._probes.delete(scope)

    def recovered(self, scopes: list[ScopeKey]) -> None:
        """A probe served: the scopes it tried are well again, at once (a
        provider's own hint, if one came meanwhile, still stands)."""
        for scope in scopes:
            cooling = self._cooldowns.get(scope)
            if cooling is not None and cooling.probe_at is not None:
                self._cooldowns.delete(scope)
            if self._probes.get(scope) is not None:
                self._probes.delete(scope)

    def probes(self) -> list[tuple[ScopeKey, float]]:
        return list(self._probes.items())

    def used(self, scope: ScopeKey) -> None:
        self._uses.put(scope, self.clock(), 86_400)

    def least_recently_used(self, scopes: list[ScopeKey]) -> list[ScopeKey]:
        """Scopes ordered for rotation: never used first, then oldest use."""
        return sorted(scopes, key=lambda s: self._uses.get(s) or 0.0)

    def succeeded(self, *scopes: ScopeKey) -> None:
        """A success resets the backoff of every scope that served it (a
        shared store's near cache knows every replica's strikes: nothing to
        tell anybody when it has none)."""
        if not len(self._strikes):
            return
        for scope in scopes:
            if self._strikes.get(scope) is not None:
                self._strikes.delete(scope)

    def cooldowns(self) -> list[tuple[ScopeKey, Cooling]]:
        now = self.clock()
        return [(k, v) for k, v in self._cooldowns.items() if v.until > now]
