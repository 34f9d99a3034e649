"""What the engine needs of an upstream client: send one request, read its
answer. The attempt loop talks to a `Transport`, never to aiohttp, so engine
tests can hand it a scripted one — no sockets, no real timeouts. The real
one is `upstream.Upstream`.

A transport raises one of `upstream.TRANSPORT_ERRORS` (an OSError, a
TimeoutError or aiohttp's ClientError) when there is no (more) answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol


class Headers(Protocol):
    def get(self, name: str, default: str = "") -> str: ...
    def items(self) -> Iterable[tuple[str, str]]: ...


class Reply(Protocol):
    """An upstream answer whose status and headers are in; its body is read on demand."""

    status: int
    headers: Headers  # case-insensitive; `items()` gives every pair, repeats included

    def is_event_stream(self) -> bool: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The (decoded) body, each network read as it arrives."""

    async def read(self, limit: int | None) -> bytes:
        """The whole body, or its first `limit` bytes."""

    def keep_waiting(self, seconds: float | None) -> None:
        """From now on, allow `seconds` between reads."""

    def close(self) -> None:
        """Let go of the connection; the provider stops generating."""


class Transport(Protocol):
    async def send(self, url: str, headers: Iterable[tuple[str, str]], body: bytes,
                   read_timeout: float) -> Reply:
        """POST; return once the answer's status and headers are in. `read_timeout`
        bounds every wait for the upstream from the moment the request is written."""

    async def aclose(self) -> None: ...
