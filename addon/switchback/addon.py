"""The mitmproxy shell: options, hooks and glue; no decisions of its own.

The async `request` hook hands a recognised LLM call to the dispatcher, then
either sets the whole answer on the flow or points the flow at the loopback
relay for a committed stream. Everything else mitmproxy handles untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from mitmproxy import ctx, exceptions, http

from .config import Config, ConfigError, load_config
from .dispatch import Answer, Dispatcher
from .providers import ProviderTable
from .recognise import recognise
from .relay import Relay
from .state import Health, MemoryStore
from .upstream import UPSTREAM_OPTIONS, make_client

logger = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call is ours to write
RELAYED = "switchback_relayed_from"  # flow.metadata key: the URL the client asked for


class Switchback:
    def __init__(self) -> None:
        self.config = Config()
        self.table = ProviderTable({})
        self.health = Health(MemoryStore())
        self.relay = Relay()
        self.dispatcher: Dispatcher | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "switchback_config", Optional[str], None,
            "Switchback YAML config: providers, keys, fallbacks, timeouts. "
            "Without it, built-in provider hosts are recognised and nothing falls back.")

    def configure(self, updated: set[str]) -> None:
        if "switchback_config" in updated:
            try:
                self.config = load_config(ctx.options.switchback_config)
            except ConfigError as exc:
                raise exceptions.OptionsError(f"Switchback config error: {exc}") from None
            self.table = ProviderTable(self.config.providers)
            self.health.policy = self.config.cooldown
        if self.dispatcher is None or updated & {"switchback_config", *UPSTREAM_OPTIONS}:
            client = make_client(
                insecure=ctx.options.ssl_insecure,
                cafile=ctx.options.ssl_verify_upstream_trusted_ca,
                capath=ctx.options.ssl_verify_upstream_trusted_confdir,
                modes=ctx.options.mode,
                connect_timeout=self.config.timeouts.connect)
            if self.dispatcher is not None:
                _close_later(self.dispatcher.client)
            self.dispatcher = Dispatcher(client, self.config, self.table, self.health)

    async def running(self) -> None:
        await self.relay.start()
        if ctx.options.connection_strategy != "lazy":
            # Eager connections fail at CONNECT when an origin is down, before
            # Switchback could fall back.
            logger.info("switchback: setting connection_strategy=lazy")
            ctx.options.update(connection_strategy="lazy")

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self.dispatcher is None:
            return
        try:
            raw = flow.request.content or b""
        except ValueError:  # an undecodable content-encoding: not ours to judge
            return
        call = recognise(flow.request.method, flow.request.pretty_url,
                         flow.request.headers.items(multi=True), raw, self.table)
        if call is None:
            return
        started = time.monotonic()
        try:
            result = await self.dispatcher.run(call)
        except Exception:
            # Attempts may already have reached a provider: answering beats
            # letting mitmproxy send the call once more behind our back.
            logger.exception("switchback: internal error while handling an LLM call")
            flow.response = http.Response.make(
                502, b'{"error":{"message":"Switchback internal error; see the proxy log",'
                     b'"type":"server_error","code":"switchback_internal_error"}}',
                {"content-type": "application/json"})
            return
        flow.comment = str(result.trail)
        logger.info(f"switchback: {call.protocol} {call.model}{' stream' if call.stream else ''}"
                    f": {result.trail} [{time.monotonic() - started:.2f}s]")
        delivery = result.delivery
        if isinstance(delivery, Answer):
            flow.response = http.Response.make(delivery.status, delivery.body, http.Headers(
                [(k.encode(), v.encode()) for k, v in delivery.headers]))
            return
        flow.metadata[RELAYED] = flow.request.url
        flow.request.url = self.relay.url(self.relay.park(delivery))
        flow.server_conn.via = None  # the relay is local even in upstream-proxy mode

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        original = flow.metadata.get(RELAYED)
        if original and flow.response is not None:
            flow.response.stream = True
            flow.request.url = original  # show the URL the client asked for

    async def done(self) -> None:
        await self.relay.stop()
        if self.dispatcher is not None:
            await self.dispatcher.client.aclose()


def _close_later(client) -> None:
    """Close a replaced client once in-flight calls had time to finish."""
    async def close() -> None:
        await asyncio.sleep(600)
        await client.aclose()
    try:
        asyncio.get_running_loop().create_task(close())
    except RuntimeError:
        pass
