"""Traces end to end: a mitmdump with OTEL_EXPORTER_OTLP_ENDPOINT pointing at
an OTLP/HTTP receiver on loopback exports one span per call, with a child
per upstream attempt — and a streamed call's span carries the usage that
came at the stream's end."""

from __future__ import annotations

import http.server
import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from support.fakeprovider import Reply
from support.proxy import free_port
from support.threaded import ServedInThread

PAIR = """
providers:
  primary: {{base_url: "{primary}"}}
  backup: {{base_url: "{backup}", keys: [sk-backup-literal]}}
fallbacks: {{"*": [backup/*]}}
pricing:
  m: {{input: 1000000, output: 1000000}}
"""


@pytest.fixture
def receiver() -> Iterator[list[bytes]]:
    """Keeps the body of every OTLP/HTTP export it is sent."""
    bodies: list[bytes] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    with ServedInThread(server):
        bodies.append(str(server.server_address[1]).encode())  # the port, first
        yield bodies


def spans(bodies: list[bytes], count: int) -> list:
    """The spans exported so far, once there are `count` (bounded wait)."""
    deadline = time.monotonic() + 20
    while True:
        found = []
        for body in bodies[1:]:
            request = ExportTraceServiceRequest.FromString(body)
            found += [span for resource in request.resource_spans
                      for scope in resource.scope_spans for span in scope.spans]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def attributes(span) -> dict:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


def test_each_call_is_a_span_with_a_child_per_attempt(fakes, proxy, receiver):
    primary, backup = fakes("primary"), fakes("backup")
    running = proxy(PAIR.format(primary=primary.base_url, backup=backup.base_url), env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver[0].decode()}",
        "OTEL_BSP_SCHEDULE_DELAY": "50", "NO_PROXY": "127.0.0.1,localhost"})
    primary.script(Reply(status=429, headers={"retry-after": "20"},
                         body={"error": {"message": "slow down"}}))
    client = running.openai(primary.base_url)
    list(client.chat.completions.create(model="m", stream=True,
                                        messages=[{"role": "user", "content": "hi"}]))

    found = spans(receiver, 3)
    (call,) = [s for s in found if s.name == "chat m"]
    tried = sorted((s for s in found if s.parent_span_id == call.span_id),
                   key=lambda s: s.start_time_unix_nano)
    assert [s.name for s in tried] == ["attempt primary", "attempt backup"]
    assert all(s.trace_id == call.trace_id for s in tried)
    said = attributes(call)
    assert said["gen_ai.operation.name"] == "chat"
    assert said["gen_ai.provider.name"] == "backup"
    assert said["gen_ai.request.model"] == "m"
    assert (said["gen_ai.usage.input_tokens"], said["gen_ai.usage.output_tokens"]) == (5, 3)
    assert said["switchback.cost_usd"] == 8.0
    first, second = map(attributes, tried)
    assert first["http.response.status_code"] == 429
    assert first["switchback.cooldown_s"] > 0 and first["switchback.cooldown_scope"]
    assert second["http.response.status_code"] == 200
    assert second["switchback.key"].startswith("#")
    assert b"sk-backup-literal" not in b"".join(receiver[1:])
    assert b"sk-client-key" not in b"".join(receiver[1:])
