"""Budgets: how much a principal may spend per period, and whether a call fits.

A principal is whoever a call is booked to: a user name ("team-a"), a key
fingerprint ("#3fa9c2") or "anonymous". A budget caps USD or tokens per
period; a period is a UTC calendar window (hour, day, ISO week, month) or a
fixed duration aligned to the epoch, so every replica computes the same
window from the same clock. Pure: the ledgers keep the figures.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

TOLERANCE = 1e-9  # float sums of prices must not refuse a call that fits exactly
HOUR, DAY = 3600.0, 86400.0
WEEK = 7 * DAY
MONDAY = 4 * DAY  # 1970-01-01 was a Thursday; the first Monday came four days later
CALENDAR = ("hour", "day", "week", "month")
UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": HOUR, "d": DAY, "w": WEEK}
DURATION = re.compile(r"(\d+)([smhdw])")


class Unit(enum.Enum):
    USD = "usd"
    TOKENS = "tokens"


@dataclass(frozen=True)
class Period:
    name: str  # "hour", "day", "week", "month", or a duration as written ("30m")
    seconds: float | None = None  # set for a duration; None for the calendar periods

    def window(self, now: float) -> tuple[float, float]:
        """(start, end) epoch seconds of the window holding `now`. Calendar
        periods are UTC calendar windows (the week starts on Monday, as ISO's
        does); a duration's windows are aligned to the epoch."""
        if self.seconds is not None:
            return _aligned(now, self.seconds, 0.0)
        if self.name == "hour":
            return _aligned(now, HOUR, 0.0)
        if self.name == "day":
            return _aligned(now, DAY, 0.0)
        if self.name == "week":
            return _aligned(now, WEEK, MONDAY)
        if self.name == "month":
            moment = datetime.fromtimestamp(now, UTC)
            start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
            following = (datetime(moment.year + 1, 1, 1, tzinfo=UTC) if moment.month == 12
                         else datetime(moment.year, moment.month + 1, 1, tzinfo=UTC))
            return start.timestamp(), following.timestamp()
        raise ValueError(f"unknown period {self.name!r}")


def _aligned(now: float, length: float, offset: float) -> tuple[float, float]:
    start = math.floor((now - offset) / length) * length + offset
    return start, start + length


def parse_period(value: object) -> Period | None:
    """A calendar period's name, a duration ('90s', '30m', '12h', '7d', '2w')
    or a positive number of seconds; None when `value` is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            return None
        seconds = float(value)
        return Period(f"{int(seconds) if seconds.is_integer() else seconds}s", seconds)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in CALENDAR:
        return Period(text)
    match = DURATION.fullmatch(text)
    if match is None or int(match[1]) == 0:
        return None
    return Period(text, int(match[1]) * UNIT_SECONDS[match[2]])


@dataclass(frozen=True)
class Amount:
    usd: float = 0.0
    tokens: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.usd + other.usd, self.tokens + other.tokens)


@dataclass(frozen=True)
class Budget:
    owner: str  # the config key it came from: a principal name, "#fingerprint" or "*"
    unit: Unit
    limit: float  # USD, or tokens
    period: Period

    @property
    def label(self) -> str:
        """Names the budget among its principal's (config rejects duplicates)."""
        return f"{self.period.name} {self.unit.value}"

    def of(self, amount: Amount) -> float:
        """The part of `amount` this budget counts."""
        return amount.usd if self.unit is Unit.USD else amount.tokens


def _shown(budget: Budget, value: float) -> str:
    """`value` in the budget's unit, as a person reads it."""
    return _usd(value) if budget.unit is Unit.USD else f"{round(value):,} tokens"


def _usd(value: float) -> str:
    """Cents, or as many decimals (up to six) as a small price needs."""
    text = f"{value:,.6f}".rstrip("0")
    decimals = len(text.partition(".")[2])
    return f"${text}" if decimals >= 2 else f"${value:,.2f}"


def budgets_for(principal: str, budgets: Mapping[str, tuple[Budget, ...]]
                ) -> tuple[Budget, ...]:
    """The principal's own budgets, else those under "*", else (). An own
    entry wins even when empty: that is how a principal is exempted."""
    if principal in budgets:
        return budgets[principal]
    return budgets.get("*", ())


def _iso(moment: float) -> str:
    """Epoch seconds as ISO 8601 UTC, as /status and messages show a window."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Account:
    """One principal's figures under one budget in one window."""

    principal: str
    budget: Budget
    window_start: float
    spent: Amount = Amount()
    reserved: Amount = Amount()
    calls: int = 0
    refused: int = 0
    unpriced_calls: int = 0

    def row(self) -> dict:
        """The account as /status shows it: the limit only in its own unit."""
        limit = ({"limit_usd": round(self.budget.limit, 6)} if self.budget.unit is Unit.USD
                 else {"limit_tokens": round(self.budget.limit)})
        return {"principal": self.principal, "period": self.budget.period.name,
                "window_start": _iso(self.window_start), **limit,
                "spent_usd": round(self.spent.usd, 6), "spent_tokens": self.spent.tokens,
                "reserved_usd": round(self.reserved.usd, 6),
                "reserved_tokens": self.reserved.tokens, "calls": self.calls,
                "refused": self.refused, "unpriced_calls": self.unpriced_calls}


@dataclass(frozen=True)
class Refusal:
    """Why a call was not let through: the first budget it would overrun."""

    principal: str
    budget: Budget
    window_start: float
    spent: float  # in the budget's unit
    reserved: float
    estimate: float

    def message(self) -> str:
        """What the caller reads: whose budget, how big, how much is gone."""
        budget = self.budget
        return (f"Budget exceeded for {self.principal}: {_shown(budget, budget.limit)} per "
                f"{budget.period.name} (window from {_iso(self.window_start)}), "
                f"{_shown(budget, self.spent)} spent and {_shown(budget, self.reserved)} "
                f"reserved; this call may cost up to {_shown(budget, self.estimate)}.")


def admits(limit: float, spent: float, reserved: float, estimate: float) -> bool:
    """Whether the call fits; the tolerance absorbs float sums of prices."""
    return spent + reserved + estimate <= limit + TOLERANCE
