"""Table tests for the pure core: recognise, plan, verdict, SSE, the gate,
stream shaping, the trail and upstream options."""

from __future__ import annotations

import json

import pytest

from switchback.config import parse_config
from switchback.engine.upstream import tls_verify, upstream_proxy
from switchback.health.errors import read_error
from switchback.health.verdict import Action, Outcome, Scope, endpoint_missing, judge
from switchback.plan import plan
from switchback.protocols.kinds import Signal
from switchback.protocols.spec import spec
from switchback.protocols.shapers import ChatPassthrough, ResponsesPassthrough
from switchback.protocols import sse
from switchback.protocols.sse import EventTooLarge, SseParser
from switchback.providers import ProviderTable
from switchback.recognise import Unreadable, fingerprint, recognise
from switchback.trail import Trail
from switchback.vocabulary import FailureKind, Protocol

CHAT, RESPONSES = Protocol.CHAT, Protocol.RESPONSES

CONFIG = parse_config("""
providers:
  primary: {base_url: "https://localhost:9001/v1"}
  keyed: {base_url: "https://localhost:9003/v1", keys: [k1, k2]}
  backup: {base_url: "https://localhost:9002/v1", keys: [kb]}
  bare: {base_url: "https://localhost:9004/v1"}
fallbacks:
  gpt-4o: [backup/gpt-4o-mini, bare/*, primary/gpt-4o-mini]
  "*": [backup/*]
""", "t.yaml", {})
TABLE = ProviderTable(CONFIG.providers)
AUTH = [("Authorization", "Bearer sk-client")]


def call(url="https://localhost:9001/v1/chat/completions", body=None, method="POST"):
    raw = json.dumps(body if body is not None else {"model": "gpt-4o", "messages": []}).encode()
    return recognise(method, url, AUTH, raw, TABLE)


@pytest.mark.parametrize("method,url,body,expected", [
    ("POST", "https://localhost:9001/v1/chat/completions", {"model": "m"}, ("primary", "chat")),
    ("POST", "https://localhost:9001/v1/responses", {"model": "m"}, ("primary", "responses")),
    ("POST", "https://localhost:9001/v1/responses/", {"model": "m"}, ("primary", "responses")),
    ("POST", "https://api.openai.com/v1/chat/completions", {"model": "m"}, ("openai", "chat")),
    ("POST", "https://api.groq.com/openai/v1/responses", {"model": "m"}, ("groq", "responses")),
    ("GET", "https://localhost:9001/v1/chat/completions", {"model": "m"}, None),
    ("POST", "https://localhost:9001/v1/embeddings", {"model": "m"}, None),
    ("POST", "https://localhost:9001/v1/responses/resp_1/cancel", {"model": "m"}, None),
    ("POST", "https://localhost:9999/v1/chat/completions", {"model": "m"}, None),
    ("POST", "http://localhost:9001/v1/chat/completions", {"model": "m"}, None),
])
def test_recognise(method, url, body, expected):
    found = recognise(method, url, AUTH, json.dumps(body).encode(), TABLE)
    assert (found and (found.provider.name, found.protocol)) == expected


@pytest.mark.parametrize("raw", [
    b"{x", b'{"messages": []}', b'["model"]', b"\xff\xfe", b"",
    b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
], ids=["syntax", "no model", "not an object", "not utf-8", "empty", "nested too deep"])
def test_an_llm_endpoint_with_a_body_it_cannot_read_is_unreadable(raw):
    with pytest.raises(Unreadable):
        recognise("POST", "https://localhost:9001/v1/chat/completions", AUTH, raw, TABLE)


def test_recognise_reads_stream_and_credential():
    found = call(body={"model": "m", "stream": True})
    assert found.stream and found.credential == "sk-client" and found.model == "m"


def test_plan_orders_addressed_then_fallbacks_and_guards_client_key():
    planned = plan(call(), CONFIG, TABLE)
    steps = [(c.provider.name, c.model, c.key) for c in planned.candidates]
    assert {c.protocol for c in planned.candidates} == {"chat"}
    assert steps == [("primary", "gpt-4o", None), ("backup", "gpt-4o-mini", "kb"),
                     ("primary", "gpt-4o-mini", None)]
    assert planned.skipped == ("bare skipped (no key configured)",)
    assert planned.candidates[1].url == "https://localhost:9002/v1/chat/completions"
    assert planned.candidates[0].fingerprint == fingerprint("sk-client")


def test_plan_keyed_provider_uses_every_key_then_star_fallback():
    planned = plan(call("https://localhost:9003/v1/responses", {"model": "o3"}), CONFIG, TABLE)
    assert [(c.label, c.model) for c in planned.candidates] == [
        (f"keyed{fingerprint('k1')}", "o3"), (f"keyed{fingerprint('k2')}", "o3"),
        ("backup", "o3")]
    assert planned.candidates[-1].url.endswith("/v1/responses")


def test_plan_protocol_config_beats_memory_beats_client():
    config = parse_config("""
providers:
  fixed: {base_url: "https://localhost:9005/v1", protocol: chat}
  auto: {base_url: "https://localhost:9006/v1", keys: [ka]}
fallbacks: {"*": [auto/*]}
""", "t.yaml", {})
    table = ProviderTable(config.providers)
    found = recognise("POST", "https://localhost:9005/v1/responses?api-version=1", AUTH,
                      b'{"model": "m"}', table)
    remembered = {("fixed", "m"): RESPONSES, ("auto", "m"): CHAT}
    planned = plan(found, config, table, remembered=lambda p, m: remembered.get((p.name, m)))
    assert [(c.provider.name, c.protocol, c.url) for c in planned.candidates] == [
        ("fixed", "chat", "https://localhost:9005/v1/chat/completions?api-version=1"),
        ("auto", "chat", "https://localhost:9006/v1/chat/completions")]
    fixed, auto = planned.candidates
    assert not fixed.can_switch and auto.can_switch
    switched = auto.switched()
    assert (switched.protocol, switched.url) == (RESPONSES, "https://localhost:9006/v1/responses")
    assert switched.switched() == auto


def test_fingerprint_is_short_and_hides_the_key():
    assert len(fingerprint("sk-secret")) == 7 and "secret" not in fingerprint("sk-secret")


def body(payload) -> bytes:
    return json.dumps(payload).encode()


RATE = body({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})
QUOTA = body({"error": {"message": "You exceeded your current quota",
                        "code": "insufficient_quota"}})

VERDICTS = [
    ("200 ok", Outcome(200, body=body({"choices": []})), Action.DELIVER, None),
    ("429 rate", Outcome(429, body=RATE), Action.NEXT_KEY, Scope.KEY_MODEL),
    ("429 quota", Outcome(429, body=QUOTA), Action.NEXT_KEY, Scope.KEY),
    ("402 billing", Outcome(402, body=b"{}"), Action.NEXT_KEY, Scope.KEY),
    ("429 too large", Outcome(429, body=body({"error": {
        "message": "Request too large for gpt-4o on tokens per min"}})),
     Action.NEXT_PROVIDER, None),
    ("500", Outcome(500, body=b"oops"), Action.NEXT_PROVIDER, Scope.MODEL),
    ("503", Outcome(503), Action.NEXT_PROVIDER, Scope.MODEL),
    ("529", Outcome(529), Action.NEXT_PROVIDER, Scope.MODEL),
    ("408", Outcome(408), Action.NEXT_PROVIDER, Scope.MODEL),
    ("refused", Outcome(None, failure=FailureKind.REFUSED), Action.NEXT_PROVIDER, Scope.MODEL),
    ("timeout", Outcome(None, failure=FailureKind.TIMEOUT), Action.NEXT_PROVIDER, Scope.MODEL),
    ("401 configured key", Outcome(401), Action.NEXT_KEY, Scope.KEY),
    ("401 client key", Outcome(401, client_key=True), Action.PASS_THROUGH, None),
    ("400", Outcome(400, body=body({"error": {"message": "bad temperature"}})),
     Action.PASS_THROUGH, None),
    ("400 context", Outcome(400, body=body({"error": {"code": "context_length_exceeded"}})),
     Action.PASS_THROUGH, None),
    ("413", Outcome(413), Action.PASS_THROUGH, None),
    ("422", Outcome(422, body=b"{}"), Action.PASS_THROUGH, None),
    ("404 model", Outcome(404, body=body({"error": {"code": "model_not_found",
                                                    "message": "The model `x` does not exist"}})),
     Action.NEXT_PROVIDER, Scope.MODEL),
    ("404 endpoint", Outcome(404, body=b""), Action.SWITCH_PROTOCOL, None),
    ("first event rate", Outcome(200, body=RATE, failure=FailureKind.ERROR_EVENT), Action.NEXT_KEY,
     Scope.KEY_MODEL),
    ("first event other", Outcome(200, body=body({"error": {"message": "overloaded"}}),
                                  failure=FailureKind.ERROR_EVENT), Action.NEXT_PROVIDER, Scope.MODEL),
    ("200 with error body", Outcome(200, body=body({"error": {"message": "internal"}})),
     Action.NEXT_PROVIDER, Scope.MODEL),
    ("first event context length", Outcome(200, body=body({"error": {
        "code": "context_length_exceeded", "type": "invalid_request_error"}}),
        failure=FailureKind.ERROR_EVENT), Action.PASS_THROUGH, None),
    ("gemini per-minute quota is a rate limit", Outcome(429, body=body([{"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "You exceeded your current quota, please check your plan",
        "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]}]}}])),
     Action.NEXT_KEY, Scope.KEY_MODEL),
    ("429 x-should-retry false is quota", Outcome(429, {"x-should-retry": "false"}, RATE),
     Action.NEXT_KEY, Scope.KEY),
    ("html for a stream", Outcome(200, body=b"<html>502</html>", failure=FailureKind.NOT_A_STREAM),
     Action.NEXT_PROVIDER, Scope.MODEL),
    ("json that is no stream", Outcome(200, body=b'{"status": "ok"}',
                                       failure=FailureKind.NOT_A_STREAM),
     Action.NEXT_PROVIDER, Scope.MODEL),
    ("an error not streamed", Outcome(200, body=RATE, failure=FailureKind.NOT_A_STREAM),
     Action.NEXT_KEY, Scope.KEY_MODEL),
    ("unexpected endpoint for a stream", Outcome(200, body=body(
        {"error": "Unexpected endpoint or method. (POST /v1/responses)"}),
        failure=FailureKind.NOT_A_STREAM), Action.SWITCH_PROTOCOL, None),
    ("malformed stream", Outcome(200, body=b"{not json", failure=FailureKind.MALFORMED),
     Action.NEXT_PROVIDER, Scope.MODEL),
    ("stream without an answer", Outcome(200, failure=FailureKind.NO_ANSWER),
     Action.NEXT_PROVIDER, Scope.MODEL),
    ("event too large", Outcome(200, failure=FailureKind.TOO_LARGE), Action.NEXT_PROVIDER,
     Scope.MODEL),
    ("deeply nested error body", Outcome(500, body=b"[" * 100_000 + b"]" * 100_000),
     Action.NEXT_PROVIDER, Scope.MODEL),
]


@pytest.mark.parametrize("name,outcome,action,scope", VERDICTS, ids=[v[0] for v in VERDICTS])
def test_judge(name, outcome, action, scope):
    verdict = judge(outcome, now=1_700_000_000)
    assert verdict.action is action
    assert (verdict.cooldown.scope if verdict.cooldown else None) is scope


def test_gemini_per_minute_is_short_and_per_day_is_long():
    def gemini(quota_id: str) -> bytes:
        return body([{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                "message": "You exceeded your current quota, please check "
                                           "your plan and billing details.",
                                "details": [{"@type": "type.googleapis.com/google.rpc."
                                                      "QuotaFailure",
                                             "violations": [{"quotaId": quota_id}]}]}}])
    minute = judge(Outcome(429, body=gemini("GenerateRequestsPerMinutePerProjectPerModel")), 0)
    day = judge(Outcome(429, body=gemini("GenerateRequestsPerDayPerProjectPerModel")), 0)
    assert (minute.reason, minute.cooldown.long) == ("rate limit", False)
    assert (day.reason, day.cooldown.long) == ("quota", True)


def test_quota_and_dead_keys_cool_long_and_say_do_not_retry():
    for outcome in (Outcome(429, body=QUOTA), Outcome(403)):
        verdict = judge(outcome, now=0)
        assert verdict.cooldown.long and verdict.no_retry


def test_judge_reads_retry_after():
    verdict = judge(Outcome(429, {"Retry-After": "20"}, RATE), now=0)
    assert verdict.hints.wait == 20


ENDPOINT_MISSING = [
    (404, b"", True), (404, b"<html>Not Found</html>", True), (404, b'{"detail":"Not Found"}', True),
    (404, body({"error": {"code": "unknown_url", "message": "Unknown request URL"}}), True),
    (404, body({"error": {"message": "no Route matched with those values"}}), True),
    (404, body({"message": "Not Found"}), True),
    (405, b"", True), (501, b"", True),
    (200, body({"error": "Unexpected endpoint or method. (POST /v1/responses)"}), True),
    (400, body({"error": {"message": "This model is only supported in v1/responses and not "
                                     "in v1/chat/completions."}}), True),
    (404, body({"error": {"code": "model_not_found", "message": "not found"}}), False),
    (404, body({"error": {"param": "previous_response_id", "message": "x"}}), False),
    (404, body({"error": {"message": "Response with id 'resp_1' not found."}}), False),
    (400, body({"error": {"message": "temperature must be below 2"}}), False),
    (500, b"", False),
]


@pytest.mark.parametrize("status,raw,missing", ENDPOINT_MISSING)
def test_endpoint_missing(status, raw, missing):
    assert endpoint_missing(status, read_error(raw)) is missing


def test_read_error_reads_array_bodies():
    info = read_error(body([{"error": {"code": 429, "message": "Resource exhausted",
                                       "status": "RESOURCE_EXHAUSTED"}}]))
    assert info.code == "429" and info.message == "Resource exhausted"


STREAM = (b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
          b'data: {"choices":[{"delta":{"content":"Hel"}}]}\r\n\r\n'
          b': keep-alive\n\n'
          b'event: message\ndata: {"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}'
          b'\n\ndata: [DONE]\n\n')


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_sse_parser_any_chunking(size):
    parser = SseParser()
    events = []
    for i in range(0, len(STREAM), size):
        events += parser.feed(STREAM[i:i + size])
    assert [e.data for e in events][-1] == "[DONE]"
    assert [e.comment for e in events] == [False, False, True, False, False]
    assert events[3].name == "message"
    assert b"".join(e.raw for e in events) == STREAM  # every byte, comments included
    assert parser.close() is None


GATE = [
    (CHAT, 'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}', Signal.HOLD),
    (CHAT, 'data: {"choices":[],"usage":{"prompt_tokens":1}}', Signal.HOLD),
    (CHAT, 'data: {"object":"something.new"}', Signal.HOLD),
    (CHAT, ': OPENROUTER PROCESSING', Signal.HOLD),
    (CHAT, 'event: ping', Signal.HOLD),
    (CHAT, 'data: {"choices":[{"delta":{"content":"x"}}]}', Signal.CONTENT),
    (CHAT, 'data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}', Signal.CONTENT),
    (CHAT, 'data: {"choices":[{"delta":{"reasoning_content":"hm"}}]}', Signal.CONTENT),
    (CHAT, 'data: {"choices":[{"delta":{"refusal":"no"}}]}', Signal.CONTENT),
    (CHAT, 'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}', Signal.CONTENT),
    (CHAT, 'data: {"error":{"message":"overloaded"}}', Signal.ERROR),
    (CHAT, 'event: error\ndata: {"message":"overloaded"}', Signal.ERROR),
    (CHAT, 'data: [DONE]', Signal.END),
    (CHAT, 'data: {not json', Signal.MALFORMED),
    (CHAT, 'data: <html>', Signal.MALFORMED),
    (RESPONSES, 'event: response.created\ndata: {"type":"response.created"}', Signal.HOLD),
    (RESPONSES, 'event: response.in_progress\ndata: {"type":"response.in_progress"}',
     Signal.HOLD),
    (RESPONSES, 'event: ping\ndata: {"type":"ping"}', Signal.HOLD),
    (RESPONSES, 'data: {"type":"response.something_new"}', Signal.HOLD),
    (RESPONSES, ': keepalive', Signal.HOLD),
    (RESPONSES, 'data: {"type":"response.output_text.delta"}', Signal.CONTENT),
    (RESPONSES, 'data: {"type":"response.output_item.added"}', Signal.CONTENT),
    (RESPONSES, 'data: {"type":"response.function_call_arguments.delta"}', Signal.CONTENT),
    (RESPONSES, 'data: {"type":"response.reasoning_summary_text.delta"}', Signal.CONTENT),
    (RESPONSES, 'data: {"type":"response.refusal.delta"}', Signal.CONTENT),
    (RESPONSES, 'event: response.failed\ndata: {"type":"response.failed"}', Signal.ERROR),
    (RESPONSES, 'event: error\ndata: {"type":"error","message":"x"}', Signal.ERROR),
    (RESPONSES, 'data: {"type":"response.completed"}', Signal.END),
    (RESPONSES, 'data: {"type":"response.incomplete"}', Signal.END),
    (RESPONSES, 'data: [1, 2]', Signal.MALFORMED),
]


@pytest.mark.parametrize("protocol,text,signal", GATE)
def test_gate_reads_the_head_of_a_stream(protocol, text, signal):
    event = SseParser().feed(text.encode() + b"\n\n")[0]
    assert spec(protocol).classify(event) is signal


def test_chat_passthrough_closes_a_broken_stream():
    shaper = ChatPassthrough()
    event = SseParser().feed(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')[0]
    assert shaper.feed(event) == event.raw
    tail = SseParser().feed(shaper.finish())
    assert json.loads(tail[0].data)["error"]["code"] == "switchback_stream_broken"
    assert tail[1].data == "[DONE]"


def test_chat_passthrough_leaves_a_finished_stream_alone():
    shaper = ChatPassthrough()
    for raw in (b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n', b"data: [DONE]\n\n"):
        shaper.feed(SseParser().feed(raw)[0])
    assert shaper.complete and shaper.finish() == b""


def test_responses_passthrough_fails_with_next_sequence_number_and_same_id():
    shaper = ResponsesPassthrough()
    shaper.feed(SseParser().feed(
        b'data: {"type":"response.created","sequence_number":0,'
        b'"response":{"id":"resp_1","object":"response","status":"in_progress"}}\n\n')[0])
    shaper.feed(SseParser().feed(
        b'data: {"type":"response.output_text.delta","sequence_number":1,"delta":"x"}\n\n')[0])
    event = SseParser().feed(shaper.fail("cut"))[0]
    payload = json.loads(event.data)
    assert event.name == "response.failed" and payload["sequence_number"] == 2
    assert payload["response"]["id"] == "resp_1" and payload["response"]["status"] == "failed"


def test_trail_text():
    trail = Trail()
    trail.skip("primary", 12.2)
    trail.attempt("backup", "429", cooldown=20)
    trail.attempt("other", "200")
    trail.note("web_search dropped")
    assert str(trail) == ("primary cooling (13s left) → backup 429 (retry 20s) → other 200; "
                          "web_search dropped")


def test_upstream_options():
    assert upstream_proxy(["regular"]) is None
    assert upstream_proxy(["upstream:http://127.0.0.1:3128"]) == "http://127.0.0.1:3128"
    assert tls_verify(True, None, None) is False
    assert tls_verify(False, None, None) is not False


class CountingPattern:
    """Wraps the parser's boundary pattern and counts the bytes it searches."""

    def __init__(self, pattern) -> None:
        self.pattern, self.searched = pattern, 0

    def search(self, buffer, position):
        self.searched += len(buffer) - position
        return self.pattern.search(buffer, position)


def test_sse_parsing_is_linear_in_the_bytes_fed(monkeypatch):
    counting = CountingPattern(sse._BOUNDARY)
    monkeypatch.setattr(sse, "_BOUNDARY", counting)
    parser = SseParser()
    event = b"data: " + b"x" * (10 << 20) + b"\n\n"
    events = []
    for i in range(0, len(event), 16 << 10):  # a 10 MB event in 16 KiB reads
        events += parser.feed(event[i:i + (16 << 10)])
    assert [len(e.raw) for e in events] == [len(event)]
    assert counting.searched < 2 * len(event)  # each byte searched about once, not per read


def test_one_event_past_the_limit_is_an_error_not_a_hang():
    parser = SseParser(limit=1000)
    parser.feed(b"data: " + b"x" * 900)
    with pytest.raises(EventTooLarge):
        parser.feed(b"x" * 200)


@pytest.mark.parametrize("stream", [
    b"data: a\r\n\r\ndata: b\r\n\r\n", b"data: a\n\ndata: b\n\n", b"data: a\r\rdata: b\r\r",
    b"data: a\n\r\ndata: b\r\n\n", b"\xef\xbb\xbfdata: a\n\ndata: b\n\n",
], ids=["crlf", "lf", "cr", "mixed", "bom"])
def test_sse_line_ends_and_splits_between_cr_and_lf(stream):
    for size in range(1, len(stream) + 1):
        parser, events = SseParser(), []
        for i in range(0, len(stream), size):
            events += parser.feed(stream[i:i + size])
        tail = parser.close()
        events += [tail] if tail else []
        assert b"".join(e.raw for e in events) == stream
        assert [e.data for e in events if not e.comment] == ["a", "b"], size
