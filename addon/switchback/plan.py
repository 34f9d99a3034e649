"""Plan the candidates for one call: provider × key × model, in order.

The addressed provider comes first (its configured keys, or the client's own
credentials), then the configured fallbacks with the model rewritten. The
client's credentials are only ever paired with the origin the client
addressed; a fallback elsewhere needs a configured key or is skipped. Each
candidate knows both protocols' URLs, so switching protocol on a missing
endpoint needs no second plan; a provider that speaks a protocol the call
cannot be translated to is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from .config import Config, Target
from .protocols.spec import spec
from .protocols.translators import translator
from .providers import Provider, ProviderTable
from .recognise import LlmCall, fingerprint
from .vocabulary import Protocol


@dataclass(frozen=True)
class Candidate:
    provider: Provider
    model: str
    key: str | None = field(repr=False)  # a configured key; None: the client's own
    fingerprint: str  # of whichever credential is sent ("" when none)
    protocol: Protocol  # what this attempt speaks upstream
    url: str
    other_url: str  # where the other protocol lives on the same provider

    @property
    def label(self) -> str:
        """How the trail names this candidate: provider, plus the key's
        fingerprint when the provider has several keys to tell apart."""
        if len(self.provider.keys) > 1:
            return f"{self.provider.name}{self.fingerprint}"
        return self.provider.name

    @property
    def owner(self) -> str:
        """Who an answer of this candidate belongs to: the provider and key
        account (response ids and encrypted reasoning are scoped to it)."""
        return f"{self.provider.name}{self.fingerprint}"

    @property
    def can_switch(self) -> bool:
        """A provider configured to speak one protocol is never probed, nor
        one whose protocol has none to switch to."""
        return self.provider.fixed is None and spec(self.protocol).switch is not None \
            and self.url != self.other_url  # (a count of tokens is never switched)

    def switched(self) -> Candidate:
        """The same provider, key and model in the protocol switched to."""
        other = spec(self.protocol).switch
        assert other is not None, "only a candidate that can_switch is switched"
        return replace(self, protocol=other, url=self.other_url, other_url=self.url)


def endpoints(call: LlmCall, provider: Provider, protocol: Protocol) -> tuple[str, str]:
    """Where `protocol`, and the one it switches to, live on `provider` (the
    same URL twice when it switches to none). On the provider the client
    addressed: its own URL (query string included), the endpoint swapped. A
    call that only counts tokens goes to the counting endpoint, never switched."""
    other = spec(protocol).switch or protocol
    if call.counting:
        url = call.url if provider.name == call.provider.name \
            else provider.base_url + str(spec(protocol).count_path)
        return url, url
    if provider.name != call.provider.name:
        return provider.base_url + spec(protocol).path, provider.base_url + spec(other).path
    if protocol is call.protocol:
        return call.url, _swap(call.url, provider.path + spec(other).path)
    return _swap(call.url, provider.path + spec(protocol).path), \
        call.url if other is call.protocol else _swap(call.url, provider.path + spec(other).path)


def _swap(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


@dataclass(frozen=True)
class Plan:
    candidates: tuple[Candidate, ...]
    skipped: tuple[str, ...]  # trail notes for fallbacks that could not be used


def plan(call: LlmCall, config: Config, table: ProviderTable,
         key_order: Callable[[Provider, tuple[str, ...]], tuple[str, ...]] = lambda p, k: k,
         remembered: Callable[[Provider, str], Protocol | None] = lambda p, m: None,
         targets: tuple[Target, ...] | None = None) -> Plan:
    """All candidates for `call`, best first. `key_order` puts a provider's
    keys in rotation order; `remembered` gives the protocol that served
    (provider, model) when the client's own endpoint was missing there. A
    provider's configured protocol wins over both. With `targets` (a context
    fallback's), only those, in their order."""
    candidates: list[Candidate] = []
    skipped: list[str] = []
    steps = [] if targets is not None else [(call.provider, call.model)]
    steps += [(table.by_name[t.provider], t.model_for(call.model))
              for t in (config.fallbacks_for(call.model) if targets is None else targets)]
    for provider, model in steps:
        protocol = provider.fixed or remembered(provider, model) or call.protocol
        if protocol is not call.protocol and (call.counting
                                              or translator(call.protocol, protocol) is None):
            skipped.append(f"{provider.name} skipped (speaks {protocol}: no translation "
                           f"from {call.protocol})")
            continue
        url, other_url = endpoints(call, provider, protocol)
        if provider.keys:
            for key in key_order(provider, provider.keys):
                candidates.append(Candidate(provider, model, key, fingerprint(key), protocol,
                                            url, other_url))
        elif provider.origin == call.provider.origin:
            fp = fingerprint(call.credential) if call.credential else ""
            candidates.append(Candidate(provider, model, None, fp, protocol, url, other_url))
        else:
            skipped.append(f"{provider.name} skipped (no key configured)")
    unique: dict[tuple[str, str, str], Candidate] = {}
    for c in candidates:
        unique.setdefault((c.provider.name, c.model, c.fingerprint), c)
    return Plan(tuple(unique.values()), tuple(skipped))


def ahead(candidates: tuple[Candidate, ...], owner: str | None) -> tuple[Candidate, ...]:
    """`candidates` with those of `owner` (provider and key, `Candidate.owner`)
    first, the rest in their order: a session goes back to the account that
    holds its prompt cache and can read its reasoning, ahead of rotation."""
    if owner is None:
        return candidates
    return tuple(sorted(candidates, key=lambda c: c.owner != owner))
