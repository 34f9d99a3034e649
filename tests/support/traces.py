"""A call's trace as the tracing tests build it: two attempts, the first
rate-limited on a real provider's URL, the second served by a loopback one."""

from __future__ import annotations

import os

from switchback.shell.tracing import AttemptTrace, CallTrace

T0 = 1_700_000_000.25  # exactly representable, so the ns values in tests are exact
SECRET = "sk-test-3fa9c2secret"


def attempt(**overrides: object) -> AttemptTrace:
    fields: dict[str, object] = dict(
        provider="openai", key="#3fa9c2", url="https://api.openai.com/v1/chat/completions",
        started=T0, ended=T0 + 0.5, status=429, result="429", verdict="rate_limited",
        cooldown=20.0, cooldown_scope="key", switched_to=None)
    fields.update(overrides)
    return AttemptTrace(**fields)  # type: ignore[arg-type]


def call(**overrides: object) -> CallTrace:
    fields: dict[str, object] = dict(
        operation="chat", request_model="gpt-4o", response_model="gpt-4o-2024-08-06",
        provider="backup", started=T0, ended=T0 + 2.0, outcome="ok", stream=True,
        input_tokens=120, output_tokens=30, cached_tokens=64, reasoning_tokens=8,
        cost_usd=0.0012, principal="team-a",
        attempts=(
            attempt(),
            attempt(provider="backup", key="#77e01d", url="http://127.0.0.1:8443/v1/chat",
                    started=T0 + 0.75, ended=T0 + 2.0, status=200, result="200",
                    verdict=None, cooldown=None, cooldown_scope=None),
        ))
    fields.update(overrides)
    return CallTrace(**fields)  # type: ignore[arg-type]


def keep_host_otel_out(monkeypatch) -> None:
    """The exporter reads its other settings from os.environ: keep the host's out."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
