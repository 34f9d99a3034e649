"""Where learned state lives: one store per kind, each with its own bound.

Kinds of state differ in what losing an entry costs. An active cooldown
must never be pushed out by churn elsewhere (a key told to wait ten
minutes would be hammered again), so the cooldown store is bounded only by
expiry. Key use times and failure strikes are cheap to forget and bounded
by count. Conversations are bounded in bytes, since one can be megabytes.
Keys are fingerprints, provider names and model names, never secrets.

The memory store is cachetools' TLRUCache (per-entry expiry, least recently
used evicted first when full); a shared store can implement the same small
interface.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Protocol

from cachetools import TLRUCache

Clock = Callable[[], float]
DEFAULT_CONVERSATION_BYTES = 256 << 20
DEFAULT_ENTRIES = 100_000


class Store(Protocol):
    """Key/value with a time-to-live per entry."""

    def get(self, key: Hashable) -> Any | None: ...
    def put(self, key: Hashable, value: Any, ttl: float) -> None: ...
    def delete(self, key: Hashable) -> None: ...
    def items(self) -> Iterator[tuple[Hashable, Any]]: ...
    def clear(self) -> None: ...
    def __len__(self) -> int:
        """Entries held (expired ones may count until they are swept): 0
        means there is nothing to look up."""
    async def fetch(self, key: Hashable) -> Any | None:
        """`get`, asking a shared backend when this replica does not know."""
    async def claim(self, key: Hashable, value: Any, ttl: float) -> bool:
        """Put `value` only if nobody holds `key` (atomically across replicas
        with a shared backend); True when this caller got it."""


class MemoryStore:
    """In-process store. `maxsize` bounds the entries — or, with `sizeof`,
    the sum of their sizes; infinite means only expiry removes entries."""

    def __init__(self, maxsize: float = DEFAULT_ENTRIES, clock: Clock = time.time,
                 sizeof: Callable[[Any], int] | None = None) -> None:
        entry_size = (lambda entry: sizeof(entry[1])) if sizeof else None
        self._cache: TLRUCache = TLRUCache(maxsize, ttu=lambda _k, v, _now: v[0], timer=clock,
                                           getsizeof=entry_size)
        self._clock = clock
        self._sizeof = sizeof

    def get(self, key: Hashable) -> Any | None:
        entry = self._cache.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        if self._sizeof is not None and self._sizeof(value) > self._cache.maxsize:
            return  # larger than the whole store: keeping it would evict everything else
        self._cache[key] = (self._clock() + ttl, value)

    def delete(self, key: Hashable) -> None:
        self._cache.pop(key, None)

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        self._cache.expire()
        return ((k, v[1]) for k, v in list(self._cache.items()))

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    async def fetch(self, key: Hashable) -> Any | None:
        return self.get(key)

    async def claim(self, key: Hashable, value: Any, ttl: float) -> bool:
        if self.get(key) is not None:
            return False
        self.put(key, value, ttl)
        return True

    @property
    def size(self) -> float:
        """Entries held, or bytes with `sizeof`."""
        return self._cache.currsize


@dataclass(frozen=True)
class Stores:
    cooldowns: Store
    strikes: Store
    uses: Store
    protocols: Store
    conversations: Store  # response id → the conversation up to it (JSON)
    affinity: Store  # response id → who produced it: outlives an evicted conversation
    quirks: Store  # (provider, model, quirk) → what that provider refused
    probes: Store  # scope → when a probe of it was claimed (one at a time per scope)
    sessions: Store  # session key (caller, prompt_cache_key) → who served its last turn
    reasoning: Store  # a sealed reasoning item's mark → who produced it

    @classmethod
    def memory(cls, clock: Clock = time.time,
               conversation_bytes: int = DEFAULT_CONVERSATION_BYTES,
               entries: int = DEFAULT_ENTRIES) -> Stores:
        return cls(cooldowns=MemoryStore(math.inf, clock),
                   strikes=MemoryStore(entries, clock),
                   uses=MemoryStore(entries, clock),
                   protocols=MemoryStore(entries, clock),
                   conversations=MemoryStore(conversation_bytes, clock, sizeof=len),
                   affinity=MemoryStore(entries, clock),
                   quirks=MemoryStore(entries, clock),
                   probes=MemoryStore(entries, clock),
                   sessions=MemoryStore(entries, clock),
                   reasoning=MemoryStore(entries, clock))

    def clear(self) -> None:
        for field in fields(self):
            getattr(self, field.name).clear()
