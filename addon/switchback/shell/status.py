"""The running proxy's state for people and Prometheus, on a loopback port.

`GET /status` answers a JSON document (providers with key fingerprints,
cooldowns with time left and why, the protocol memory, counters, each
budget's figures in its current window); `GET
/metrics` answers the Prometheus exposition; `POST /reset` forgets every
cooldown, backoff, remembered protocol and provider quirk (as the
`switchback.reset` command does) — after rotating a dead key, say. Budget figures are not state of that
kind: only `POST /reset/budgets` forgets them (every principal's spending,
everywhere the budgets are shared). `status_document` is pure;
`StatusServer` is the small HTTP shell around it, and `Status` the addon
that runs it on `switchback_status_port` and answers the same document to
the `switchback.status` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import command, ctx

from ..health.verdict import Scope
from ..providers import ProviderTable
from ..recognise import fingerprint
from ..state.learned import Learned
from .metrics import Metrics
from .runtime import Runtime

logger = logging.getLogger(__name__)


def status_document(table: ProviderTable, configured: set[str], learned: Learned,
                    metrics: Metrics, state: dict[str, Any],
                    budgets: list[dict] | None = None) -> dict[str, Any]:
    health = learned.health
    now = health.clock()
    cooldowns = []
    for scope, cooling in sorted(health.cooldowns(), key=lambda item: item[1].until):
        kind, provider, *names = scope
        row: dict[str, Any] = {"scope": kind, "provider": provider}
        if kind == Scope.KEY_MODEL.value:
            row["key"], row["model"] = names
        else:
            row["key" if kind == Scope.KEY.value else "model"] = names[0]
        probing = health.probing(scope)
        row.update({"remaining_s": round(cooling.until - now, 3), "reason": cooling.reason,
                    # cooling: skipped; probing: one live call is trying it now
                    "state": "probing" if probing else "cooling",
                    # seconds until one call may try it (null: only its end brings it back)
                    "next_probe_s": None if cooling.probe_at is None or probing
                    else round(max(0.0, cooling.probe_at - now), 3)})
        cooldowns.append(row)
    return {
        "providers": [{"name": p.name, "base_url": p.base_url, "protocol": p.protocol,
                       "keys": [fingerprint(k) for k in p.keys],
                       "configured": p.name in configured} for p in table],
        "cooldowns": cooldowns,
        "protocols": [{"provider": provider, "model": model, "client": client.value,
                       "protocol": served.value}
                      for (provider, model, client), served in sorted(learned.protocols.items())],
        "quirks": [{"provider": provider, "model": model, "quirk": quirk.value}
                   for provider, model, quirk in learned.quirks.items()],
        # Agent sessions: pinned to the account that served their last turn;
        # sealed reasoning items whose producer is known; items left out here.
        "sessions": {"pinned": learned.sessions.pinned,
                     "reasoning_known": learned.sessions.known,
                     "reasoning_left_out": learned.sessions.left_out},
        "counters": metrics.totals(),
        "state": state,
        "budgets": budgets or [],
    }


class StatusServer:
    def __init__(self, document: Callable[[list[dict]], dict[str, Any]], metrics: Metrics,
                 reset: Callable[[], None],
                 budgets: Callable[[], Awaitable[list[dict]]],
                 reset_budgets: Callable[[], Awaitable[None]]) -> None:
        self.document, self.metrics, self.reset = document, metrics, reset
        self.budgets, self.reset_budgets = budgets, reset_budgets
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> bool:
        """Listen on `port`; False (and a warning that says the fix) when it is taken."""
        try:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        except OSError as exc:
            logger.warning(f"switchback: status server not started on 127.0.0.1:{port}: "
                           f"{exc.strerror}; set switchback_status_port to a free port")
            return False
        logger.info(f"switchback: status on http://127.0.0.1:{port}/status and /metrics")
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            parts = head.split(b" ", 2)
            method = parts[0].decode("latin-1")
            path = parts[1].decode("latin-1").split("?")[0] if len(parts) > 1 else ""
            if method == "POST" and path == "/reset":
                self.reset()
                status, kind, body = 200, "application/json", b'{"reset": true}\n'
            elif method == "POST" and path == "/reset/budgets":
                await self.reset_budgets()
                status, kind, body = 200, "application/json", b'{"reset": "budgets"}\n'
            elif path == "/status":
                status, kind = 200, "application/json"
                body = json.dumps(self.document(await self.budgets()), indent=2).encode()
            elif path == "/metrics":
                status, kind, body = 200, "text/plain; version=0.0.4", self.metrics.exposition()
            else:
                status, kind, body = 404, "text/plain", \
                    b"try /status, /metrics, POST /reset or POST /reset/budgets\n"
            writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
                         f"content-type: {kind}\r\ncontent-length: {len(body)}\r\n"
                         "connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()


class Status:
    """The status server and the status and reset commands."""
    name = "switchback_status"  # mitmproxy's name for it: unique among addons


    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.server = StatusServer(self.document, runtime.metrics, self.reset_command,
                                   self.budget_rows, self.reset_budgets)
        self.port = 0  # wanted
        self.started = False  # the proxy runs: a changed port applies at once
        self.moving: asyncio.Future | None = None  # the server moving to a new port

    def load(self, loader) -> None:
        loader.add_option(
            "switchback_status_port", int, 8089,
            "Loopback port for Switchback's /status (JSON) and /metrics (Prometheus); "
            "0 turns them off.")

    def configure(self, updated: set[str]) -> None:
        if "switchback_status_port" in updated:
            self.port = ctx.options.switchback_status_port
            if self.started:  # a changed port applies at once
                self.moving = asyncio.ensure_future(self._listen())

    async def running(self) -> None:
        self.started = True
        await self._listen()

    async def _listen(self) -> None:
        await self.server.stop()
        self.runtime.status_port = 0
        if self.port and await self.server.start(self.port):
            self.runtime.status_port = self.port

    async def done(self) -> None:
        if self.moving is not None:
            await self.moving
        await self.server.stop()

    def document(self, budgets: list[dict] | None = None) -> dict:
        runtime = self.runtime
        link = runtime.link
        state = {"backend": "redis" if link else "memory",
                 "healthy": link.healthy if link else True}
        return status_document(runtime.table, set(runtime.config.providers), runtime.learned,
                               runtime.metrics, state, budgets)

    async def budget_rows(self) -> list[dict]:
        """Every budget's figures in its current window, configured principals first seen."""
        configured = [(principal, budgets)
                      for principal, budgets in self.runtime.config.budgets.items()
                      if principal != "*"]
        return [account.row() for account in await self.runtime.ledger.accounts(configured)]

    async def reset_budgets(self) -> None:
        """Forget what every principal spent (POST /reset/budgets)."""
        await self.runtime.ledger.clear()
        logger.info("switchback: budget figures reset")

    @command.command("switchback.status")
    def status_command(self) -> str:
        """Switchback's state: providers, cooldowns, protocol memory, quirks, counters (JSON).
        Budgets, which may live in Redis, are on the status server's /status."""
        return json.dumps(self.document(), indent=2)

    @command.command("switchback.reset")
    def reset_command(self) -> None:
        """Forget every cooldown, backoff, key use, remembered protocol, quirk and conversation."""
        self.runtime.learned.clear()
        logger.info("switchback: state reset")
