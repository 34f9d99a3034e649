"""Provider quirks: what a provider refused once, so Switchback stops asking.

Kept like the other learned state — in a store with a TTL, shared through
Redis, shown in /status, forgotten by a reset — and not on the dispatcher,
which a config reload rebuilds.
"""

from __future__ import annotations

from ..vocabulary import Quirk
from .stores import Store

ANY_MODEL = "*"


class Quirks:
    def __init__(self, store: Store, ttl: float = 86_400.0) -> None:
        self.store, self.ttl = store, ttl

    def has(self, provider: str, quirk: Quirk, model: str = ANY_MODEL) -> bool:
        return self.store.get((provider, model, quirk.value)) is not None

    def learn(self, provider: str, quirk: Quirk, model: str = ANY_MODEL) -> None:
        self.store.put((provider, model, quirk.value), quirk.value, self.ttl)

    def items(self) -> list[tuple[str, str, Quirk]]:
        return sorted((p, m, Quirk(q)) for (p, m, q), _ in self.store.items())
