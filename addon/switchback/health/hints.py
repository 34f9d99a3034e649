"""Provider rate-limit hints: response headers and error bodies → how long to wait.

Pure functions: nothing here reads a clock; `now` (epoch seconds) is passed in
so HTTP-dates and absolute reset times become durations. Garbage values are
ignored, never raised: a hint we cannot read is no hint, and the caller falls
back to its own backoff.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ErrorRecord


@dataclass(frozen=True)
class Hints:
    """What an upstream answer says about waiting, in seconds from `now`."""

    retry_after: float | None = None  # explicit "wait this long" (header, RetryInfo, prose)
    should_retry: bool | None = None  # x-should-retry, the server's word
    exhausted_reset: float | None = None  # a bucket at remaining 0 refills in this long
    per_day: bool = False  # a daily quota ran out: cool for long, not seconds
    window_reset: float | None = None  # a subscription window refused the credential until then

    @property
    def wait(self) -> float | None:
        """The cooldown these hints ask for: the largest that applies."""
        return _largest([self.retry_after, self.exhausted_reset, self.window_reset])


# A plain non-negative decimal. Stricter than float(): no sign, exponent,
# "nan", "inf", underscores or non-ASCII digits, which no provider sends.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"

# Go time.Duration units (also protobuf's "s"); both micro signs, as Go accepts.
_UNITS = {
    "h": 3600.0, "m": 60.0, "s": 1.0,
    "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ns": 1e-9,
}
_UNIT = "(?:ms|us|\u00b5s|\u03bcs|ns|h|m|s)"  # "ms" before "m": findall reads "20ms" as 20 ms
_DURATION = f"(?:{_NUMBER}{_UNIT})+"
_DURATION_PART = re.compile(f"({_NUMBER})({_UNIT})")
_PROSE_DELAY = re.compile(rf"(?:try again|retry) in ({_DURATION})\b", re.IGNORECASE)

# Rate-limit header names that carry a bucket's `remaining`; the bucket's
# reset is the same name with "remaining" swapped for "reset", which pairs
# x-ratelimit-remaining-tokens, anthropic-ratelimit-tokens-remaining,
# x-ratelimit-remaining (Together, OpenRouter), x-tokenlimit-remaining and
# x-amzn-ratelimit-* alike.
_BUCKET_HEADER = re.compile(r"(?:x|x-amzn|anthropic)-(?:ratelimit|tokenlimit)(?:-[a-z0-9_-]+)?")

_SHOULD_RETRY = {"true": True, "false": False}
# Anthropic's subscription windows: `anthropic-ratelimit-unified-status` and
# per window (`-5h-status`, `-7d-status`, …), each with its `-reset` (epoch seconds).
_WINDOW_STATUS = re.compile(r"anthropic-ratelimit-unified(?:-[a-z0-9_]+)?-status")


def _largest(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _number(text: str) -> float | None:
    text = text.strip()
    if not re.fullmatch(_NUMBER, text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None  # "1" * 400 is inf


def _until(when: datetime | None, now: float) -> float | None:
    """An absolute time as seconds from `now`; past is 0, no timezone is no hint."""
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def parse_duration(text: str) -> float | None:
    """Go-style (`1h2m3.5s`, `6m0s`, `20ms`, `500us`) or protobuf (`12.7s`) duration in seconds."""
    text = text.strip()
    if not re.fullmatch(_DURATION, text):
        return None
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
    return seconds if math.isfinite(seconds) else None


def parse_retry_after(value: str, now: float) -> float | None:
    """`Retry-After`: delay seconds (int or float) or an HTTP-date."""
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        return _until(email.utils.parsedate_to_datetime(value.strip()), now)
    except (TypeError, ValueError, IndexError, OverflowError):  # its parser is lenient, and leaky
        return None


def parse_reset(value: str, now: float) -> float | None:
    """A bucket's reset, as seconds from `now`.

    Providers disagree on the format, but the formats do not overlap: a bare
    number (by magnitude: ≥1e12 epoch ms, ≥1e9 epoch s, else seconds), a Go
    duration (always has a unit) or an RFC 3339 time (has dashes and a `T`).
    """
    number = _number(value)
    if number is not None:
        if number >= 1e12:
            return max(0.0, number / 1000 - now)
        if number >= 1e9:
            return max(0.0, number - now)
        return number
    duration = parse_duration(value)
    if duration is not None:
        return duration
    try:
        return _until(datetime.fromisoformat(value.strip()), now)
    except ValueError:
        return None


def _header_retry_after(h: Mapping[str, str], now: float) -> float | None:
    """The millisecond headers are more precise, so they win over `retry-after`."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        if (ms := _number(h.get(name, ""))) is not None:
            return ms / 1000
    return parse_retry_after(h["retry-after"], now) if "retry-after" in h else None


def _exhausted_resets(h: Mapping[str, str], now: float) -> Iterator[float]:
    """The reset of every bucket whose remaining is 0: the next call there is refused."""
    for name, value in h.items():
        parts = name.split("-")
        if "remaining" not in parts or not _BUCKET_HEADER.fullmatch(name) or _number(value) != 0:
            continue
        reset_name = "-".join("reset" if p == "remaining" else p for p in parts)
        if reset_name in h and (reset := parse_reset(h[reset_name], now)) is not None:
            yield reset


def _window_resets(h: Mapping[str, str], now: float) -> Iterator[float]:
    """The reset of every subscription window that refused the credential."""
    for name, value in h.items():
        if _WINDOW_STATUS.fullmatch(name) and value.strip().lower() == "rejected":
            reset = h.get(name.removesuffix("-status") + "-reset")
            if reset is not None and (seconds := parse_reset(reset, now)) is not None:
                yield seconds


def _lower(headers: Mapping[Any, Any]) -> dict[str, str]:
    """Header names in any case; non-string entries (from JSON bodies) are dropped."""
    return {k.lower(): v for k, v in headers.items() if isinstance(k, str) and isinstance(v, str)}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _details(error: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """google.rpc detail messages of one kind (`RetryInfo`, `QuotaFailure`)."""
    type_url = f"type.googleapis.com/google.rpc.{kind}"
    return [d for d in _dicts(error.get("details")) if d.get("@type") == type_url]


def _body_delays(error: dict[str, Any]) -> Iterator[float]:
    """Gemini's RetryInfo.retryDelay and OpenAI's "Please try again in 1.146s"."""
    for detail in _details(error, "RetryInfo"):
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (seconds := parse_duration(delay)) is not None:
            yield seconds
    if isinstance(message := error.get("message"), str):
        for match in _PROSE_DELAY.finditer(message):
            if (seconds := parse_duration(match.group(1))) is not None:
                yield seconds


def _is_per_day(error: dict[str, Any]) -> bool:
    """Gemini tells daily quotas by QuotaFailure id: `GenerateRequestsPerDayPerProjectPerModel`."""
    return any(
        isinstance(quota := violation.get("quotaId"), str)
        and "perday" in re.sub(r"[-_\s]", "", quota.lower())
        for failure in _details(error, "QuotaFailure")
        for violation in _dicts(failure.get("violations"))
    )


def parse_hints(headers: Mapping[str, str], error: ErrorRecord | None, now: float) -> Hints:
    """Read every hint we know from one upstream answer (success or error).

    OpenRouter repeats its rate-limit headers inside the 429 body at
    `error.metadata.headers`; those are read like real headers.
    """
    h = _lower(headers)
    errors = error.objects if error is not None else ()
    header_sets = [h] + [
        _lower(embedded)
        for error in errors
        if isinstance(metadata := error.get("metadata"), dict)
        and isinstance(embedded := metadata.get("headers"), dict)
    ]
    return Hints(
        retry_after=_largest(
            [_header_retry_after(hs, now) for hs in header_sets]
            + [delay for error in errors for delay in _body_delays(error)]
        ),
        should_retry=_SHOULD_RETRY.get(h.get("x-should-retry", "").strip().lower()),
        exhausted_reset=_largest([r for hs in header_sets for r in _exhausted_resets(hs, now)]),
        per_day=any(_is_per_day(error) for error in errors),
        window_reset=_largest(list(_window_resets(h, now))),
    )
