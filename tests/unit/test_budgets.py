"""Budgets' pure core: periods and their windows, what fits, what a refusal
and a /status row say."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from switchback.accounting.budgets import (
    Account, Amount, Budget, Period, Refusal, Unit, admits, budgets_for, parse_period)


def at(text: str) -> float:
    """Epoch seconds of a UTC time written as ISO 8601 without a zone."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    # calendar hours and days, including the instant a window starts
    (Period("hour"), "2026-11-30T13:45:10", "2026-11-30T13:00:00", "2026-11-30T14:00:00"),
    (Period("hour"), "2026-11-30T13:00:00", "2026-11-30T13:00:00", "2026-11-30T14:00:00"),
    (Period("hour"), "2026-12-31T23:59:59", "2026-12-31T23:00:00", "2027-01-01T00:00:00"),
    (Period("day"), "2026-11-30T13:45:10", "2026-11-30T00:00:00", "2026-12-01T00:00:00"),
    (Period("day"), "2026-12-31T23:59:59.5", "2026-12-31T00:00:00", "2027-01-01T00:00:00"),
    (Period("day"), "2027-01-01T00:00:00", "2027-01-01T00:00:00", "2027-01-02T00:00:00"),
    # ISO weeks start on Monday 00:00 UTC (2026-11-30 is a Monday)
    (Period("week"), "2026-11-30T00:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
    (Period("week"), "2026-12-06T23:59:59", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
    (Period("week"), "2026-12-03T12:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
    (Period("week"), "2026-12-31T08:00:00", "2026-12-28T00:00:00", "2027-01-04T00:00:00"),
    (Period("week"), "1970-01-01T00:00:00", "1969-12-29T00:00:00", "1970-01-05T00:00:00"),
    # calendar months, of every length, and the year's end
    (Period("month"), "2026-11-30T23:59:59", "2026-11-01T00:00:00", "2026-12-01T00:00:00"),
    (Period("month"), "2026-12-15T10:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    (Period("month"), "2027-01-01T00:00:00", "2027-01-01T00:00:00", "2027-02-01T00:00:00"),
    (Period("month"), "2027-02-14T00:00:00", "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
    (Period("month"), "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
    # durations are aligned to the epoch
    (Period("30m", 1800), "2026-11-30T13:45:10", "2026-11-30T13:30:00", "2026-11-30T14:00:00"),
    (Period("90s", 90), "2026-11-30T00:01:40", "2026-11-30T00:01:30", "2026-11-30T00:03:00"),
    (Period("12h", 43200), "2026-11-30T13:45:10", "2026-11-30T12:00:00", "2026-12-01T00:00:00"),
    # 7d from the epoch runs Thursday to Thursday, unlike a week
    (Period("7d", 604800), "2026-11-30T13:00:00", "2026-11-26T00:00:00", "2026-12-03T00:00:00"),
])
def test_window(period: Period, now: str, start: str, end: str) -> None:
    assert period.window(at(now)) == (at(start), at(end))


def test_an_unknown_calendar_period_has_no_window() -> None:
    with pytest.raises(ValueError, match="fortnight"):
        Period("fortnight").window(0.0)


@pytest.mark.parametrize(("value", "period"), [
    ("hour", Period("hour")),
    ("day", Period("day")),
    ("week", Period("week")),
    ("month", Period("month")),
    (" Day ", Period("day")),
    ("90s", Period("90s", 90.0)),
    ("30m", Period("30m", 1800.0)),
    ("12h", Period("12h", 43200.0)),
    ("7d", Period("7d", 604800.0)),
    ("2w", Period("2w", 1209600.0)),
    (3600, Period("3600s", 3600.0)),
    (0.5, Period("0.5s", 0.5)),
    (90.0, Period("90s", 90.0)),
    # invalid
    ("0m", None),
    ("-5m", None),
    ("1.5h", None),
    ("30 m", None),
    ("m", None),
    ("30", None),
    ("30y", None),
    ("", None),
    ("fortnight", None),
    (0, None),
    (-60, None),
    (float("nan"), None),
    (float("inf"), None),
    (True, None),
    (False, None),
    (None, None),
    (["day"], None),
    (b"day", None),
])
def test_parse_period(value: object, period: Period | None) -> None:
    assert parse_period(value) == period


USD_DAY = Budget("team-a", Unit.USD, 5.0, Period("day"))
TOKENS_MONTH = Budget("*", Unit.TOKENS, 2_000_000, Period("month"))


def test_a_budget_is_labelled_by_period_and_unit_and_counts_its_own_unit() -> None:
    assert USD_DAY.label == "day usd"
    assert Budget("x", Unit.TOKENS, 10, Period("30m", 1800)).label == "30m tokens"
    assert USD_DAY.of(Amount(0.25, 700)) == 0.25
    assert TOKENS_MONTH.of(Amount(0.25, 700)) == 700
    assert Amount(0.25, 700) + Amount(0.5, 300) == Amount(0.75, 1000)


@pytest.mark.parametrize(("limit", "spent", "reserved", "estimate", "fits"), [
    (5.0, 4.98, 0.01, 0.01, True),  # exactly at the limit
    (5.0, 4.98, 0.01, 0.02, False),
    (0.3, 0.1 + 0.1, 0.0, 0.1, True),  # 0.30000000000000004: float residue still fits
    (0.3, 0.2, 0.0, 0.1001, False),
    (1000, 1000, 0, 0, True),  # spent to the limit: a free call still fits
    (1000, 1001, 0, 0, False),  # overspent (the real cost exceeded the estimate)
    (1000, 0, 900, 101, False),  # what is reserved counts
    (0, 0, 0, 0, True),
])
def test_admits(limit: float, spent: float, reserved: float, estimate: float,
                fits: bool) -> None:
    assert admits(limit, spent, reserved, estimate) is fits


def test_budgets_for_prefers_the_principals_own_then_the_wildcard() -> None:
    budgets = {"team-a": (USD_DAY,), "*": (TOKENS_MONTH,), "exempt": ()}
    assert budgets_for("team-a", budgets) == (USD_DAY,)
    assert budgets_for("#3fa9c2", budgets) == (TOKENS_MONTH,)
    assert budgets_for("exempt", budgets) == ()
    assert budgets_for("team-a", {"*": (TOKENS_MONTH,)}) == (TOKENS_MONTH,)
    assert budgets_for("team-a", {"team-b": (USD_DAY,)}) == ()


def test_a_usd_refusal_names_principal_period_limit_and_spend() -> None:
    refusal = Refusal("team-a", USD_DAY, at("2026-11-30T00:00:00"), 4.98, 0.01, 0.05)
    assert refusal.message() == (
        "Budget exceeded for team-a: $5.00 per day (window from 2026-11-30T00:00:00Z), "
        "$4.98 spent and $0.01 reserved; this call may cost up to $0.05.")


def test_a_token_refusal_shows_tokens_with_thousands_separators() -> None:
    refusal = Refusal("#3fa9c2", TOKENS_MONTH, at("2026-11-01T00:00:00"), 1_999_000, 0, 5000)
    message = refusal.message()
    assert message.startswith("Budget exceeded for #3fa9c2: 2,000,000 tokens per month "
                              "(window from 2026-11-01T00:00:00Z)")
    assert "1,999,000 tokens spent" in message
    assert "up to 5,000 tokens." in message


def test_small_prices_keep_the_digits_that_matter() -> None:
    budget = Budget("x", Unit.USD, 0.001, Period("30m", 1800))
    message = Refusal("x", budget, 0.0, 0.0009, 0.0, 0.0003).message()
    assert "$0.001 per 30m (window from 1970-01-01T00:00:00Z)" in message
    assert "$0.0009 spent and $0.00 reserved" in message
    assert "up to $0.0003." in message


COMMON = {"principal", "period", "window_start", "spent_usd", "spent_tokens", "reserved_usd",
          "reserved_tokens", "calls", "refused", "unpriced_calls"}


def test_a_usd_row() -> None:
    account = Account("team-a", USD_DAY, at("2026-11-30T00:00:00"),
                      spent=Amount(1.23456789, 1200), reserved=Amount(0.1 + 0.2, 300),
                      calls=4, refused=2, unpriced_calls=1)
    row = account.row()
    assert set(row) == COMMON | {"limit_usd"}
    assert row == {"principal": "team-a", "period": "day",
                   "window_start": "2026-11-30T00:00:00Z", "limit_usd": 5.0,
                   "spent_usd": 1.234568, "spent_tokens": 1200, "reserved_usd": 0.3,
                   "reserved_tokens": 300, "calls": 4, "refused": 2, "unpriced_calls": 1}


def test_a_token_row() -> None:
    row = Account("#3fa9c2", TOKENS_MONTH, at("2026-11-01T00:00:00")).row()
    assert set(row) == COMMON | {"limit_tokens"}
    assert row["limit_tokens"] == 2_000_000
    assert row["window_start"] == "2026-11-01T00:00:00Z"
    assert row["principal"] == "#3fa9c2" and row["period"] == "month"
    assert [row[key] for key in sorted(COMMON - {"principal", "period", "window_start"})] == [
        0] * 7
