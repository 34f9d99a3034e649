"""Guards: what Switchback refuses or leaves alone before any call is handled.

- TLS to hosts that are not LLM providers is tunnelled untouched (unless
  told to intercept all), so git, pip or npm behind the same HTTPS_PROXY
  keep working without our CA;
- a WebSocket upgrade to an LLM endpoint is answered 426, since turns over
  a WebSocket would bypass every failover (unless told to pass them);
- Switchback's own loopback ports (status server, relay) are not reachable
  through the proxy.

Options are parsed once, in `configure`; the hooks only compare.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http, tls

from ..protocols.envelope import JSON_TYPE, error_body
from .runtime import Runtime

logger = logging.getLogger(__name__)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
WEBSOCKET_REFUSED = error_body(
    "Switchback serves this endpoint over HTTPS, not WebSocket: use the HTTP API "
    "(Codex CLI: supports_websockets = false, or let it fall back).",
    "invalid_request_error", "websocket_not_supported")
OWN_PORT_REFUSED = error_body(
    "Switchback's status server is not reachable through the proxy; "
    "query it on this machine without the proxy.",
    "invalid_request_error", "switchback_status_not_proxied")


def websocket_path(rest: str) -> bool:
    """Endpoints clients may try over a WebSocket: /responses, /realtime…"""
    return rest.startswith(("/responses", "/realtime"))


class Guards:
    name = "switchback_guards"  # mitmproxy's name for it: unique among addons

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.intercept_all = False
        self.pass_websockets = False

    def load(self, loader) -> None:
        loader.add_option(
            "switchback_intercept", str, "llm",
            "Which hosts to TLS-intercept: 'llm' (only LLM provider hosts, other HTTPS is "
            "tunnelled untouched) or 'all'.", choices=("llm", "all"))
        loader.add_option(
            "switchback_websocket", str, "refuse",
            "WebSocket upgrades to a provider's /responses or /realtime: 'refuse' answers "
            "426 so clients (Codex CLI) use HTTPS, where Switchback does its work; 'pass' "
            "lets them through untouched, without failover.", choices=("refuse", "pass"))

    def configure(self, updated: set[str]) -> None:
        if "switchback_intercept" in updated:
            self.intercept_all = ctx.options.switchback_intercept == "all"
        if "switchback_websocket" in updated:
            self.pass_websockets = ctx.options.switchback_websocket == "pass"

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        if self.intercept_all:
            return
        address = data.context.server.address
        if address and not self.runtime.table.is_provider_origin(*address):
            data.ignore_connection = True

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            self._refuse_websocket(flow) or self._refuse_own_ports(flow)

    def _refuse_own_ports(self, flow: http.HTTPFlow) -> bool:
        """The status server and the relay listen on loopback for this
        machine's operator: a proxy client must not reach them through the
        proxy (POST /reset/budgets would forgive everybody's spending)."""
        request = flow.request
        own = (self.runtime.relay.port, self.runtime.status_port)
        if request.port not in own or request.host not in LOOPBACK:
            return False
        flow.response = http.Response.make(403, OWN_PORT_REFUSED, dict([JSON_TYPE]))
        return True

    def _refuse_websocket(self, flow: http.HTTPFlow) -> bool:
        """Answer a WebSocket upgrade to an LLM endpoint with 426 (unless told to
        pass them)."""
        request = flow.request
        if self.pass_websockets or request.headers.get("upgrade", "").lower() != "websocket":
            return False
        if not any(websocket_path(rest) for _, rest in self.runtime.table.under(request.url)):
            return False
        flow.response = http.Response.make(426, WEBSOCKET_REFUSED, {
            "content-type": "application/json", "connection": "close"})
        logger.info(f"switchback: refused a WebSocket upgrade to {request.pretty_host}"
                    f"{request.path.partition('?')[0]}; the client should use HTTPS")
        return True
