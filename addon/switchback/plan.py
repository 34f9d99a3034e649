"""Plan the candidates for one call: provider × key × model, in order.

The addressed provider comes first (its configured keys, or the client's own
credentials), then the configured fallbacks with the model rewritten. The
client's credentials are only ever paired with the origin the client
addressed; a fallback elsewhere needs a configured key or is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from .config import Config
from .providers import ENDPOINTS, Provider, ProviderTable
from .recognise import LlmCall, fingerprint


@dataclass(frozen=True)
class Candidate:
    provider: Provider
    model: str
    key: str | None = field(repr=False)  # a configured key; None: the client's own
    fingerprint: str  # of whichever credential is sent ("" when none)
    protocol: str  # what this attempt speaks upstream: "chat" or "responses"
    url: str

    @property
    def label(self) -> str:
        """How the trail names this candidate: provider, plus the key's
        fingerprint when the provider has several keys to tell apart."""
        if len(self.provider.keys) > 1:
            return f"{self.provider.name}{self.fingerprint}"
        return self.provider.name


def endpoint(call: LlmCall, provider: Provider, protocol: str) -> str:
    """Where `protocol` lives on `provider`. On the provider the client
    addressed, its own URL (query string included) with the endpoint swapped."""
    suffix = next(s for s, p in ENDPOINTS.items() if p == protocol)
    if provider.name != call.provider.name:
        return provider.base_url + suffix
    parts = urlsplit(call.url)
    return urlunsplit(parts._replace(path=provider.path + suffix))


@dataclass(frozen=True)
class Plan:
    candidates: tuple[Candidate, ...]
    skipped: tuple[str, ...]  # trail notes for fallbacks that could not be used


def plan(call: LlmCall, config: Config, table: ProviderTable,
         key_order: Callable[[Provider, tuple[str, ...]], tuple[str, ...]] = lambda p, k: k,
         remembered: Callable[[Provider, str], str | None] = lambda p, m: None) -> Plan:
    """All candidates for `call`, best first. `key_order` puts a provider's
    keys in rotation order; `remembered` gives the protocol that last worked
    for (provider, model). A provider's configured protocol wins over both."""
    candidates: list[Candidate] = []
    skipped: list[str] = []
    steps = [(call.provider, call.model)]
    steps += [(table.by_name[t.provider], t.model_for(call.model))
              for t in config.fallbacks_for(call.model)]
    for provider, model in steps:
        protocol = provider.protocol if provider.protocol != "auto" else (
            remembered(provider, model) or call.protocol)
        url = endpoint(call, provider, protocol)
        if provider.keys:
            for key in key_order(provider, provider.keys):
                candidates.append(Candidate(provider, model, key, fingerprint(key), protocol,
                                            url))
        elif provider.origin == call.provider.origin:
            fp = fingerprint(call.credential) if call.credential else ""
            candidates.append(Candidate(provider, model, None, fp, protocol, url))
        else:
            skipped.append(f"{provider.name} skipped (no key configured)")
    unique: dict[tuple[str, str, str], Candidate] = {}
    for c in candidates:
        unique.setdefault((c.provider.name, c.model, c.fingerprint), c)
    return Plan(tuple(unique.values()), tuple(skipped))
