"""Plan the candidates for one call: provider × key × model, in order.

The addressed provider comes first (its configured keys, or the client's own
credentials), then the configured fallbacks with the model rewritten. The
client's credentials are only ever paired with the origin the client
addressed; a fallback elsewhere needs a configured key or is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Config
from .providers import Provider, ProviderTable
from .recognise import LlmCall, fingerprint


@dataclass(frozen=True)
class Candidate:
    provider: Provider
    model: str
    key: str | None = field(repr=False)  # a configured key; None: the client's own
    fingerprint: str  # of whichever credential is sent ("" when none)
    url: str  # where the call goes, in the client's protocol

    @property
    def label(self) -> str:
        """How the trail names this candidate: provider, plus the key's
        fingerprint when the provider has several keys to tell apart."""
        if len(self.provider.keys) > 1:
            return f"{self.provider.name}{self.fingerprint}"
        return self.provider.name


@dataclass(frozen=True)
class Plan:
    candidates: tuple[Candidate, ...]
    skipped: tuple[str, ...]  # trail notes for fallbacks that could not be used


def plan(call: LlmCall, config: Config, table: ProviderTable,
         key_order: Callable[[Provider, tuple[str, ...]], tuple[str, ...]] = lambda p, k: k,
         ) -> Plan:
    """All candidates for `call`, best first. `key_order` lets the caller put
    a provider's keys in rotation order (least recently used first)."""
    candidates: list[Candidate] = []
    skipped: list[str] = []
    steps = [(call.provider, call.model, call.url)]
    for target in config.fallbacks_for(call.model):
        provider = table.by_name[target.provider]
        steps.append((provider, target.model_for(call.model),
                      table.endpoint_url(provider, call.protocol)))
    for provider, model, url in steps:
        if provider.keys:
            for key in key_order(provider, provider.keys):
                candidates.append(Candidate(provider, model, key, fingerprint(key), url))
        elif provider.origin == call.provider.origin:
            fp = fingerprint(call.credential) if call.credential else ""
            candidates.append(Candidate(provider, model, None, fp, url))
        else:
            skipped.append(f"{provider.name} skipped (no key configured)")
    unique: dict[tuple[str, str, str], Candidate] = {}
    for c in candidates:
        unique.setdefault((c.provider.name, c.model, c.fingerprint), c)
    return Plan(tuple(unique.values()), tuple(skipped))
