"""Conversations: the history behind a `previous_response_id`, so a
conversation survives a change of provider."""

from __future__ import annotations

from ..protocols.history import Turn
from .stores import Store


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
