"""The answer when every candidate failed or is cooling. Pure.

The client should see the most telling upstream error with its status class
kept (a 429 stays a 429, never a 500), and learn when to come back:
`retry-after` / `retry-after-ms` from the shortest cooldown, and
`x-should-retry: false` when retrying cannot help (billing, dead keys).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..protocols.envelope import JSON_TYPE as JSON, Envelope, error_body as openai_error
from ..vocabulary import Reason
from .cooldown import Cooling
from .verdict import Outcome, Verdict

RETRY_AFTER_CAP = 60.0  # SDKs ignore longer retry-after values and guess instead
WAIT_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")
_TELLING = {reason: rank for rank, reason in enumerate((
    Reason.QUOTA, Reason.KEY_REFUSED, Reason.RATE_LIMIT, Reason.OVERLOADED, Reason.SERVER_ERROR,
    Reason.MODEL_MISSING, Reason.ERROR_EVENT, Reason.TOO_LARGE, Reason.BAD_STREAM))}
_RATE_REASONS = {Reason.RATE_LIMIT, Reason.QUOTA, Reason.KEY_REFUSED, Reason.REMAINING_ZERO}


@dataclass(frozen=True)
class Failure:
    verdict: Verdict
    outcome: Outcome
    headers: tuple[tuple[str, str], ...]  # the upstream answer's headers, fit for the client


def telling_rank(failure: Failure) -> int:
    """Lower is more telling. Upstream answers beat synthesized transport errors."""
    if failure.outcome.status is None:
        return 100
    return _TELLING.get(failure.verdict.reason, 50)


def _from_failure(best: Failure, error_body: Envelope
                  ) -> tuple[int, list[tuple[str, str]], bytes]:
    verdict, outcome = best.verdict, best.outcome
    rate = verdict.reason in (Reason.RATE_LIMIT, Reason.QUOTA)
    code = f"upstream_{verdict.reason.replace(' ', '_')}"
    if outcome.status is None:
        detail = f" ({outcome.detail})" if outcome.detail else ""
        message = f"Switchback: every candidate failed: {verdict.reason}{detail}"
        return 504 if verdict.reason is Reason.TIMEOUT else 502, [JSON], \
            error_body(message, "server_error", code)
    if outcome.failure is not None:  # a stream that failed at its head, or was none
        info = outcome.error
        return 429 if rate else 502, [JSON], error_body(
            info.message or info.code or f"upstream {outcome.failure}",
            "rate_limit_error" if rate else "server_error", code)
    return outcome.status, list(best.headers), outcome.body


def exhausted_answer(failures: Sequence[Failure], coolings: Sequence[Cooling], now: float,
                     model: str, error_body: Envelope = openai_error
                     ) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for the client; what Switchback words itself
    in `error_body`, the client's protocol's envelope."""
    soonest = min((c.until for c in coolings), default=None)
    no_retry = bool(coolings) and all(c.no_retry for c in coolings)
    if failures:
        best = min(failures, key=telling_rank)
        no_retry = no_retry or best.verdict.no_retry
        status, headers, body = _from_failure(best, error_body)
    else:
        reasons = sorted({c.reason for c in coolings})
        status = 429 if set(reasons) & _RATE_REASONS or not coolings else 503
        message = (f"Switchback: every candidate for {model} is cooling down "
                   f"({', '.join(reasons) or 'no candidate'})")
        headers = [JSON]
        body = error_body(message, "rate_limit_error" if status == 429 else "server_error",
                          "switchback_all_cooling")
    headers = [(k, v) for k, v in headers if k.lower() not in WAIT_HEADERS]
    if soonest is not None:
        wait = min(max(0.0, soonest - now), RETRY_AFTER_CAP)
        headers += [("retry-after", str(math.ceil(wait))),
                    ("retry-after-ms", str(math.ceil(wait * 1000)))]
    if no_retry:
        headers.append(("x-should-retry", "false"))
    return status, headers, body
