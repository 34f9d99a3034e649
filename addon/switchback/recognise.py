"""Recognise an OpenAI-style LLM call in a client request.

Anything not recognised — another path, another method, an unknown host, a
body that is not a JSON object with a model — is left to mitmproxy untouched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .jsonsafe import loads
from .providers import Endpoint, Provider, ProviderTable
from .vocabulary import Protocol

CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")


@dataclass(frozen=True)
class LlmCall:
    """One client call as Switchback understands it."""

    provider: Provider  # the provider the client addressed
    protocol: Protocol  # what the client speaks
    url: str  # exactly as the client sent it
    model: str
    stream: bool
    body: dict[str, Any] = field(repr=False)
    raw: bytes = field(repr=False)
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    credential: str | None = field(repr=False)  # the client's own key, if any
    counting: bool = False  # only counts the input's tokens (count_tokens): no answer, no bill


@lru_cache(maxsize=4096)
def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a key: safe to log."""
    return "#" + hashlib.sha256(secret.encode()).hexdigest()[:6]


def client_credential(headers: Iterable[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() in CREDENTIAL_HEADERS and value.strip():
            scheme, _, token = value.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token else value.strip()
    return None


class Unreadable(ValueError):
    """A request to an LLM endpoint whose body Switchback cannot understand."""


def llm_endpoint(method: str, url: str, table: ProviderTable) -> Endpoint | None:
    """The provider and protocol of a POST to a known provider's LLM endpoint."""
    return table.match(url) if method.upper() == "POST" else None


def recognise(method: str, url: str, headers: Iterable[tuple[str, str]], raw: bytes,
              table: ProviderTable) -> LlmCall | None:
    """An `LlmCall` for a POST to a known provider's LLM endpoint; None for
    anything else. `Unreadable` when it is such a POST but its body is not a
    JSON object with a model."""
    endpoint = llm_endpoint(method, url, table)
    return None if endpoint is None else read_call(endpoint, url, headers, raw)


def read_call(endpoint: Endpoint, url: str,
              headers: Iterable[tuple[str, str]], raw: bytes) -> LlmCall:
    """The `LlmCall` of a request to a known LLM endpoint (`llm_endpoint`);
    `Unreadable` when its body is not a JSON object with a model."""
    body = loads(raw)
    if not isinstance(body, dict):
        raise Unreadable("the body is not a JSON object")
    if not isinstance(body.get("model"), str):
        raise Unreadable("the body names no model")
    headers = tuple(headers)
    return LlmCall(
        provider=endpoint.provider,
        protocol=endpoint.protocol,
        url=url,
        model=body["model"],
        stream=body.get("stream") is True,
        body=body,
        raw=raw,
        headers=headers,
        credential=client_credential(headers),
        counting=endpoint.counting,
    )
