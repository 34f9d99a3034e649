"""Traces: span shape against the GenAI conventions, and enabling from the
environment (export to a real receiver: tests/engine/test_tracing_export.py)."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from support.traces import SECRET, attempt, call, keep_host_otel_out
from switchback.engine.charge import Bill
from switchback.engine.results import Answer, Result
from switchback.providers import ProviderTable
from switchback.recognise import recognise
from switchback.shell.reporting import call_trace
from switchback.shell.tracing import CallTrace, Tracing
from switchback.trail import Trail
from switchback.vocabulary import CallOutcome


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    keep_host_otel_out(monkeypatch)


def recorded(trace: CallTrace) -> tuple[ReadableSpan, list[ReadableSpan]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter)
    assert tracing.enabled
    tracing.record(trace)
    tracing.shutdown()
    spans = exporter.get_finished_spans()
    parents = [s for s in spans if s.parent is None]
    assert len(parents) == 1
    children = sorted((s for s in spans if s.parent is not None), key=lambda s: s.start_time)
    return parents[0], children


def test_call_span_with_attempt_children() -> None:
    parent, children = recorded(call())

    assert parent.name == "chat gpt-4o"
    assert parent.kind is SpanKind.CLIENT
    assert (parent.start_time, parent.end_time) == (1_700_000_000_250_000_000,
                                                    1_700_000_002_250_000_000)
    assert dict(parent.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "backup",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 64,
        "gen_ai.usage.reasoning.output_tokens": 8,
        "switchback.outcome": "ok",
        "switchback.stream": True,
        "switchback.attempts": 2,
        "switchback.cost_usd": 0.0012,
        "switchback.principal": "team-a",
    }
    assert parent.status.status_code is StatusCode.UNSET
    assert parent.resource.attributes["service.name"] == "switchback"

    first, second = children
    for child in children:
        assert child.parent.span_id == parent.context.span_id
        assert child.context.trace_id == parent.context.trace_id
        assert child.kind is SpanKind.CLIENT
    assert first.name == "attempt openai"
    assert (first.start_time, first.end_time) == (1_700_000_000_250_000_000,
                                                  1_700_000_000_750_000_000)
    assert dict(first.attributes) == {
        "gen_ai.provider.name": "openai",
        "server.address": "api.openai.com",
        "server.port": 443,
        "http.response.status_code": 429,
        "switchback.key": "#3fa9c2",
        "switchback.result": "429",
        "switchback.verdict": "rate_limited",
        "switchback.cooldown_s": 20.0,
        "switchback.cooldown_scope": "key",
        "error.type": "rate_limited",
    }
    assert first.status.status_code is StatusCode.ERROR

    assert second.name == "attempt backup"
    assert (second.start_time, second.end_time) == (1_700_000_001_000_000_000,
                                                    1_700_000_002_250_000_000)
    assert dict(second.attributes) == {
        "gen_ai.provider.name": "backup",
        "server.address": "127.0.0.1",
        "server.port": 8443,
        "http.response.status_code": 200,
        "switchback.key": "#77e01d",
        "switchback.result": "200",
    }
    assert second.status.status_code is StatusCode.UNSET

    values = [str(v) for s in (parent, *children) for v in s.attributes.values()]
    assert not any("sk-" in v or SECRET in v for v in values)


def test_failed_call_is_an_error() -> None:
    failed = call(outcome="exhausted", error_type="exhausted", response_model=None,
                  input_tokens=None, output_tokens=None, cached_tokens=None,
                  reasoning_tokens=None, cost_usd=None, principal=None, provider="openai",
                  attempts=(attempt(), attempt(status=None, result="timeout",
                                               verdict="timeout", cooldown=None,
                                               cooldown_scope=None, switched_to="responses")))
    parent, children = recorded(failed)

    assert parent.status.status_code is StatusCode.ERROR
    assert parent.attributes["error.type"] == "exhausted"
    assert "gen_ai.response.model" not in parent.attributes
    assert "gen_ai.usage.input_tokens" not in parent.attributes
    assert "switchback.principal" not in parent.attributes
    timeout = children[1]
    assert timeout.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in timeout.attributes
    assert timeout.attributes["switchback.switched_to"] == "responses"
    assert timeout.attributes["switchback.result"] == "timeout"


def test_disabled_without_exporter() -> None:
    tracing = Tracing()
    assert not tracing.enabled
    tracing.record(call())  # nothing to build, nothing to fail
    tracing.shutdown()


def test_from_environment_needs_an_endpoint() -> None:
    assert not Tracing.from_environment({}).enabled
    assert not Tracing.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}).enabled
    assert not Tracing.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                                         "OTEL_SDK_DISABLED": "true"}).enabled


def test_a_rescued_call_is_traced_as_rescued_and_not_as_an_error() -> None:
    """A stream carried on elsewhere after a cut reached its client whole."""
    table = ProviderTable({})
    llm = recognise("POST", "https://api.openai.com/v1/chat/completions", [],
                    json.dumps({"model": "m", "messages": []}).encode(), table)
    assert llm is not None
    result = Result(Answer(200, [], b""), Trail(), outcome=CallOutcome.RESCUED)
    trace = call_trace(llm, result, Bill("p", True, None, None), 1.0, 2.0)
    assert trace.outcome == "rescued" and trace.error_type is None
    result.outcome = CallOutcome.BROKEN
    assert call_trace(llm, result, Bill("p", True, None, None), 1.0, 2.0).error_type == "broken"
