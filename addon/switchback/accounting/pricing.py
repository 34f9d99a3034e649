"""What a call cost in USD: the config's own prices first, then genai-prices'
bundled data — read offline, never updated at run time. A model neither
knows is unpriced: its tokens still count, its cost is never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ..protocols.usage import Usage

MILLION = 1_000_000
PRICES_CHECKED = 3600  # seconds: how often the prices in force are looked up again


@dataclass(frozen=True)
class Price:
    """USD per million tokens, as a `pricing:` entry gives them. Cached input
    costs `cached_input`, input written to the cache `cache_write` (else
    `input`, both); reasoning is output."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached, usage.input)
        written = min(usage.cache_write, usage.input - cached)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        return ((usage.input - cached - written) * self.input + cached * cached_rate
                + written * write_rate + usage.output * self.output) / MILLION


class Pricing:
    """Prices calls by (provider base URL, model)."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def cost(self, base_url: str, model: str, usage: Usage) -> float | None:
        """USD for `usage` of `model` at the provider serving `base_url`; None
        when no price is known."""
        price = self.overrides.get(model)
        if price is not None:
            return price.cost(usage)
        prices = _prices(base_url, model, int(time.time() // PRICES_CHECKED))
        if prices is None or isinstance(prices, Price):
            return None if prices is None else prices.cost(usage)
        from genai_prices.types import Usage as PricesUsage

        # genai-prices counts cache reads and writes inside input_tokens, as Usage does.
        cached = min(usage.cached, usage.input)
        calculated = prices.calc_price(PricesUsage(
            input_tokens=usage.input, cache_read_tokens=cached or None,
            cache_write_tokens=min(usage.cache_write, usage.input - cached) or None,
            output_tokens=usage.output))
        return float(calculated["total_price"])


@lru_cache(maxsize=1024)
def _prices(base_url: str, model: str, hour: int) -> Any:
    """A model's prices this hour: the data dates price changes, and finding
    the prices in force costs more than using them."""
    found = _model(base_url, model)
    if found is None:
        return None
    prices = found.get_prices(datetime.now(timezone.utc))
    return _flat(prices) or prices


def _flat(prices: Any) -> Price | None:
    """genai-prices' prices as a `Price` when that is all they are — a rate
    per million for input, cached input and output, no tiers and no price
    per request — which prices a call in a microsecond; else None."""
    from decimal import Decimal

    rates = (prices.input_mtok, prices.output_mtok, prices.cache_read_mtok,
             prices.cache_write_mtok)
    if prices.requests_kcount is not None or not all(
            isinstance(rate, Decimal) for rate in rates[:2]) \
            or not all(isinstance(rate, (Decimal, type(None))) for rate in rates[2:]):
        return None
    return Price(float(rates[0]), float(rates[1]),
                 *(None if rate is None else float(rate) for rate in rates[2:]))


@lru_cache(maxsize=1024)
def _model(base_url: str, model: str) -> Any:
    """genai-prices' entry for a model: at the provider its URL names
    when genai-prices knows the host, else wherever the model's name is
    known (an OpenAI-compatible gateway serving the same models). Found
    once per (URL, model): a lookup walks every provider's patterns."""
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    for provider_url in (base_url, None):
        try:
            _, info = snapshot.find_provider_model(model, None, None, provider_url)
        except LookupError:
            continue
        return info
    return None
