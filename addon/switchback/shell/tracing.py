"""OpenTelemetry traces: one span per LLM call, a child span per upstream attempt.

Like the metrics, spans are built after the fact from what the call recorded,
with the call's own timestamps, so the attempt loop knows nothing of them.
OpenTelemetry is an optional extra (`switchback[otel]`): it is imported only
when an exporter is configured, and without one `record` does nothing at all.
Attribute names follow the OpenTelemetry GenAI semantic conventions (status
"Development"); what they do not cover is under `switchback.*`. Spans carry
key fingerprints, never keys.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "switchback"
SHUTDOWN_SECONDS = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AttemptTrace:
    """One upstream attempt, as the call recorded it."""
    provider: str          # provider name, e.g. "openai"
    key: str               # key fingerprint like "#3fa9c2" ("" when none) — never a key
    url: str
    started: float         # epoch seconds
    ended: float
    status: int | None     # HTTP status, None when there was none (transport failure)
    result: str            # e.g. "429", "timeout", "connect error"
    verdict: str | None    # the failure reason, e.g. "rate_limited"; None on success
    cooldown: float | None  # seconds of cooldown started, if any
    cooldown_scope: str | None  # "key" | "model"
    switched_to: str | None     # protocol retried, if any


@dataclass(frozen=True)
class CallTrace:
    """One call the proxy handled: plain data, built by the caller only when
    tracing is enabled."""
    operation: str         # "chat" for both /chat/completions and /responses
    request_model: str
    response_model: str | None
    provider: str          # the provider that answered, else the one the client addressed
    started: float         # epoch seconds
    ended: float
    outcome: str           # "ok" | "passed_through" | "exhausted" | "refused" | "client_gone"
    stream: bool
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    principal: str | None
    attempts: tuple[AttemptTrace, ...]
    error_type: str | None = None  # set when the call failed, e.g. "exhausted"


class Tracing:
    """Builds spans only when an exporter is configured."""

    def __init__(self, exporter: SpanExporter | None = None) -> None:
        """With `exporter`, spans go to it synchronously (for tests); without,
        tracing is disabled."""
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if exporter is not None:
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            self._install(SimpleSpanProcessor(exporter), DEFAULT_SERVICE_NAME)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Tracing:
        """Export over OTLP/HTTP when the standard OTEL_* variables name an endpoint.

        The endpoint and service name come from `environ`; the exporter reads
        its other settings (headers, timeout, TLS) from the process environment.
        """
        traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
        base_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        if not (traces_endpoint or base_endpoint) or disabled:
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("switchback: an OTLP endpoint is set but OpenTelemetry is not "
                        "installed; pip install 'switchback[otel]' to export traces")
            return cls()
        # A base endpoint gets the signal path; a traces endpoint is used as given.
        endpoint = traces_endpoint or f"{base_endpoint.removesuffix('/')}/v1/traces"
        tracing = cls()
        tracing._install(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)),
                         environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME)
        return tracing

    def _install(self, processor: SpanProcessor, service_name: str) -> None:
        """A private provider, so Switchback never takes over the global one."""
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        self._provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("switchback")

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def record(self, call: CallTrace) -> None:
        """Emit the call's span and its attempts' child spans; no-op when disabled."""
        if self._tracer is None:
            return
        from opentelemetry import trace
        parent = self._tracer.start_span(
            f"{call.operation} {call.request_model}", kind=trace.SpanKind.CLIENT,
            start_time=_ns(call.started), attributes=_call_attributes(call))
        if call.error_type is not None:
            _set_error(parent, call.error_type)
        context = trace.set_span_in_context(parent)
        for attempt in call.attempts:
            child = self._tracer.start_span(
                f"attempt {attempt.provider}", context=context, kind=trace.SpanKind.CLIENT,
                start_time=_ns(attempt.started), attributes=_attempt_attributes(attempt))
            if attempt.verdict is not None:
                _set_error(child, attempt.verdict)
            child.end(end_time=_ns(attempt.ended))
        parent.end(end_time=_ns(call.ended))

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Flush pending spans and stop; give up after `timeout` seconds so an
        unreachable collector (the exporter retries) cannot hold up proxy exit."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is None:
            return
        # The SDK bounds its shutdown only by the exporter's timeout and retries.
        worker = threading.Thread(target=provider.shutdown, name="switchback-otel-shutdown",
                                  daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            log.warning("switchback: trace export did not finish within %g s; "
                        "unsent spans are dropped", timeout)


def _ns(seconds: float) -> int:
    """Epoch seconds to nanoseconds. Whole and fractional parts apart, because
    multiplying the whole epoch value by 1e9 rounds to 256 ns steps."""
    whole = int(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def _set_error(span: Span, error_type: str) -> None:
    from opentelemetry.trace import Status, StatusCode
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


def _call_attributes(call: CallTrace) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": call.operation,
        "gen_ai.provider.name": call.provider,
        "gen_ai.request.model": call.request_model,
        "switchback.outcome": call.outcome,
        "switchback.stream": call.stream,
        "switchback.attempts": len(call.attempts),
    }
    optional: dict[str, AttributeValue | None] = {
        "gen_ai.response.model": call.response_model,
        "gen_ai.usage.input_tokens": call.input_tokens,
        "gen_ai.usage.output_tokens": call.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": call.cached_tokens,
        "gen_ai.usage.reasoning.output_tokens": call.reasoning_tokens,
        "switchback.cost_usd": call.cost_usd,
        "switchback.principal": call.principal,
    }
    attributes.update((name, value) for name, value in optional.items() if value is not None)
    return attributes


def _attempt_attributes(attempt: AttemptTrace) -> dict[str, AttributeValue]:
    url = urlsplit(attempt.url)
    try:
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
    except ValueError:  # a port out of range: leave it out rather than fail the record
        port = None
    optional: dict[str, AttributeValue | None] = {
        "gen_ai.provider.name": attempt.provider,
        "server.address": url.hostname,
        "server.port": port,
        "http.response.status_code": attempt.status,
        "switchback.key": attempt.key or None,
        "switchback.result": attempt.result,
        "switchback.verdict": attempt.verdict,
        "switchback.cooldown_s": attempt.cooldown,
        "switchback.cooldown_scope": attempt.cooldown_scope,
        "switchback.switched_to": attempt.switched_to,
    }
    return {name: value for name, value in optional.items() if value is not None}
