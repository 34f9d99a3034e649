"""The words modules agree on, defined once.

Protocol names, the ways an attempt can fail before it has an answer to
judge, and the reasons a verdict gives. Trails, metrics labels, cooldown
reasons and the exhaustion ranking all use these members, so rewording one
here rewords it everywhere and a typo is an AttributeError, not a silent
mismatch.
"""

from __future__ import annotations

import enum


class Protocol(enum.StrEnum):
    """What a client or an upstream speaks; what each one is, is `protocols.spec`."""

    CHAT = "chat"  # /chat/completions
    RESPONSES = "responses"  # /responses
    MESSAGES = "messages"  # /messages, Anthropic's


AUTO = "auto"  # a provider setting: probe, and switch when the endpoint is missing
PROVIDER_PROTOCOLS = (AUTO, *(p.value for p in Protocol))


class FailureKind(enum.StrEnum):
    """Why an attempt has no answer of its own to judge (or a stream none
    worth delivering). The value is what the trail says."""

    REFUSED = "refused"
    TLS = "tls error"
    RESET = "reset"
    TIMEOUT = "timeout"
    ERROR_EVENT = "error event"  # a stream whose head was an error
    NOT_A_STREAM = "not a stream"  # a 2xx that is not SSE, for a stream request
    NO_ANSWER = "stream ended before an answer"
    MALFORMED = "malformed stream"
    TOO_LARGE = "event too large"
    NOT_AN_ANSWER = "not an answer"  # a whole 2xx answer that is empty, HTML or not JSON

    @property
    def transport(self) -> bool:
        """No answer came at all: nothing upstream to read hints from."""
        return self in (FailureKind.REFUSED, FailureKind.TLS, FailureKind.RESET,
                        FailureKind.TIMEOUT)


class Reason(enum.StrEnum):
    """What a verdict says about an answer, in the trail's words."""

    OK = "ok"
    ENDPOINT_MISSING = "endpoint missing"
    UNAUTHORIZED = "unauthorized"  # the client's own key: its business
    KEY_REFUSED = "key refused"  # a configured key
    QUOTA = "quota"
    RATE_LIMIT = "rate limit"
    TOO_LARGE = "too large"
    MODEL_MISSING = "model missing"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server error"
    ERROR_EVENT = "error event"
    BAD_STREAM = "bad stream"  # not SSE, malformed, no answer, oversized event
    CONTEXT_LENGTH = "context length"
    NOT_AN_ANSWER = "not an answer"  # a 3xx, or a 2xx whose body is no answer (HTML, empty)
    CLIENT_ERROR = "client error"
    UNKNOWN_RESPONSE = "unknown response"  # previous_response_id this candidate cannot continue
    REMAINING_ZERO = "remaining 0"  # a success that emptied its bucket
    REFUSED = FailureKind.REFUSED.value
    TLS = FailureKind.TLS.value
    RESET = FailureKind.RESET.value
    TIMEOUT = FailureKind.TIMEOUT.value


class Retry(enum.StrEnum):
    """Why an attempt went to the candidate that had just failed, instead of
    the next one. The value is the metrics label."""

    TRANSIENT = "transient"  # a one-off 5xx, reset or page: once more after a short pause
    HINTED = "hinted"  # the addressed candidate said it is back within max_wait: waited


class ProbeResult(enum.StrEnum):
    """How a probe of a scope cooling on Switchback's own backoff ended."""

    RECOVERED = "recovered"  # served: the scope is cleared at once
    FAILED = "failed"


class Quirk(enum.StrEnum):
    """Something a provider was found to refuse: learned once, remembered, so
    no later call pays for finding it out again."""

    NO_STREAM_OPTIONS = "refuses stream_options"  # Mistral's 422: usage is estimated there
    NO_PREFILL = "refuses prefill"  # per model: a cut stream is continued by a restart there


class Rescue(enum.StrEnum):
    """How a stream cut mid-answer is continued on another candidate (a
    provider's `continuation` setting, and the trail's word for it)."""

    PREFILL = "prefill"  # the delivered text sent back as the answer's start
    RESTART = "restart"  # the original request again; only a matching answer is spliced
    OFF = "off"  # never continued there


class CallOutcome(enum.StrEnum):
    """How a whole call ended, for the log line and metrics."""

    OK = "ok"
    BROKEN = "broken"  # a committed stream that broke: the client got an error after part of it
    RESCUED = "rescued"  # a committed stream that broke and was continued to a whole answer
    PASSED_THROUGH = "passed through"  # a client error, as the upstream said it
    EXHAUSTED = "exhausted"  # every candidate failed or is cooling
    REFUSED = "refused"  # over its principal's budget: no attempt made

    @property
    def answered(self) -> bool:
        """The client got a whole answer from the providers."""
        return self in (CallOutcome.OK, CallOutcome.RESCUED)


class Break(enum.StrEnum):
    """How a committed stream stopped short of its answer's end. The value is
    what the trail says (`primary cut after 40 chunks`)."""

    CUT = "cut"  # reset, or closed without the protocol's end
    STALLED = "stalled"  # silent past `timeouts.idle`
    ERROR_EVENT = "error event"
    MALFORMED = "malformed"  # an event that is not the protocol's, or one too large
    REPHRASED = "rephrased"  # a restart whose answer differs from what was delivered
