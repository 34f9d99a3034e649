"""The runtime: the config and everything built from it, for the other addons.

One small addon owns `switchback_config` and the mitmproxy options the
engine depends on. It chooses the state backend once (memory, or near
caches of Redis through one link), and on every config or upstream-TLS
change builds a new provider table, charge accounts and dispatcher over the
same learned state — a reload forgets nothing. It starts and stops what
lives for the whole process: the link, the relay, the upstream clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Optional

from mitmproxy import ctx, exceptions

from ..config import Config, ConfigError, load_config
from ..accounting.pricing import Pricing
from ..engine.charge import Accounts
from ..engine.dispatch import Dispatcher
from ..engine.relay import Relay
from ..engine.upstream import UPSTREAM_OPTIONS, Upstream
from ..providers import ProviderTable
from ..state.learned import Learned
from ..state.ledger import Ledger, MemoryLedger, RedisLedger
from ..state.link import Link, shared_stores
from ..state.stores import MemoryStore, Stores
from .metrics import Metrics
from .tracing import Tracing

logger = logging.getLogger(__name__)


class Runtime:
    name = "switchback"  # mitmproxy's name for it: unique among addons

    def __init__(self) -> None:
        self.config = Config()
        self.table = ProviderTable({})
        self.link: Link | None = None  # to the state replicas share, when configured
        self.started = False  # running: the state backend is chosen for good
        self.learned = Learned.over(Stores.memory())
        self.ledger: Ledger = MemoryLedger()
        self.accounts = Accounts(self.ledger)
        self.metrics = Metrics()
        self.metrics.state_up.set_function(lambda: 0 if self.link and not self.link.healthy
                                           else 1)
        self.tracing = Tracing.from_environment()
        self.relay = Relay()
        self.status_port = 0  # the status server's, while it listens
        self.dispatcher: Dispatcher | None = None
        self.retired: list[Upstream] = []  # clients replaced by a reconfigure

    def load(self, loader) -> None:
        loader.add_option(
            "switchback_config", Optional[str], None,
            "Switchback YAML config: providers, keys, fallbacks, timeouts. "
            "Without it, built-in provider hosts are recognised and nothing falls back.")

    def configure(self, updated: set[str]) -> None:
        if "switchback_config" in updated:
            self._adopt(self._load())
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager connections fail at CONNECT when an origin is down, before
            # Switchback could fall back. Set here, before the proxy listens.
            logger.info("switchback: setting connection_strategy=lazy")
            ctx.options.update(connection_strategy="lazy")
        if "stream_large_bodies" in updated and ctx.options.stream_large_bodies:
            # mitmproxy streams a request body on to the origin as soon as it
            # outgrows the limit, before any hook could hold it back.
            raise exceptions.OptionsError(
                "Switchback cannot work with stream_large_bodies set: mitmproxy would send "
                "large LLM request bodies on to the provider unread, so Switchback could not "
                "replay them. Unset stream_large_bodies (Switchback streams SSE answers "
                "itself).")
        if self.dispatcher is None or updated & {"switchback_config", *UPSTREAM_OPTIONS}:
            self._rebuild_dispatcher()

    @staticmethod
    def _load() -> Config:
        try:
            return load_config(ctx.options.switchback_config)
        except ConfigError as exc:
            many = len(exc.problems) > 1
            raise exceptions.OptionsError(
                f"Switchback config error{'s' if many else ''}:{chr(10) if many else ' '}"
                f"{exc}") from None

    def _adopt(self, config: Config) -> None:
        """`config` in force: its state backend (chosen once), its settings for
        what was learned, its prices and budgets."""
        self._choose_state(config)
        self.config, self.table = config, ProviderTable(config.providers)
        self.learned.configure(config.cooldown, config.protocol_memory, config.conversation_ttl)
        self.accounts = Accounts(self.ledger, Pricing(config.pricing), config.budgets,
                                 config.budget_output_tokens, replacing=self.accounts)

    def _choose_state(self, config: Config) -> None:
        """This process's memory, or near caches of the state replicas share.
        The backend is chosen once; a reload can only resize the memory
        conversation store."""
        if self.link is not None or config.state is None or self.started:
            if config.state != (self.config.state if self.link else None):
                logger.warning("switchback: the shared state setting changes only on restart")
            stores = self.learned.stores
            if self.link is None and config.conversation_bytes != self.config.conversation_bytes:
                stores = dataclasses.replace(stores, conversations=MemoryStore(
                    config.conversation_bytes, sizeof=len))
                self.learned = Learned.over(stores, config.cooldown)
            return
        self.link = Link(config.state.url, config.state.prefix)
        self.ledger = RedisLedger(self.link, fallback=self.ledger)
        memory = Stores.memory(conversation_bytes=config.conversation_bytes)
        self.learned = Learned.over(shared_stores(self.link, memory), config.cooldown)

    def _rebuild_dispatcher(self) -> None:
        upstream = Upstream(
            insecure=ctx.options.ssl_insecure,
            cafile=ctx.options.ssl_verify_upstream_trusted_ca,
            capath=ctx.options.ssl_verify_upstream_trusted_confdir,
            modes=ctx.options.mode,
            connect_timeout=self.config.timeouts.connect)
        if self.dispatcher is not None:
            # In-flight calls may still use it; it is closed at shutdown.
            self.retired.append(self.dispatcher.transport)
        self.dispatcher = Dispatcher(upstream, self.config, self.table, self.learned)

    async def running(self) -> None:
        self.started = True
        if self.link is not None:
            await self.link.start()
        await self.relay.start()

    async def done(self) -> None:
        await self.relay.stop()  # closing the streams settles their calls
        await self.accounts.close()
        await self.ledger.close()
        if self.link is not None:
            await self.link.stop()
        await asyncio.to_thread(self.tracing.shutdown)
        for upstream in self.retired:
            await upstream.aclose()
        if self.dispatcher is not None:
            await self.dispatcher.transport.aclose()
