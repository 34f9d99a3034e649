"""Every kind of learned state a call reads or writes, over one set of stores.

The shell builds one `Learned` when the state backend is chosen (memory, or
near caches of Redis) and hands it to each dispatcher it builds, so a config
reload keeps what was learned.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..health.cooldown import CooldownPolicy
from .conversations import Conversations
from .cooldowns import Health
from .protocol_memory import ProtocolMemory
from .quirks import Quirks
from .sessions import Sessions
from .stores import Stores

DAY = 86_400.0


@dataclass
class Learned:
    stores: Stores
    health: Health
    protocols: ProtocolMemory
    conversations: Conversations
    quirks: Quirks
    sessions: Sessions

    @classmethod
    def over(cls, stores: Stores, policy: CooldownPolicy = CooldownPolicy(),
             protocol_ttl: float = DAY, conversation_ttl: float = DAY,
             clock: Callable[[], float] = time.time,
             rand: Callable[[], float] = random.random) -> Learned:
        return cls(stores, Health(stores.cooldowns, stores.strikes, stores.uses, policy, clock, rand,
                                   stores.probes),
                   ProtocolMemory(stores.protocols, protocol_ttl),
                   Conversations(stores.conversations, stores.affinity, conversation_ttl),
                   Quirks(stores.quirks),
                   Sessions(stores.sessions, stores.reasoning, conversation_ttl))

    def configure(self, policy: CooldownPolicy, protocol_ttl: float,
                  conversation_ttl: float) -> None:
        """A reloaded config's settings; what was learned stays."""
        self.health.policy = policy
        self.protocols.ttl, self.conversations.ttl = protocol_ttl, conversation_ttl
        self.sessions.ttl = conversation_ttl

    def clear(self) -> None:
        """Forget everything learned (POST /reset, switchback.reset)."""
        self.stores.clear()
        self.sessions.left_out = 0
