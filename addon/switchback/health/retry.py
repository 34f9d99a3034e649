"""Whether a failed attempt goes to the same candidate once more, and after
how long. Pure: the attempt loop passes what it knows and sleeps the answer.

Two cases, at most one retry per call, never for a probe:

- A transient failure — a 500, 502, 503 or 504 without a hint, a reset
  before the answer's head, a 2xx or 3xx that is no answer — is retried on
  the same candidate after a short jittered pause, unless its scope already
  failed recently (a real outage must not double its load) or is cooling.
- The addressed candidate says when it is back (a hint), within `max_wait`,
  and the next candidate would change the provider or the model: the client
  named them, so wait exactly that long and try it once more. When the next
  candidate is another key of the same provider and model, rotating at once
  loses nothing, so there is no wait. A scope is never retried before its hint.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..vocabulary import FailureKind, Reason, Retry
from .verdict import Action, Outcome, Verdict

TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
PAUSE = 0.25  # seconds before a transient retry, stretched by up to as much again


@dataclass(frozen=True)
class Again:
    """Try the same candidate again after `wait` seconds."""

    wait: float
    kind: Retry


def transient(verdict: Verdict, outcome: Outcome) -> bool:
    """A failure that may well not happen twice."""
    if verdict.hints.wait is not None:
        return False
    if verdict.reason is Reason.NOT_AN_ANSWER:
        return True
    if outcome.failure is not None:
        return outcome.failure is FailureKind.RESET
    return verdict.reason in (Reason.SERVER_ERROR, Reason.OVERLOADED) \
        and outcome.status in TRANSIENT_STATUSES


def again(verdict: Verdict, outcome: Outcome, *, retried: bool, probe: bool,
          failed_before: bool, cooling_left: float | None, addressed: bool,
          next_moves: bool, max_wait: float, rand: float) -> Again | None:
    """Whether to retry the candidate that just failed.

    `retried`: this call retried once already. `probe`: the attempt was a
    probe (its failure moves on at once). `failed_before`: the scope had
    failed within the window before this failure. `cooling_left`: seconds the
    candidate is cooling now, after this failure was recorded (None: not
    cooling). `addressed`: the provider and model the client named.
    `next_moves`: the next candidate would change the provider or the model.
    `rand` in [0, 1) jitters the pause.
    """
    if retried or probe or verdict.action not in (Action.NEXT_KEY, Action.NEXT_PROVIDER):
        return None
    if verdict.hints.wait is not None:
        if verdict.cooldown is None or verdict.cooldown.long or verdict.no_retry:
            return None
        left = cooling_left or 0.0
        if addressed and next_moves and left <= max_wait and max_wait > 0:
            return Again(left, Retry.HINTED)
        return None
    if transient(verdict, outcome) and not failed_before and cooling_left is None:
        return Again(PAUSE * (1 + rand), Retry.TRANSIENT)
    return None
