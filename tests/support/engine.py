"""One way to wire a dispatcher for engine tests: a config text, learned state
in memory on a given clock, and a transport — the real upstream client
(closed by the caller's `close`) or a scripted one."""

from __future__ import annotations

import time
from collections.abc import Callable

from switchback.config import parse_config
from switchback.engine.dispatch import Dispatcher
from switchback.engine.transport import Transport
from switchback.engine.upstream import Upstream
from switchback.providers import ProviderTable
from switchback.state.learned import Learned
from switchback.state.stores import Stores


class Clock:
    """A clock that moves only when told: `clock.now += 5`."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def upstream() -> Upstream:
    return Upstream(insecure=False, cafile=None, capath=None, modes=["regular"],
                    connect_timeout=5)


def wire(config_text: str, clock: Callable[[], float] = time.time,
         transport: Transport | None = None, rand: Callable[[], float] = lambda: 0.0
         ) -> Dispatcher:
    """A dispatcher for `config_text`; backoff jitter is 0 unless `rand` says."""
    config = parse_config(config_text, "t.yaml", {})
    learned = Learned.over(Stores.memory(clock), config.cooldown, config.protocol_memory,
                           config.conversation_ttl, clock, rand)
    return Dispatcher(transport or upstream(), config, ProviderTable(config.providers), learned,
                      clock=clock)
