"""The one shared upstream client, built from mitmproxy's own options.

The addon makes the upstream calls itself, so it must honour what the
mitmproxy user set for upstream TLS and upstream proxies — otherwise
Switchback would silently verify against a different trust store, or bypass
a corporate proxy, compared with plain mitmproxy.

The client is aiohttp: its C HTTP parser reads an answer for a quarter of
the CPU httpx needs (0.43 vs 1.82 ms per call, 0.80 vs 4.3 ms per 22-event
stream, measured on this project's bench machine), and that CPU is the
proxy's whole overhead. Its per-read timeout starts when the request has
been written, which is exactly the first-byte timeout's meaning.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from urllib.parse import urlsplit

import aiohttp
import certifi
from mitmproxy.proxy.mode_specs import ProxyMode, UpstreamMode

from ..vocabulary import FailureKind
from .bounded import rearm, watch

# asyncio gives each TLS connection a 256 KiB read buffer, zero-filled (so
# resident) when the connection is made: with the answer read in 16 KiB
# pieces, one TLS record, an open stream costs 240 KiB less — the whole
# difference to a bare mitmproxy, which does its TLS in memory BIOs. The
# setting is asyncio's, for the process: mitmproxy's own TLS does not use it.
TLS_READ_BUFFER = 16 << 10
UPSTREAM_OPTIONS = ("ssl_insecure", "ssl_verify_upstream_trusted_ca",
                    "ssl_verify_upstream_trusted_confdir", "mode")
# Everything an upstream exchange can raise short of an answer. aiohttp's
# pure-Python parser (no C extension, AIOHTTP_NO_EXTENSIONS) fails a body it
# cannot parse with its own HttpProcessingError, not a ClientError.
TRANSPORT_ERRORS = (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, OSError,
                    asyncio.TimeoutError)
Response = aiohttp.ClientResponse


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


def transport_failure(exc: BaseException) -> FailureKind:
    """Why an attempt never got (the rest of) an answer."""
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return FailureKind.TIMEOUT
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return FailureKind.TLS
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FailureKind.REFUSED
    return FailureKind.RESET


TLS_FIX = ("to trust its certificate: --set ssl_verify_upstream_trusted_ca=CA.pem "
           "(or ssl_insecure=true, for testing only)")


def transport_detail(exc: BaseException, url: str) -> str:
    """Where the attempt failed, and for a TLS failure why and the option that
    fixes it — the words a person needs, for the trail and the client's error."""
    where = urlsplit(url).netloc
    if transport_failure(exc) is not FailureKind.TLS:
        return where
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    if verify := getattr(cause, "verify_message", None):
        reason = f"certificate verify failed: {verify}"
    else:
        reason = str(getattr(cause, "reason", None) or cause)
    return f"{where}: {reason[:160]}; {TLS_FIX}"


def is_event_stream(response: Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "").lower()


def keep_waiting(response: Response, seconds: float | None) -> None:
    """From now on, allow `seconds` between reads: a stream that has shown
    its first event only has to keep talking, not answer fast."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = seconds
        connection.protocol.start_timeout()
        rearm(response)


async def read_body(response: Response, limit: int | None) -> bytes:
    """The whole (decoded) body, or its first `limit` bytes (error bodies need no more)."""
    if limit is None:
        return await response.read()
    body = bytearray()
    while len(body) < limit and (chunk := await response.content.read(limit - len(body))):
        body += chunk
    return bytes(body)


class AiohttpReply:
    """An aiohttp answer as the engine's `transport.Reply`."""

    __slots__ = ("response", "status", "headers")

    def __init__(self, response: Response) -> None:
        self.response, self.status, self.headers = response, response.status, response.headers

    def is_event_stream(self) -> bool:
        return is_event_stream(self.response)

    def chunks(self) -> AsyncIterator[bytes]:
        return aiter(self.response.content.iter_any())

    async def read(self, limit: int | None) -> bytes:
        return await read_body(self.response, limit)

    def keep_waiting(self, seconds: float | None) -> None:
        keep_waiting(self.response, seconds)

    def close(self) -> None:
        self.response.close()


class Upstream:
    """A pooled aiohttp session, made on first use inside the event loop."""

    def __init__(self, *, insecure: bool, cafile: str | None, capath: str | None,
                 modes: Sequence[str], connect_timeout: float) -> None:
        self._ssl = tls_verify(insecure, cafile, capath)
        self._proxy = upstream_proxy(modes)
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        return aiohttp.ClientSession(
            # No limit: a queue here would count the proxy's own backlog against the
            # provider's first-byte timeout.
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0, keepalive_timeout=60),
            cookie_jar=aiohttp.DummyCookieJar(),  # one client's cookies are not another's
            trust_env=False,  # never follow HTTPS_PROXY back into ourselves
            auto_decompress=True,  # the gate must read what it holds
            skip_auto_headers=("User-Agent", "Content-Type"),  # the client's, or none
        )

    async def send(self, url: str, headers: Iterable[tuple[str, str]], body: bytes,
                   read_timeout: float) -> AiohttpReply:
        """POST and return once the answer's status and headers are in.
        `read_timeout` bounds every wait for the upstream, from the moment
        the request has been written."""
        if self._session is None:
            self._session = self._open()
        timeout = self._timeouts.get(read_timeout)
        if timeout is None:
            # `connect` also bounds name resolution and an upstream proxy's CONNECT.
            timeout = self._timeouts[read_timeout] = aiohttp.ClientTimeout(
                total=None, connect=self._connect_timeout, sock_connect=self._connect_timeout,
                sock_read=read_timeout)
        return AiohttpReply(watch(await self._session.post(
            url, data=body, headers=list(headers), proxy=self._proxy, allow_redirects=False,
            timeout=timeout)))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
