"""The running proxy's state for people and Prometheus, on a loopback port.

`GET /status` answers a JSON document (providers with key fingerprints,
cooldowns with time left and why, the protocol memory, counters, each
budget's figures in its current window); `GET
/metrics` answers the Prometheus exposition; `POST /reset` forgets every
cooldown, backoff and remembered protocol (as the `switchback.reset` command
does) — after rotating a dead key, say. Budget figures are not state of that
kind: only `POST /reset/budgets` forgets them (every principal's spending,
everywhere the budgets are shared). `status_document` is pure;
`StatusServer` is the small HTTP shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .state.cooldowns import Health
from .state.protocol_memory import ProtocolMemory
from .metrics import Metrics
from .providers import ProviderTable
from .recognise import fingerprint

logger = logging.getLogger(__name__)


def status_document(table: ProviderTable, configured: set[str], health: Health,
                    protocols: ProtocolMemory, metrics: Metrics,
                    state: dict[str, Any], budgets: list[dict] | None = None) -> dict[str, Any]:
    now = health.clock()
    cooldowns = []
    for scope, cooling in sorted(health.cooldowns(), key=lambda item: item[1].until):
        kind, provider, name = scope
        cooldowns.append({"scope": kind, "provider": provider,
                          ("key" if kind == "key" else "model"): name,
                          "remaining_s": round(cooling.until - now, 3),
                          "reason": cooling.reason})
    return {
        "providers": [{"name": p.name, "base_url": p.base_url, "protocol": p.protocol,
                       "keys": [fingerprint(k) for k in p.keys],
                       "configured": p.name in configured} for p in table],
        "cooldowns": cooldowns,
        "protocols": [{"provider": provider, "model": model, "client": client.value,
                       "protocol": served.value}
                      for (provider, model, client), served in sorted(protocols.items())],
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

    async def start(self, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        except OSError as exc:
            logger.warning(f"switchback: status server not started on 127.0.0.1:{port}: "
                           f"{exc.strerror}; set switchback_status_port to a free port")
            return
        logger.info(f"switchback: status on http://127.0.0.1:{port}/status and /metrics")

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
