"""Rate-limit hints: every header and body family, malformed values, and a fuzz."""

from __future__ import annotations

import email.utils
import json
import math
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchback.health.errors import read_error
from switchback.health.hints import Hints, parse_duration, parse_hints, parse_reset, parse_retry_after

NOW = 1_750_000_000.0


def http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def gemini_error(*details: object, message: str = "Resource has been exhausted") -> dict:
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED",
                      "details": list(details)}}


def retry_info(delay: object) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(*quota_ids: object) -> dict:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaMetric": "generativelanguage.googleapis.com/x", "quotaId": q}
                       for q in quota_ids],
    }


def openrouter_error(headers: object) -> dict:
    return {"error": {"message": "Rate limit exceeded: free-models-per-day", "code": 429,
                      "metadata": {"headers": headers}}}


def openai_error(message: object) -> dict:
    return {"error": {"message": message, "type": "requests", "code": "rate_limit_exceeded"}}


# --- retry-after family ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "5"}, 5.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"RETRY-AFTER": " 7 "}, 7.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": http_date(NOW + 30)}, 30.0),
        ({"retry-after": http_date(NOW - 30)}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250.5"}, 0.2505),
        # the millisecond headers are read first, even when shorter
        ({"retry-after": "10", "retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "10", "X-Ms-Retry-After-Ms": "20"}, 0.02),
        # an unreadable millisecond header falls back to retry-after
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        # malformed: no hint
        ({"retry-after": ""}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "NaN"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e3"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "1" * 400}, None),
        ({"retry-after": "Wed, 32 Oct 2015 07:28:00 GMT"}, None),
        ({"retry-after": "Foo, 21 Oct"}, None),
        ({"retry-after": "1 Jan 99999999999999999999 00:00:00 GMT"}, None),  # OverflowError inside
        ({"retry-after-ms": "-5"}, None),
        ({"retry-after-ms": "NaN"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    hints = parse_hints(headers, None, NOW)
    assert hints.retry_after == pytest.approx(expected)
    assert hints.wait == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), (" TRUE ", True), ("false", False), ("False", False), ("maybe", None), ("", None)],
)
def test_should_retry(value: str, expected: bool | None) -> None:
    assert parse_hints({"X-Should-Retry": value}, None, NOW).should_retry is expected


def test_no_signals_no_hints() -> None:
    assert parse_hints({"content-type": "application/json"}, None, NOW) == Hints()
    assert Hints().wait is None


# --- durations and resets ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2m59.56s", 179.56),
        ("500us", 5e-4),
        ("500\u00b5s", 5e-4),  # micro sign
        ("500\u03bcs", 5e-4),  # Greek mu
        ("7ns", 7e-9),
        ("12.7s", 12.7),
        (".5s", 0.5),
        (" 30s ", 30.0),
        ("", None),
        ("5", None),
        ("-1s", None),
        ("1x", None),
        ("s", None),
        ("1.2.3s", None),
        ("5 s", None),
        ("NaNs", None),
        ("1e3s", None),
        ("1" * 400 + "h", None),
    ],
)
def test_parse_duration(text: str, expected: float | None) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # bare numbers by magnitude
        ("30", 30.0),
        ("0.5", 0.5),
        ("999999999", 999_999_999.0),  # just under 1e9: still seconds
        (str(int(NOW + 30)), 30.0),  # epoch seconds
        (str(int((NOW + 30) * 1000)), 30.0),  # epoch milliseconds
        (str(int(NOW - 30)), 0.0),  # past: 0
        (str(int((NOW - 30) * 1000)), 0.0),
        # Go durations and RFC 3339
        ("6m0s", 360.0),
        (rfc3339(NOW + 42), 42.0),
        (rfc3339(NOW + 42.5).replace("Z", "+00:00"), 42.5),
        (rfc3339(NOW - 42), 0.0),
        # malformed
        ("", None),
        ("-5", None),
        ("NaN", None),
        ("soon", None),
        ("2025-13-45T00:00:00Z", None),
        ("2025-06-15T12:00:00", None),  # no timezone: cannot place it
        ("2025-06-15T12:00:00+99:00", None),
    ],
)
def test_parse_reset(value: str, expected: float | None) -> None:
    assert parse_reset(value, NOW) == pytest.approx(expected)


def test_parse_retry_after_direct() -> None:
    assert parse_retry_after("2", NOW) == 2.0
    assert parse_retry_after(http_date(NOW + 60), NOW) == 60.0
    assert parse_retry_after("garbage", NOW) is None


# --- buckets at remaining 0 --------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # OpenAI / Groq / Azure: Go durations
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"X-RateLimit-Remaining-Tokens": "0", "X-RateLimit-Reset-Tokens": "20ms"}, 0.02),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s",
          "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m"}, 60.0),
        # only exhausted buckets count
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s",
          "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "1m"}, 1.0),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}, None),
        # a reset is paired with its own bucket only
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-tokens_usage_based": "0",
          "x-ratelimit-reset-tokens_usage_based": "2s"}, 2.0),
        # Anthropic: RFC 3339
        ({"anthropic-ratelimit-requests-remaining": "0",
          "anthropic-ratelimit-requests-reset": rfc3339(NOW + 42)}, 42.0),
        ({"anthropic-ratelimit-input-tokens-remaining": "0",
          "anthropic-ratelimit-input-tokens-reset": rfc3339(NOW + 5),
          "anthropic-ratelimit-output-tokens-remaining": "0",
          "anthropic-ratelimit-output-tokens-reset": rfc3339(NOW + 9)}, 9.0),
        ({"anthropic-ratelimit-tokens-remaining": "0",
          "anthropic-ratelimit-tokens-reset": rfc3339(NOW - 10)}, 0.0),
        ({"anthropic-ratelimit-tokens-remaining": "0",
          "anthropic-ratelimit-tokens-reset": "2025-02-30T00:00:00Z"}, None),
        # Together / plain, OpenRouter: numbers by magnitude
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}, 1.0),
        ({"x-tokenlimit-remaining": "0", "x-tokenlimit-reset": "2"}, 2.0),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int((NOW + 3600) * 1000))}, 3600.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + 90))}, 90.0),
        # Bedrock
        ({"x-amzn-ratelimit-remaining-requests": "0", "x-amzn-ratelimit-reset-requests": "3s"}, 3.0),
        # malformed remaining or reset: no hint
        ({"x-ratelimit-remaining-requests": "", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "-0", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "none", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "-1s"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": ""}, None),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "NaN"}, None),
        ({"x-ratelimit-remaining-requests": "0"}, None),
        # not a rate-limit header
        ({"x-remaining": "0", "x-reset": "5"}, None),
    ],
)
def test_exhausted_buckets(headers: dict[str, str], expected: float | None) -> None:
    """Applies to success responses too: no body, no retry-after."""
    hints = parse_hints(headers, None, NOW)
    assert hints.exhausted_reset == pytest.approx(expected)
    assert hints.wait == pytest.approx(expected)
    assert hints.retry_after is None


# --- error bodies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "retry_after", "exhausted", "per_day"),
    [
        # Gemini: object or array of errors, protobuf durations, quota ids
        (body(gemini_error(retry_info("30s"))), 30.0, None, False),
        (body([gemini_error(retry_info("12.7s"))]), 12.7, None, False),
        (body([gemini_error(quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
                            retry_info("44s"))]), 44.0, None, True),
        (body(gemini_error(quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"))),
         None, None, False),
        (body(gemini_error(quota_failure("PerMinute", "requests_per_day"))), None, None, True),
        # Gemini prose, OpenAI prose
        (body(gemini_error(message="Quota exceeded. Please retry in 44.96s.")), 44.96, None, False),
        (body(openai_error("Limit 10000. Please try again in 1.146s. Visit")), 1.146, None, False),
        (body(openai_error("Please try again in 6m0s.")), 360.0, None, False),
        (body(openai_error("Please try again in 20ms")), 0.02, None, False),
        (body(openai_error("Try again in 2s, or try again in 5s.")), 5.0, None, False),
        # OpenRouter: headers inside the body
        (body(openrouter_error({"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": str(int((NOW + 600) * 1000))})), None, 600.0, False),
        (body(openrouter_error({"Retry-After": "8"})), 8.0, None, False),
        # malformed bodies: no hint
        (b"", None, None, False),
        (b"{", None, None, False),
        (body(gemini_error(retry_info("30s")))[:-10], None, None, False),  # truncated JSON
        (b"not json at all", None, None, False),
        (b"\xff\xfe\x00garbage", None, None, False),
        (b"[" * 100_000, None, None, False),  # deeper than the JSON decoder recurses
        (b"null", None, None, False),
        (b"[]", None, None, False),
        (b"[1, \"x\", null]", None, None, False),
        (body({"error": "rate limited"}), None, None, False),
        (body({"error": None}), None, None, False),
        (body(openai_error(5)), None, None, False),
        (body(openai_error("Please try again in a few seconds")), None, None, False),
        (body(openai_error("Please try again in 20 seconds")), None, None, False),
        (body(openai_error("Please try again in 5minutes")), None, None, False),
        (body(gemini_error(retry_info(30))), None, None, False),
        (body(gemini_error(retry_info({"seconds": 30}))), None, None, False),
        (body(gemini_error(retry_info("30"))), None, None, False),
        (body(gemini_error(retry_info("-30s"))), None, None, False),
        (body(gemini_error(retry_info("NaNs"))), None, None, False),
        (body(gemini_error({"retryDelay": "30s"})), None, None, False),  # no @type
        (body({"error": {"details": {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                     "retryDelay": "30s"}}}), None, None, False),  # details not a list
        (body(gemini_error(quota_failure(7))), None, None, False),
        (body(gemini_error({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": {"quotaId": "PerDay"}})), None, None, False),
        (body(openrouter_error(["X-RateLimit-Remaining", "0"])), None, None, False),
        (body(openrouter_error({"X-RateLimit-Remaining": 0,  # numbers, not the strings it sends
                                "X-RateLimit-Reset": int((NOW + 60) * 1000)})), None, None, False),
        (body({"error": {"metadata": "x"}}), None, None, False),
    ],
)
def test_bodies(payload: bytes, retry_after: float | None, exhausted: float | None, per_day: bool) -> None:
    hints = parse_hints({}, read_error(payload), NOW)
    assert hints.retry_after == pytest.approx(retry_after)
    assert hints.exhausted_reset == pytest.approx(exhausted)
    assert hints.per_day is per_day


# --- several hints: the largest ----------------------------------------------

EXHAUSTED_10S = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "10s"}


@pytest.mark.parametrize(
    ("headers", "payload", "expected"),
    [
        ({"retry-after": "5", **EXHAUSTED_10S}, None, 10.0),
        ({"retry-after": "20", **EXHAUSTED_10S}, None, 20.0),
        ({"retry-after": "5"}, body(gemini_error(retry_info("30s"))), 30.0),
        ({"retry-after": "50"}, body(openai_error("Please try again in 1s")), 50.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"},
         body(openrouter_error({"X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": str(int((NOW + 60) * 1000))})), 60.0),
        # garbage beside a good hint leaves the good hint
        ({"retry-after": "soon", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "3s"},
         b"{truncated", 3.0),
    ],
)
def test_largest_hint_wins(headers: dict[str, str], payload: bytes | None, expected: float) -> None:
    assert parse_hints(headers, read_error(payload or b""), NOW).wait == pytest.approx(expected)


# --- fuzz ----------------------------------------------------------------------

HEADER_NAMES = [
    "retry-after", "Retry-After-Ms", "x-ms-retry-after-ms", "x-should-retry",
    "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
    "X-RateLimit-Remaining", "X-RateLimit-Reset", "x-tokenlimit-remaining", "x-tokenlimit-reset",
]
REMAINING_ZERO = [
    {"x-ratelimit-remaining-requests": "0"}, {"anthropic-ratelimit-tokens-remaining": "0"},
    {"x-ratelimit-remaining": "0"},
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def shaped_body(details: object, message: object, headers: object, as_array: bool) -> bytes:
    error = {"error": {"details": details, "message": message, "metadata": {"headers": headers}}}
    return body([error] if as_array else error)


# Real shapes with fuzzed leaves, so the fuzz reaches the deep paths.
SHAPED_BODY = st.builds(
    shaped_body,
    st.lists(st.fixed_dictionaries({
        "@type": st.sampled_from(["type.googleapis.com/google.rpc.RetryInfo",
                                  "type.googleapis.com/google.rpc.QuotaFailure"]),
        "retryDelay": JSON | st.from_regex(r"[0-9.]{1,6}(s|ms|m|h)?", fullmatch=True),
        "violations": st.lists(st.fixed_dictionaries({"quotaId": JSON}), max_size=2) | JSON,
    }), max_size=3) | JSON,
    st.text(max_size=40).map(lambda t: "Please try again in " + t) | JSON,
    st.dictionaries(st.sampled_from(HEADER_NAMES), st.text(max_size=20)) | JSON,
    st.booleans(),
)
BODIES = st.none() | st.binary(max_size=200) | JSON.map(body) | SHAPED_BODY


@settings(max_examples=400, deadline=None)
@given(
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES) | st.text(max_size=30), st.text(max_size=40),
                            max_size=6),
    exhausted=st.sampled_from([{}, *REMAINING_ZERO]),
    payload=BODIES,
    now=st.floats(0, 4e9),
)
def test_fuzz_never_raises(headers: dict[str, str], exhausted: dict[str, str], payload: bytes | None,
                           now: float) -> None:
    hints = parse_hints({**headers, **exhausted},
                        read_error(payload) if payload is not None else None, now)
    assert hints.wait is None or (math.isfinite(hints.wait) and hints.wait >= 0)
    assert hints.should_retry in (None, True, False)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40), now=st.floats(0, 4e9))
def test_fuzz_single_values(value: str, now: float) -> None:
    for result in (parse_retry_after(value, now), parse_reset(value, now), parse_duration(value)):
        assert result is None or (math.isfinite(result) and result >= 0)
