"""Traces leave the process: export to a real OTLP/HTTP receiver on
loopback, an unreachable collector, and life without OpenTelemetry (in a
fresh interpreter)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from support.proxy import ROOT, free_port
from support.threaded import ServedInThread
from support.traces import call, keep_host_otel_out
from switchback.shell.tracing import Tracing

ADDON = ROOT / "addon"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    keep_host_otel_out(monkeypatch)


def test_unreachable_collector_does_not_hold_up_shutdown() -> None:
    tracing = Tracing.from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert tracing.enabled
    tracing.record(call())
    tracing.shutdown(timeout=1.0)  # returns (pytest-timeout would catch a hang) without raising
    assert not tracing.enabled


class _Receiver(http.server.BaseHTTPRequestHandler):
    posts: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posts.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[tuple[str, str, bytes]]]]:
    """An OTLP/HTTP endpoint on loopback that keeps what it is sent."""
    posts: list[tuple[str, str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"posts": posts})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with ServedInThread(server):
        yield server.server_address[1], posts


def test_exports_to_an_otlp_http_receiver(
        receiver: tuple[int, list[tuple[str, str, bytes]]]) -> None:
    port, posts = receiver
    tracing = Tracing.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}/",
                                        "OTEL_SERVICE_NAME": "switchback-test"})
    tracing.record(call())
    assert posts == []  # batched, not sent during the call
    tracing.shutdown()

    assert len(posts) == 1
    path, content_type, body = posts[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    for expected in (b"chat gpt-4o", b"attempt openai", b"attempt backup", b"switchback-test"):
        assert expected in body
    assert b"sk-" not in body


def test_works_without_opentelemetry() -> None:
    script = textwrap.dedent("""
        import logging, sys
        sys.modules["opentelemetry"] = None  # a fresh interpreter: every import of it fails
        logging.basicConfig(format="%(levelname)s %(message)s")
        from switchback.shell.tracing import CallTrace, Tracing
        tracing = Tracing()
        tracing.record(CallTrace("chat", "m", None, "p", 0.0, 1.0, "ok", False, None, None,
                                 None, None, None, None, ()))
        tracing.shutdown()
        assert not Tracing.from_environment({}).enabled
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
        assert not Tracing.from_environment(env).enabled
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ADDON)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("WARNING switchback: ")
    assert "pip install 'switchback[otel]'" in warnings[0]
