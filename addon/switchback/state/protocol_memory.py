"""Protocol memory: learned per provider and model, so a switch found once
is not probed again on every call."""

from __future__ import annotations

from ..vocabulary import Protocol
from .stores import Store


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
