"""The gateway: a plain-HTTP listener for clients that cannot trust a CA.

Some clients take a base URL but not a proxy CA. With the option
`switchback_gateway` (`[HOST:]PORT`, loopback when no host is given),
Switchback adds a mitmproxy reverse-proxy listener there; every request on
it is routed here, before any other hook sees it, to the provider it means:

- `/v1/…` — the path the official SDKs send with `OPENAI_BASE_URL=http://HOST:PORT/v1`
  or `ANTHROPIC_BASE_URL=http://HOST:PORT` — goes to the provider named
  `anthropic` when it is a Messages call (`/v1/messages…`) or carries
  Anthropic's `anthropic-version` header (which Anthropic's SDKs and Claude
  Code send on every request), and to the provider named `openai` otherwise;
- `/NAME/…` goes to the provider NAME (built-in or configured): the prefix
  stands for its base URL, so `OPENAI_BASE_URL=http://HOST:PORT/groq` is Groq;
- anything else is answered 404 with the forms above.

After routing, the flow is exactly what the proxy listener would have seen
for a call to that provider's own URL: the same recognition, failover,
cooldowns, relay and reporting; a request Switchback does not recognise
(GET /v1/models) goes to that provider's origin untouched. The client's
credential goes only to the origin its route names. One port serves every
provider (the paths of the two protocols do not collide, and a prefix names
any other), so a client needs one address, and the proxy one more listener.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from mitmproxy import ctx, exceptions, http
from mitmproxy.net.http import url

from ..protocols.envelope import JSON_TYPE, error_body
from ..providers import Provider, ProviderTable
from .runtime import Runtime

logger = logging.getLogger(__name__)
# Where mitmproxy's reverse mode would send a request this addon did not route:
# a name that never resolves (RFC 2606), so a mistake fails closed and no
# client credential leaves for a host it did not mean. Every request is routed
# or answered, so nothing is ever sent there.
UNROUTED = "http://switchback-gateway.invalid"
OPENAI, ANTHROPIC = "openai", "anthropic"  # the providers unprefixed paths reach
VERSION = "/v1"


@dataclass(frozen=True)
class Route:
    provider: Provider
    url: str  # the upstream URL, query string included


def listen_address(value: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[::1]:PORT` → (host, port); loopback when no
    host is given: the gateway sends configured keys for whoever reaches it."""
    host, sep, port = value.strip().rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"switchback_gateway {value!r}: expected [HOST:]PORT, e.g. "
                         f"127.0.0.1:8082")
    return (host.strip("[]") if sep and host else "127.0.0.1"), int(port)


def mode_spec(host: str, port: int) -> str:
    """The mitmproxy mode that listens for the gateway (mitmproxy splits the
    port off at the last colon: an IPv6 host goes without brackets)."""
    return f"reverse:{UNROUTED}@{host}:{port}"


def under(provider: Provider, rest: str) -> str:
    """`rest` (path and query) under a provider's base URL. A `/v1` the client
    repeats from its own base URL is not doubled: `/v1/messages` under
    `https://api.anthropic.com/v1` is that host's `/v1/messages`."""
    base = provider.base_url
    if base.endswith(VERSION) and (rest == VERSION or rest.startswith((VERSION + "/",
                                                                       VERSION + "?"))):
        base = base.removesuffix(VERSION)
    return base + rest


def is_anthropic(rest: str, headers: Iterable[tuple[str, str]]) -> bool:
    """A Messages call, or any request made by an Anthropic client."""
    path = rest.partition("?")[0].rstrip("/")
    return path == "/v1/messages" or path.startswith("/v1/messages/") or any(
        name.lower() == "anthropic-version" for name, _ in headers)


def route(target: str, headers: Iterable[tuple[str, str]], table: ProviderTable) -> Route | None:
    """Where a gateway request (its origin-form target: path and query) goes;
    None when it names nothing Switchback knows."""
    path = target.partition("?")[0]
    if path == VERSION or path.startswith(VERSION + "/"):
        provider = table.by_name.get(ANTHROPIC if is_anthropic(target, headers) else OPENAI)
        return None if provider is None else Route(provider, under(provider, target))
    name = path.removeprefix("/").partition("/")[0]
    provider = table.by_name.get(name) if name else None
    # What follows the name ("", "/…" or "?…") is the path under its base URL.
    return None if provider is None else Route(provider, under(provider, target[1 + len(name):]))


def not_routed(target: str) -> bytes:
    path = target.partition("?")[0]  # no query: it may carry a secret
    return error_body(
        f"Switchback gateway: {path} names no provider. Use /v1/… (OpenAI-style clients: "
        f"base URL http://HOST:PORT/v1; Anthropic clients: http://HOST:PORT) or /NAME/… for "
        f"a provider named NAME in the config.", "invalid_request_error", "unknown_gateway_path")


class Gateway:
    name = "switchback_gateway"  # mitmproxy's name for it: unique among addons

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.spec: str | None = None  # our reverse mode, while the gateway is on

    def load(self, loader) -> None:
        loader.add_option(
            "switchback_gateway", str, "",
            "Also listen as a plain-HTTP gateway at [HOST:]PORT (loopback when no host): "
            "OPENAI_BASE_URL=http://HOST:PORT/v1 and ANTHROPIC_BASE_URL=http://HOST:PORT "
            "get the same failover as the proxy, with no CA. Empty: off.")

    def configure(self, updated: set[str]) -> None:
        if "switchback_gateway" not in updated:
            return
        value = ctx.options.switchback_gateway.strip()
        try:
            spec = mode_spec(*listen_address(value)) if value else None
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from None
        modes = [m for m in ctx.options.mode if m != self.spec]
        self.spec = spec
        if spec is not None:
            modes.append(spec)
        if modes != list(ctx.options.mode):
            ctx.options.update(mode=modes)

    async def running(self) -> None:
        """Make sure the listener is up. mitmproxy 12 may bring its servers up
        from the modes it had before this script's options were applied;
        asking again starts only what is missing."""
        proxyserver = ctx.master.addons.get("proxyserver")
        if self.spec is not None and proxyserver is not None:
            await proxyserver.setup_servers()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Route a gateway request to its provider, or answer that it names none."""
        mode = flow.client_conn.proxy_mode
        if self.spec is None or mode is None or mode.full_spec != self.spec:
            return
        request = flow.request
        found = route(request.path, request.headers.items(multi=True), self.runtime.table)
        if found is None:
            flow.response = http.Response.make(404, not_routed(request.path), dict([JSON_TYPE]))
            return
        request.url = found.url
        request.host_header = url.hostport(request.scheme, request.host, request.port)
