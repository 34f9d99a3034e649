"""Health state: cooldowns per (provider, key) and per (provider, model).

Callers speak to `Health`; `Health` speaks to a `Store`, a small key/value
interface with per-entry TTL. The memory store is a bounded cachetools
TLRUCache; a shared store (Redis, …) can implement the same four methods
later without touching callers. Keys here are fingerprints, never secrets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TLRUCache

from .cooldown import CooldownPolicy
from .verdict import Cooldown, Scope, Verdict

Clock = Callable[[], float]


class Store(Protocol):
    """Key/value with a time-to-live per entry."""

    def get(self, key: Hashable) -> Any | None: ...
    def put(self, key: Hashable, value: Any, ttl: float) -> None: ...
    def delete(self, key: Hashable) -> None: ...
    def items(self) -> Iterator[tuple[Hashable, Any]]: ...


class MemoryStore:
    """In-process store, bounded so a long-running proxy cannot grow without end."""

    def __init__(self, clock: Clock = time.time, maxsize: int = 10_000) -> None:
        self._cache: TLRUCache = TLRUCache(maxsize, ttu=lambda _k, v, _now: v[0], timer=clock)
        self._clock = clock

    def get(self, key: Hashable) -> Any | None:
        entry = self._cache.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        self._cache[key] = (self._clock() + ttl, value)

    def delete(self, key: Hashable) -> None:
        self._cache.pop(key, None)

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        self._cache.expire()
        return ((k, v[1]) for k, v in list(self._cache.items()))


@dataclass(frozen=True)
class Cooling:
    """A scope that must not be used until `until` (epoch seconds)."""

    until: float
    reason: str
    no_retry: bool = False


def key_scope(provider: str, fingerprint: str) -> tuple[str, str, str]:
    return ("key", provider, fingerprint)


def model_scope(provider: str, model: str) -> tuple[str, str, str]:
    return ("model", provider, model)


class Health:
    """Cooldowns with backoff memory; the policy decides how long."""

    def __init__(self, store: Store, policy: CooldownPolicy = CooldownPolicy(),
                 clock: Clock = time.time, rand: Callable[[], float] = random.random) -> None:
        self.store, self.policy, self.clock, self.rand = store, policy, clock, rand

    def cooling(self, scope: tuple) -> Cooling | None:
        entry = self.store.get(("cool", scope))
        return entry if entry is not None and entry.until > self.clock() else None

    def record(self, verdict: Verdict, key: tuple, model: tuple) -> float | None:
        """Apply a failure verdict's cooldown; returns its length in seconds,
        or None when the failure earns none (yet)."""
        cooldown: Cooldown | None = verdict.cooldown
        if cooldown is None:
            return None
        scope = key if cooldown.scope is Scope.KEY else model
        failures = (self.store.get(("failures", scope)) or 0) + 1
        self.store.put(("failures", scope), failures, self.policy.ceiling * 4)
        hint = verdict.hints.wait
        if cooldown.long:
            seconds = self.policy.long_duration(hint)
        elif hint is None and failures < cooldown.after:
            return None
        else:
            seconds = self.policy.duration(hint, failures, self.rand())
        if seconds > 0:
            self.cool(scope, seconds, verdict.reason, verdict.no_retry)
        return seconds

    def cool(self, scope: tuple, seconds: float, reason: str, no_retry: bool = False) -> None:
        self.store.put(("cool", scope), Cooling(self.clock() + seconds, reason, no_retry), seconds)

    def used(self, scope: tuple) -> None:
        self.store.put(("used", scope), self.clock(), 86_400)

    def least_recently_used(self, scopes: list[tuple]) -> list[tuple]:
        """Scopes ordered for rotation: never used first, then oldest use."""
        return sorted(scopes, key=lambda s: self.store.get(("used", s)) or 0.0)

    def succeeded(self, *scopes: tuple) -> None:
        """A success resets the backoff of every scope that served it."""
        for scope in scopes:
            self.store.delete(("failures", scope))

    def cooldowns(self) -> list[tuple[tuple, Cooling]]:
        now = self.clock()
        return [(k[1], v) for k, v in self.store.items()
                if k[0] == "cool" and v.until > now]


class ProtocolMemory:
    """Which protocol last worked per (provider, model). Written on success
    only, against the provider that actually served."""

    def __init__(self, store: Store, ttl: float = 86_400.0) -> None:
        self.store, self.ttl = store, ttl

    def get(self, provider: str, model: str) -> str | None:
        return self.store.get(("protocol", provider, model))

    def put(self, provider: str, model: str, protocol: str) -> None:
        self.store.put(("protocol", provider, model), protocol, self.ttl)

    def items(self) -> list[tuple[tuple[str, str], str]]:
        return [((k[1], k[2]), v) for k, v in self.store.items() if k[0] == "protocol"]


class Conversations:
    """Chat history behind the response ids Switchback issued while
    translating, so `previous_response_id` can be replayed. Bounded by the
    store's size; a day at most."""

    def __init__(self, store: Store, ttl: float = 86_400.0) -> None:
        self.store, self.ttl = store, ttl

    def get(self, response_id: str) -> list[dict] | None:
        return self.store.get(("conversation", response_id))

    def put(self, response_id: str, messages: list[dict]) -> None:
        self.store.put(("conversation", response_id), messages, self.ttl)
