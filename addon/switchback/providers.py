"""Which provider a URL belongs to: built-in knowledge plus the config.

Without a config Switchback still recognises the common OpenAI-style hosts,
so cooldowns and the first-chunk gate work for them out of the box. A
configured provider with the same name replaces the built-in one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlsplit

from .protocols.spec import SPECS, by_path
from .protocols.translators import translator
from .vocabulary import AUTO, Protocol, Rescue


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str  # normalised: no trailing slash
    keys: tuple[str, ...] = field(default=(), repr=False)  # secrets: never printed
    protocol: str = AUTO  # AUTO, or a Protocol value it is configured to speak
    # How a stream cut mid-answer is continued here, and whether a prefilled
    # answer's start must be marked `prefix: true` (Mistral, DeepSeek).
    continuation: Rescue = Rescue.PREFILL
    prefix: bool = False

    @property
    def fixed(self) -> Protocol | None:
        """The protocol it is configured to speak; None when probed (auto)."""
        return None if self.protocol == AUTO else Protocol(self.protocol)

    @cached_property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): the client's own key may go only here."""
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.scheme, (parts.hostname or "").lower(), port

    @cached_property
    def path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")


# Prefill is documented by Groq, OpenRouter and Anthropic, and by Mistral and
# DeepSeek with `prefix: true`. The others document none: a trailing assistant
# message may be answered there as a finished turn, a new answer that no
# splice could tell from a continuation — so a cut stream restarts there.
_RESTART = Rescue.RESTART
BUILTIN: Mapping[str, Provider] = {
    p.name: p
    for p in (
        Provider("openai", "https://api.openai.com/v1", continuation=_RESTART),
        Provider("groq", "https://api.groq.com/openai/v1"),
        Provider("openrouter", "https://openrouter.ai/api/v1"),
        Provider("together", "https://api.together.xyz/v1", continuation=_RESTART),
        Provider("mistral", "https://api.mistral.ai/v1", prefix=True),
        Provider("deepseek", "https://api.deepseek.com", prefix=True),
        Provider("fireworks", "https://api.fireworks.ai/inference/v1", continuation=_RESTART),
        Provider("gemini", "https://generativelanguage.googleapis.com/v1beta/openai",
                 continuation=_RESTART),
        Provider("xai", "https://api.x.ai/v1", continuation=_RESTART),
        Provider("cerebras", "https://api.cerebras.ai/v1", continuation=_RESTART),
        Provider("perplexity", "https://api.perplexity.ai", continuation=_RESTART),
        Provider("anthropic", "https://api.anthropic.com/v1"),
    )
}

@dataclass(frozen=True)
class Endpoint:
    """Where a request goes: a provider, the protocol it speaks there, and
    whether it only counts tokens (Messages' `count_tokens`)."""

    provider: Provider
    protocol: Protocol
    counting: bool = False


class ProviderTable:
    """Looks up the provider whose base URL a request falls under."""

    def __init__(self, configured: Mapping[str, Provider]) -> None:
        self.by_name: dict[str, Provider] = {**BUILTIN, **configured}
        # Longest base path first, so a more specific provider wins on one host.
        self._ordered = sorted(self.by_name.values(), key=lambda p: -len(p.path))

    def __iter__(self) -> Iterator[Provider]:
        return iter(self.by_name.values())

    def is_provider_origin(self, host: str, port: int) -> bool:
        """True when some provider's base URL is on this host and port."""
        return any(p.origin[1:] == (host.lower(), port) for p in self._ordered)

    def match(self, url: str) -> Endpoint | None:
        """The LLM endpoint a URL under a known base URL is (a protocol
        recognised only on some hosts: there, or where configured). A call a
        provider configured for another protocol could not be translated to
        is none: it passes through as it came."""
        for provider, rest in self.under(url):
            found = by_path(rest)
            if found is None:
                continue
            protocol, counting = found
            fixed, hosts = provider.fixed, SPECS[protocol].hosts
            if fixed is not None and fixed is not protocol and translator(protocol, fixed) is None:
                continue
            if hosts is None or fixed is protocol or provider.origin[1] in hosts:
                return Endpoint(provider, protocol, counting)
        return None

    def under(self, url: str) -> Iterator[tuple[Provider, str]]:
        """Each provider whose base URL `url` falls under, most specific first,
        with the rest of the path (no trailing slash)."""
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, (parts.hostname or "").lower(), port)
        path = parts.path.rstrip("/")
        for provider in self._ordered:
            if provider.origin == origin and path.startswith(provider.path):
                yield provider, path[len(provider.path):]
