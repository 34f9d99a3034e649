"""Health state: cooldowns per (provider, key) and per (provider, model),
the protocol that serves where the client's own endpoint is missing, and
the Responses conversations Switchback carries.

Callers speak to these classes; they speak to `Store`s (see `stores`), one
per kind of state. Keys here are fingerprints, never secrets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..protocols.history import Turn
from ..vocabulary import Protocol, Reason
from .cooldown import CooldownPolicy, Strikes
from .stores import Store
from .verdict import Scope, Verdict

Clock = Callable[[], float]
ScopeKey = tuple[str, str, str]  # (kind, provider, key fingerprint or model)


@dataclass(frozen=True)
class Cooling:
    """A scope that must not be used until `until` (epoch seconds)."""

    until: float
    reason: Reason
    no_retry: bool = False


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


class ProtocolMemory:
    """Where a provider's endpoint for the client's protocol is missing: the
    protocol that served instead, per (provider, model, client protocol).
    Written only after that provider said "no such endpoint" for it, so a
    call whose own endpoint works is never translated."""

    def __init__(self, store: Store, ttl: float = 86_400.0) -> None:
        self.store, self.ttl = store, ttl

    def get(self, provider: str, model: str, client: Protocol) -> Protocol | None:
        served = self.store.get((provider, model, client.value))
        return Protocol(served) if served else None

    def put(self, provider: str, model: str, client: Protocol, served: Protocol) -> None:
        self.store.put((provider, model, client.value), served.value, self.ttl)

    def items(self) -> list[tuple[tuple[str, str, Protocol], Protocol]]:
        return [((p, m, Protocol(c)), Protocol(s)) for (p, m, c), s in self.store.items()]


class Conversations:
    """The Responses conversations Switchback carries, by response id: the
    items behind each (so another candidate can be handed the history) and
    who produced it (so a follow-up goes back there first). Kept as JSON text:
    its size is what the store's byte bound counts."""

    def __init__(self, turns: Store, affinity: Store, ttl: float = 86_400.0) -> None:
        self.turns, self.affinity, self.ttl = turns, affinity, ttl

    async def turn(self, response_id: str) -> Turn | None:
        text = await self.turns.fetch(response_id)
        return Turn.loads(text) if isinstance(text, str) else None

    async def producer(self, response_id: str) -> str | None:
        by = await self.affinity.fetch(response_id)
        return by if isinstance(by, str) and by else None

    def record(self, response_id: str, turn: Turn) -> None:
        self.turns.put(response_id, turn.dumps(), self.ttl)
        self.affinity.put(response_id, turn.by, self.ttl)
