"""What an upstream answer means for the call: one pure function, `judge`.

It encodes the failure table of RATE_LIMITS.md and the "endpoint does not
exist" rules of PROTOCOLS.md: deliver, pass the answer through, switch
protocol, try the next key, or try the next provider — and which cooldown
the failure earns.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ..vocabulary import FailureKind, Reason
from .errors import ErrorRecord, read_error
from .hints import Hints, parse_hints


class Action(enum.Enum):
    DELIVER = "deliver"
    PASS_THROUGH = "pass through"
    SWITCH_PROTOCOL = "switch protocol"
    NEXT_KEY = "next key"
    NEXT_PROVIDER = "next provider"


class Scope(enum.Enum):
    KEY = "key"  # (provider, key fingerprint): account signals
    MODEL = "model"  # (provider, model): outages of what serves a model
    KEY_MODEL = "key_model"  # (provider, key fingerprint, model): rate limits, per model


@dataclass(frozen=True)
class Cooldown:
    scope: Scope
    long: bool = False  # quota, billing, dead key: hours, not seconds
    after: int = 1  # consecutive failures before it applies: ambiguous errors get a second chance


@dataclass(frozen=True)
class Outcome:
    """One attempt's result. `failure` says why there is no ordinary answer
    to judge: a transport failure (no status), or a stream whose head was an
    error event (its data in `body`) or was no answer at all."""

    status: int | None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    failure: FailureKind | None = None
    client_key: bool = False
    detail: str = ""  # for a transport failure: where, and for TLS why and the fix

    @cached_property
    def error(self) -> ErrorRecord:
        """The body read as an error, once, for everybody who asks."""
        return read_error(self.body)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: Reason
    cooldown: Cooldown | None = None
    hints: Hints = Hints()
    no_retry: bool = False  # tell clients not to retry (x-should-retry: false)


_NOT_FOUND_MESSAGE = re.compile(
    r"invalid url|unknown request url|no route matched|page not found|file not found|^not found\.?$",
    re.I)
_OTHER_ENDPOINT = re.compile(r"chat[/ _.-]?completions|responses? api|/responses|\bresponses\b", re.I)
_UNSUPPORTED = re.compile(r"not supported|unsupported|does not support|only supported|"
                          r"not available|use the", re.I)
# Explicit words only: Gemini's per-minute limits also say "quota"; its quota
# ids decide per-day (hints.per_day).
_QUOTA = re.compile(r"insufficient_quota|billing|insufficient.?balance|exceeded your current quota"
                    r"|out of credits|credit balance|payment required", re.I)
_MODEL_MISSING = re.compile(r"model_not_found|model .*(does not exist|not found)|unknown model|"
                            r"no such model|invalid model", re.I)
# A prompt too long for the model, in each provider's words: OpenAI's code, Anthropic's
# "prompt is too long", Gemini's "input token count … exceeds the maximum number of
# tokens", Mistral's and vLLM's "maximum context length", llama.cpp's
# "exceeds the available context size" (exceed_context_size_error).
_CONTEXT = re.compile(
    r"context_length_exceeded|context.length|maximum context|too many tokens|"
    r"prompt is too long|input token count.*exceeds|exceeds? the maximum number of tokens|"
    r"exceeds? the available context|exceed_context_size|context window|"
    r"input is too long|too long for (?:the |this )?model", re.I | re.S)


def endpoint_missing(status: int, info: ErrorRecord) -> bool:
    """True when the upstream says this endpoint does not exist (PROTOCOLS.md)."""
    if info.code == "model_not_found" or info.param in ("response_id", "previous_response_id"):
        return False
    if re.search(r"response with id .* not found", info.message, re.I):
        return False
    if status in (405, 501):
        return True
    if status == 404:
        return (info.raw is None or info.code == "unknown_url"
                or info.raw == {"detail": "Not Found"}
                or bool(_NOT_FOUND_MESSAGE.search(info.message.strip())))
    if status == 200:
        return info.message.lower().startswith("unexpected endpoint or method")
    if status == 400:
        return bool(_UNSUPPORTED.search(info.message) and _OTHER_ENDPOINT.search(info.message))
    return False


# A request refused for its last message being the assistant's: "does not
# support assistant message prefill", "the last message must be a user
# message", "Expected last role User or Tool … but got assistant", "a final
# `assistant` message must start with a thinking block". (Anthropic's "final
# assistant content cannot end with trailing whitespace" is no refusal of
# prefill: a prefill is sent without its trailing whitespace.)
_PREFILL = re.compile(r"prefill|prefix|(last|final) (message|role)|assistant message|"
                      r"final .?assistant.? message", re.I)


def refuses_prefill(status: int, info: ErrorRecord) -> bool:
    """A client error that refuses a prefilled answer's start."""
    return 400 <= status < 500 and status != 429 and bool(_PREFILL.search(info.text))


def judge(outcome: Outcome, now: float) -> Verdict:
    """The verdict for one attempt's outcome."""
    status, failure = outcome.status, outcome.failure
    if failure is not None and failure.transport:
        # A refused connection is a fact; a reset or a slow first byte may be a one-off.
        strikes = 1 if failure in (FailureKind.REFUSED, FailureKind.TLS) else 2
        return Verdict(Action.NEXT_PROVIDER, Reason(failure.value),
                       Cooldown(Scope.MODEL, after=strikes))
    if 200 <= (status or 0) < 300 and failure is None and not (
            outcome.body[:1] == b"{" and b'"error"' in outcome.body):
        # The common case, read cheaply: an answer that cannot be an error in disguise.
        return Verdict(Action.DELIVER, Reason.OK, hints=parse_hints(outcome.headers, None, now))
    info = outcome.error
    hints = parse_hints(outcome.headers, info, now)
    if failure is FailureKind.ERROR_EVENT:
        return _stream_error(info, hints)
    if failure is not None:  # a 2xx whose stream was no stream, or no answer
        if endpoint_missing(200, info):
            return Verdict(Action.SWITCH_PROTOCOL, Reason.ENDPOINT_MISSING, hints=hints)
        if info.enveloped:  # an error object, just not streamed
            return _stream_error(info, hints)
        # A page (HTML, empty, text) where an answer was due, whole or streamed.
        page = failure is FailureKind.NOT_AN_ANSWER or (
            failure is FailureKind.NOT_A_STREAM and not answer_shaped(outcome.body))
        reason = Reason.NOT_AN_ANSWER if page else Reason.BAD_STREAM
        return Verdict(Action.NEXT_PROVIDER, reason, Cooldown(Scope.MODEL, after=2), hints)
    assert status is not None
    if 200 <= status < 300:  # a JSON answer that mentions "error"
        if isinstance(info.raw, dict) and info.raw.get("error") is not None:
            if endpoint_missing(200, info):
                return Verdict(Action.SWITCH_PROTOCOL, Reason.ENDPOINT_MISSING, hints=hints)
            if not ({"choices", "output", "content"} & info.raw.keys()):
                return _stream_error(info, hints)
        return Verdict(Action.DELIVER, Reason.OK, hints=hints)
    if 300 <= status < 400:  # a misrouted base URL, a login page: no answer
        return Verdict(Action.NEXT_PROVIDER, Reason.NOT_AN_ANSWER,
                       Cooldown(Scope.MODEL, after=2), hints)
    if endpoint_missing(status, info):
        return Verdict(Action.SWITCH_PROTOCOL, Reason.ENDPOINT_MISSING, hints=hints)
    if status in (401, 403):
        if outcome.client_key:
            return Verdict(Action.PASS_THROUGH, Reason.UNAUTHORIZED, hints=hints)
        return Verdict(Action.NEXT_KEY, Reason.KEY_REFUSED, Cooldown(Scope.KEY, long=True), hints,
                       no_retry=True)
    if status in (402, 429):
        if status == 429 and re.search(r"request too large", info.message, re.I):
            return Verdict(Action.NEXT_PROVIDER, Reason.TOO_LARGE, hints=hints)
        # x-should-retry: false is the server saying waiting will not help. Gemini
        # says "quota" and "billing" for per-minute limits too: its quota ids decide.
        worded = _QUOTA.search(info.text) and b"QuotaFailure" not in outcome.body
        # A subscription window spent (Anthropic's unified limits) is the credential's.
        if status == 402 or hints.per_day or hints.should_retry is False or worded \
                or hints.window_reset is not None:
            return Verdict(Action.NEXT_KEY, Reason.QUOTA, Cooldown(Scope.KEY, long=True), hints,
                           no_retry=True)
        # Rate limits are per model at OpenAI, Anthropic and Gemini: the key still
        # serves its other models.
        return Verdict(Action.NEXT_KEY, Reason.RATE_LIMIT, Cooldown(Scope.KEY_MODEL), hints)
    if status == 404 and _MODEL_MISSING.search(info.text):
        return Verdict(Action.NEXT_PROVIDER, Reason.MODEL_MISSING,
                       Cooldown(Scope.MODEL, long=True), hints)
    if status in (503, 529):
        # A 503 without a hint may be a one-off, like a 500; Anthropic's 529 is not.
        strikes = 2 if status == 503 and hints.wait is None else 1
        return Verdict(Action.NEXT_PROVIDER, Reason.OVERLOADED,
                       Cooldown(Scope.MODEL, after=strikes), hints)
    if status in (408, 409) or status >= 500:
        strikes = 1 if hints.wait is not None else 2
        return Verdict(Action.NEXT_PROVIDER, Reason.SERVER_ERROR,
                       Cooldown(Scope.MODEL, after=strikes), hints)
    return Verdict(Action.PASS_THROUGH, Reason.CONTEXT_LENGTH if too_long(status, info)
                   else Reason.CLIENT_ERROR, hints=hints)


def answer_shaped(body: bytes) -> bool:
    """Whether a whole 2xx body can be an answer: JSON, so an object (or a
    list) from end to end. An HTML error page, an empty body or plain text
    is not; read from its two ends only, so an answer costs nothing more."""
    head, tail = body[:64].lstrip(), body[-64:].rstrip()
    if not head or not tail:
        head, tail = body.lstrip()[:1], body.rstrip()[-1:]
    return head[:1] in (b"{", b"[") and tail[-1:] in (b"}", b"]")


def too_long(status: int | None, info: ErrorRecord) -> bool:
    """A refusal of a prompt too long for the model (or a 413): a model with a
    larger context might serve it; this one never will."""
    return status == 413 or bool(_CONTEXT.search(info.text))


def _stream_error(info: ErrorRecord, hints: Hints) -> Verdict:
    """An error that came with a 200: read its code like a status would be."""
    if too_long(None, info):
        return Verdict(Action.PASS_THROUGH, Reason.CONTEXT_LENGTH, hints=hints)
    if info.type == "invalid_request_error":
        return Verdict(Action.PASS_THROUGH, Reason.CLIENT_ERROR, hints=hints)
    if info.type == "overloaded_error":  # Anthropic's 529, as an event: platform load
        return Verdict(Action.NEXT_PROVIDER, Reason.OVERLOADED, Cooldown(Scope.MODEL), hints)
    if hints.per_day or _QUOTA.search(info.text):
        return Verdict(Action.NEXT_KEY, Reason.QUOTA, Cooldown(Scope.KEY, long=True), hints,
                       no_retry=True)
    if re.search(r"rate.?limit", info.text):
        return Verdict(Action.NEXT_KEY, Reason.RATE_LIMIT, Cooldown(Scope.KEY_MODEL), hints)
    return Verdict(Action.NEXT_PROVIDER, Reason.ERROR_EVENT, Cooldown(Scope.MODEL, after=2),
                   hints)
