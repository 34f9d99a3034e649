"""The one shared upstream client, built from mitmproxy's own options.

The addon makes the upstream calls itself, so it must honour what the
mitmproxy user set for upstream TLS and upstream proxies — otherwise
Switchback would silently verify against a different trust store, or bypass
a corporate proxy, compared with plain mitmproxy.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import certifi
import httpx
from mitmproxy.proxy.mode_specs import ProxyMode, UpstreamMode

UPSTREAM_OPTIONS = ("ssl_insecure", "ssl_verify_upstream_trusted_ca",
                    "ssl_verify_upstream_trusted_confdir", "mode")


def upstream_proxy(modes: Sequence[str]) -> str | None:
    """The upstream proxy URL when mitmproxy runs in upstream mode."""
    for spec in modes:
        mode = ProxyMode.parse(spec)
        if isinstance(mode, UpstreamMode):
            host, port = mode.address
            return f"{mode.scheme}://{host}:{port}"
    return None


def tls_verify(insecure: bool, cafile: str | None, capath: str | None) -> ssl.SSLContext | bool:
    """mitmproxy's rule: a trusted CA file/dir replaces certifi; insecure turns
    verification off."""
    if insecure:
        return False
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    return ssl.create_default_context(cafile=certifi.where())


def make_client(*, insecure: bool, cafile: str | None, capath: str | None,
                modes: Sequence[str], connect_timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http2=True,
        verify=tls_verify(insecure, cafile, capath),
        proxy=upstream_proxy(modes),
        trust_env=False,  # never follow HTTPS_PROXY back into ourselves
        follow_redirects=False,
        timeout=httpx.Timeout(connect=connect_timeout, read=None, write=60.0, pool=30.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=64,
                            keepalive_expiry=60.0),
    )
