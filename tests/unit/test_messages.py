"""Anthropic's Messages API as a protocol: tables of its pure parts — the
gate's reading, the pass-through shaper, usage and price, the envelope,
credentials and describing headers, signed thinking, the signals of its
answers, recognition and the plan."""

from __future__ import annotations

import json

import pytest

from support.fakemessages import OVERLOADED, RATE_LIMITED, message_events, signed_for
from support.fakeprovider import sse, sse_bytes
from switchback.accounting.pricing import Price
from switchback.config import parse_config
from switchback.engine.headers import upstream_headers
from switchback.health.exhaustion import Failure, exhausted_answer
from switchback.health.verdict import Action, Outcome, Reason, Scope, judge
from switchback.plan import plan
from switchback.protocols import messages
from switchback.protocols.assemble import assemble
from switchback.protocols.kinds import Signal
from switchback.protocols.metered import Metered
from switchback.protocols.spec import spec
from switchback.protocols.sse import SseParser
from switchback.protocols.usage import Usage
from switchback.providers import ProviderTable
from switchback.recognise import recognise
from switchback.vocabulary import FailureKind, Protocol

MESSAGES = Protocol.MESSAGES
NOW = 1_700_000_000.0


def event(text: str):
    return SseParser().feed(text.encode() + b"\n\n")[0]


GATE = [
    ('event: message_start\ndata: {"type":"message_start","message":{"content":[]}}',
     Signal.HOLD),
    ('event: ping\ndata: {"type": "ping"}', Signal.HOLD),
    (': keepalive', Signal.HOLD),
    ('event: content_block_start\ndata: {"type":"content_block_start","index":0,'
     '"content_block":{"type":"text","text":""}}', Signal.HOLD),
    ('event: content_block_start\ndata: {"type":"content_block_start","index":0,'
     '"content_block":{"type":"thinking","thinking":"","signature":""}}', Signal.HOLD),
    ('event: content_block_start\ndata: {"type":"content_block_start","index":1,'
     '"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}', Signal.HOLD),
    ('event: content_block_start\ndata: {"type":"content_block_start","index":0,'
     '"content_block":{"type":"redacted_thinking","data":"abc"}}', Signal.CONTENT),
    ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
     '"delta":{"type":"text_delta","text":"Hi"}}', Signal.CONTENT),
    ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
     '"delta":{"type":"input_json_delta","partial_json":""}}', Signal.CONTENT),
    ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
     '"delta":{"type":"thinking_delta","thinking":"hm"}}', Signal.CONTENT),
    ('event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
     '"usage":{"output_tokens":1}}', Signal.END),
    ('event: message_delta\ndata: {"type":"message_delta","delta":{},"usage":{}}', Signal.HOLD),
    ('event: message_stop\ndata: {"type":"message_stop"}', Signal.END),
    ('event: error\ndata: ' + json.dumps(OVERLOADED), Signal.ERROR),
    ('data: ' + json.dumps(OVERLOADED), Signal.ERROR),
    ('event: something_new\ndata: {"type":"something_new"}', Signal.HOLD),
    ('event: message_start\ndata: <html>', Signal.MALFORMED),
]


@pytest.mark.parametrize("text,signal", GATE)
def test_the_gate_reads_a_messages_head(text, signal):
    assert spec(MESSAGES).classify(event(text)) is signal


def stream_events(*args) -> list:
    return SseParser().feed(sse_bytes(message_events("m", *args)))


def test_passthrough_forwards_every_byte_and_remembers_the_signature():
    shaper = messages.MessagesPassthrough()
    events = stream_events("hi there", signed_for("k1"))
    out = b"".join(shaper.feed(e) for e in events)
    assert out == sse_bytes(message_events("m", "hi there", signed_for("k1")))
    assert shaper.complete and shaper.finish() == b""
    assert messages.answer_marks(shaper.final) == [messages.mark(
        {"type": "thinking", "signature": signed_for("k1")})]


def test_passthrough_ends_a_stream_cut_after_its_stop_reason_with_message_stop():
    shaper = messages.MessagesPassthrough()
    for e in stream_events("hi")[:-1]:
        shaper.feed(e)
    assert shaper.complete
    assert SseParser().feed(shaper.finish())[0].name == "message_stop"
    assert shaper.finish() == b""


def test_passthrough_ends_a_broken_stream_with_an_error_event():
    shaper = messages.MessagesPassthrough()
    for e in stream_events("hi there")[:5]:
        shaper.feed(e)
    assert not shaper.complete and shaper.final is None
    ended = SseParser().feed(shaper.fail("upstream stream broke: reset"))[0]
    assert ended.name == "error"
    assert json.loads(ended.data) == {"type": "error", "error": {
        "type": "api_error", "message": "upstream stream broke: reset"}}
    assert shaper.fail("again") == b""


def test_an_upstream_error_event_after_content_is_the_streams_end():
    shaper = messages.MessagesPassthrough()
    overloaded = event("event: error\ndata: " + json.dumps(OVERLOADED))
    for e in [*stream_events("hi there")[:5], overloaded]:
        shaper.feed(e)
    assert shaper.finish() == b""


USAGE = [
    ({"input_tokens": 5, "output_tokens": 3}, Usage(5, 3)),
    ({"input_tokens": 5, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 2,
      "output_tokens": 3}, Usage(11, 3, cached=2, cache_write=4)),
    ({"input_tokens": None, "output_tokens": "x"}, Usage()),
    (None, None),
]


@pytest.mark.parametrize("found,expected", USAGE)
def test_messages_usage_counts_cache_reads_and_writes_as_input(found, expected):
    assert spec(MESSAGES).usage(found, None) == expected


def test_a_whole_messages_answer_and_a_stream_report_the_same_usage():
    whole = {"id": "msg_1", "type": "message", "model": "claude-x", "content": [],
             "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 3}}
    assert spec(MESSAGES).body_usage(json.dumps(whole).encode()) == Usage(
        7, 3, cached=2, model="claude-x")
    meter = Metered(messages.MessagesPassthrough(), MESSAGES)
    for e in stream_events("hi"):
        meter.feed(e)
    assert meter.usage == Usage(11, 3, cached=2, cache_write=4, model="m")
    assert meter.delivered() == 1  # "hi": two bytes of text


def test_message_delta_may_restate_the_input_counts():
    known = Usage(11, 1, cached=2, cache_write=4, model="m")
    payload = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
               "usage": {"output_tokens": 9, "input_tokens": 7}}
    assert messages.reported_usage(payload, known) == Usage(13, 9, cached=2, cache_write=4,
                                                            model="m")


def test_cache_writes_are_priced_at_their_own_rate():
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    usage = Usage(1_000_000 + 2_000_000 + 4_000_000, 1_000_000, cached=2_000_000,
                  cache_write=4_000_000)
    assert price.cost(usage) == pytest.approx(3.0 + 0.6 + 15.0 + 15.0)
    assert Price(input=3.0, output=15.0).cost(usage) == pytest.approx(21.0 + 15.0)


ENVELOPE = [("server_error", "api_error"), ("rate_limit_error", "rate_limit_error"),
            ("insufficient_quota", "billing_error"),
            ("invalid_request_error", "invalid_request_error"), ("made_up", "api_error")]


@pytest.mark.parametrize("kind,expected", ENVELOPE)
def test_switchbacks_own_errors_wear_the_messages_envelope(kind, expected):
    body = json.loads(spec(MESSAGES).error_body("no", kind, "some_code"))
    assert body == {"type": "error", "error": {"type": expected, "message": "no"}}


def test_keys_travel_as_anthropic_expects():
    assert messages.credential("sk-ant-api03-abc") == ("x-api-key", "sk-ant-api03-abc")
    assert messages.credential("sk-ant-oat01-abc") == ("authorization", "Bearer sk-ant-oat01-abc")
    assert spec(Protocol.CHAT).credential("k") == ("authorization", "Bearer k")


CONFIG = """
providers:
  anthropic: {base_url: "https://api.anthropic.com/v1", keys: [sk-ant-api03-one, sk-ant-api03-two]}
  compat: {base_url: "https://compat.example/anthropic/v1", protocol: messages, keys: [ck]}
  chatty: {base_url: "https://chatty.example/v1", protocol: chat, keys: [hk]}
fallbacks: {"claude-x": [compat/claude-x, chatty/some-model]}
"""


def call_to(url: str, headers=(), body=None, config: str = CONFIG):
    parsed = parse_config(config, "t.yaml", {})
    table = ProviderTable(parsed.providers)
    raw = json.dumps(body or {"model": "claude-x", "max_tokens": 5, "messages": []}).encode()
    return parsed, table, recognise("POST", url, list(headers), raw, table)


RECOGNISED = [
    ("https://api.anthropic.com/v1/messages", MESSAGES),
    ("https://api.anthropic.com/v1/messages?beta=true", MESSAGES),
    ("https://compat.example/anthropic/v1/messages", MESSAGES),
    ("https://api.openai.com/v1/messages", None),  # not a Messages provider
    ("https://chatty.example/v1/messages", None),
    # A chat call to a Messages-only provider: recognised, and translated there.
    ("https://compat.example/anthropic/v1/chat/completions", Protocol.CHAT),
    ("https://api.anthropic.com/v1/chat/completions", Protocol.CHAT),
]


@pytest.mark.parametrize("url,protocol", RECOGNISED)
def test_messages_is_recognised_on_anthropics_host_and_where_configured(url, protocol):
    _, _, call = call_to(url)
    assert (call.protocol if call else None) is protocol
    assert call is None or not call.counting


@pytest.mark.parametrize("url", ["https://api.anthropic.com/v1/messages/count_tokens?beta=true",
                                 "https://compat.example/anthropic/v1/messages/count_tokens"])
def test_count_tokens_is_a_counting_messages_call_planned_on_messages_providers(url):
    config, table, call = call_to(url)
    assert call.protocol is MESSAGES and call.counting and not call.stream
    planned = plan(call, config, table)
    urls = {c.provider.name: c.url for c in planned.candidates}
    assert urls["compat"] == "https://compat.example/anthropic/v1/messages/count_tokens"
    if "anthropic" in urls:
        assert urls["anthropic"] == url  # the client's own URL, query string kept
    assert not any(c.can_switch for c in planned.candidates)
    # Counting has no translation: a provider of another protocol is not asked.
    assert planned.skipped == ("chatty skipped (speaks chat: no translation from messages)",)


def test_a_messages_call_plans_its_keys_then_its_fallbacks_translated_where_need_be():
    config, table, call = call_to("https://api.anthropic.com/v1/messages?beta=true")
    planned = plan(call, config, table)
    assert [(c.provider.name, c.protocol) for c in planned.candidates] == [
        ("anthropic", MESSAGES), ("anthropic", MESSAGES), ("compat", MESSAGES),
        ("chatty", Protocol.CHAT)]
    assert planned.candidates[0].url == "https://api.anthropic.com/v1/messages?beta=true"
    assert planned.candidates[2].url == "https://compat.example/anthropic/v1/messages"
    # Anthropic's own endpoint found missing: the same candidate is tried on chat.
    assert [c.can_switch for c in planned.candidates] == [True, True, False, False]
    assert planned.candidates[0].switched().url == \
        "https://api.anthropic.com/v1/chat/completions?beta=true"  # its query kept
    assert planned.skipped == ()


def test_describing_headers_travel_and_the_clients_key_stays_home():
    headers = [("x-api-key", "sk-ant-client"), ("anthropic-version", "2023-06-01"),
               ("anthropic-beta", "a,b"), ("content-type", "application/json"),
               ("x-app", "cli")]
    config, table, call = call_to("https://api.anthropic.com/v1/messages", headers)
    first, _, fallback, chatty = plan(call, config, table).candidates
    sent = dict(upstream_headers(call, fallback))
    assert sent == {"anthropic-version": "2023-06-01", "anthropic-beta": "a,b",
                    "content-type": "application/json", "x-api-key": "ck"}
    assert dict(upstream_headers(call, first))["x-api-key"] == "sk-ant-api03-one"
    # Translated to chat, the call's Messages headers describe nothing there.
    sent = dict(upstream_headers(call, chatty))
    assert "anthropic-version" not in sent and "x-api-key" not in sent
    assert sent["authorization"].startswith("Bearer ")


def test_a_missing_anthropic_version_is_supplied():
    config, table, call = call_to("https://api.anthropic.com/v1/messages",
                                  [("x-api-key", "sk-ant-client")])
    sent = upstream_headers(call, plan(call, config, table).candidates[0])
    assert ("anthropic-version", messages.VERSION) in sent


def test_the_clients_own_call_keeps_its_headers():
    own = """
providers:
  anthropic: {base_url: "https://api.anthropic.com/v1"}
"""
    headers = [("x-api-key", "sk-ant-client"), ("anthropic-version", "2023-06-01"),
               ("x-app", "cli")]
    config, table, call = call_to("https://api.anthropic.com/v1/messages", headers, config=own)
    candidate = plan(call, config, table).candidates[0]
    assert upstream_headers(call, candidate) == headers


VERDICTS = [
    (Outcome(529, body=json.dumps(OVERLOADED).encode()), Action.NEXT_PROVIDER, Reason.OVERLOADED,
     Scope.MODEL),
    (Outcome(200, body=json.dumps(OVERLOADED).encode(),
             failure=FailureKind.ERROR_EVENT),
     Action.NEXT_PROVIDER, Reason.OVERLOADED, Scope.MODEL),
    (Outcome(429, {"retry-after": "7"}, json.dumps(RATE_LIMITED).encode()), Action.NEXT_KEY,
     Reason.RATE_LIMIT, Scope.KEY_MODEL),
    (Outcome(429, {"anthropic-ratelimit-unified-status": "rejected",
                   "anthropic-ratelimit-unified-5h-status": "rejected",
                   "anthropic-ratelimit-unified-5h-reset": str(int(NOW) + 7200)},
             json.dumps(RATE_LIMITED).encode()), Action.NEXT_KEY, Reason.QUOTA, Scope.KEY),
    (Outcome(401, body=json.dumps({"type": "error", "error": {
        "type": "authentication_error", "message": "invalid x-api-key"}}).encode()),
     Action.NEXT_KEY, Reason.KEY_REFUSED, Scope.KEY),
    (Outcome(400, body=json.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}}).encode()),
     Action.PASS_THROUGH, Reason.CLIENT_ERROR, None),
    (Outcome(400, body=json.dumps({"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 210000 tokens > 200000 maximum"}}).encode()),
     Action.PASS_THROUGH, Reason.CONTEXT_LENGTH, None),
]


@pytest.mark.parametrize("outcome,action,reason,scope", VERDICTS)
def test_the_signals_of_messages_answers(outcome, action, reason, scope):
    verdict = judge(outcome, NOW)
    assert (verdict.action, verdict.reason) == (action, reason)
    assert (verdict.cooldown.scope if verdict.cooldown else None) is scope


def test_a_spent_subscription_window_cools_the_credential_until_its_reset():
    outcome = Outcome(429, {"anthropic-ratelimit-unified-7d-status": "rejected",
                            "anthropic-ratelimit-unified-7d-reset": str(int(NOW) + 90_000),
                            "anthropic-ratelimit-unified-5h-status": "allowed",
                            "anthropic-ratelimit-unified-5h-reset": str(int(NOW) + 60)})
    verdict = judge(outcome, NOW)
    assert verdict.hints.window_reset == 90_000 and verdict.hints.wait == 90_000
    assert verdict.cooldown is not None and verdict.cooldown.long


def test_an_exhausted_messages_call_answers_in_the_messages_envelope():
    refused = Outcome(None, failure=FailureKind.REFUSED)
    failure = Failure(judge(refused, NOW), refused, ())
    status, _, body = exhausted_answer([failure], [], NOW, "claude-x", spec(MESSAGES).error_body)
    assert status == 502
    assert json.loads(body)["type"] == "error"
    assert json.loads(body)["error"]["type"] == "api_error"


SIGNED = {"type": "thinking", "thinking": "hm", "signature": signed_for("k1")}
REDACTED = {"type": "redacted_thinking", "data": "opaque"}


def conversation(*assistant_blocks) -> dict:
    return {"model": "claude-x", "max_tokens": 9, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": list(assistant_blocks)},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "sunny"}]}]}


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}


def test_thinking_another_account_signed_is_left_out():
    body = conversation(SIGNED, REDACTED, TOOL_USE)
    marks = messages.request_marks(body)
    assert len(marks) == 2 and messages.thinking_blocks(body) == 2
    producers = {marks[0]: "anthropic#1", marks[1]: "anthropic#1"}
    same = messages.sift(body, producers, "anthropic#1")
    assert same.left_out == 0 and same.body == body
    other = messages.sift(body, producers, "anthropic#2")
    assert other.left_out == 2
    assert other.body["messages"][1]["content"] == [TOOL_USE]
    assert body["messages"][1]["content"] == [SIGNED, REDACTED, TOOL_USE]  # not changed


def test_losing_the_last_turns_thinking_turns_thinking_off():
    body = {**conversation(SIGNED, TOOL_USE), "thinking": {"type": "enabled", "budget_tokens": 9},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}}
    sifted = messages.sift(body, {messages.mark(SIGNED): "a"}, "b")
    assert "thinking" not in sifted.body and "context_management" not in sifted.body
    assert sifted.also == "thinking turned off: the last turn's thinking is another account's"
    other_edits = {**body, "context_management": {"edits": [
        {"type": "clear_thinking_20251015"}, {"type": "clear_tool_uses_20250919"}]}}
    assert messages.sift(other_edits, {messages.mark(SIGNED): "a"}, "b").body[
        "context_management"] == {"edits": [{"type": "clear_tool_uses_20250919"}]}
    own = messages.sift(body, {messages.mark(SIGNED): "b"}, "b")
    assert own.body == body and not own.also


def test_thinking_left_out_of_an_earlier_turn_keeps_thinking_on():
    body = {"model": "m", "max_tokens": 9, "thinking": {"type": "adaptive"}, "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [SIGNED, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "x", "signature": signed_for("k2")}, TOOL_USE]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "ok"}]}]}
    sifted = messages.sift(body, {messages.mark(SIGNED): "a"}, "b")
    assert sifted.left_out == 1 and sifted.body["thinking"] == {"type": "adaptive"}


def test_thinking_of_unknown_producer_goes_until_refused():
    body = conversation(SIGNED, TOOL_USE)
    assert messages.sift(body, {}, "x").unknown == 1
    assert messages.sift(body, {}, "x", keep_unknown=False).left_out == 1


def test_a_turn_left_with_nothing_is_left_out():
    body = conversation(SIGNED)
    sifted = messages.sift(body, {messages.mark(SIGNED): "a"}, "b")
    assert [m["role"] for m in sifted.body["messages"]] == ["user", "user"]


@pytest.mark.parametrize("text,refused", [
    ("messages.1.content.0: Invalid `signature` in `thinking` block", True),
    ("Invalid `data` in `redacted_thinking` block", True),
    ("max_tokens: Field required", False),
])
def test_a_refusal_of_anothers_thinking_is_recognised(text, refused):
    assert spec(MESSAGES).seals.refused(text) is refused


def test_a_messages_call_reads_as_a_conversation():
    streamed = assemble(MESSAGES, sse_bytes(message_events("m", "", signed_for("k"), "f")))
    assert streamed.tool_calls[0].name == "f"
    assert json.loads(streamed.tool_calls[0].arguments) == {"city": "Paris"}
    assert streamed.finish == "tool_use" and streamed.reasoning
    assert streamed.usage == Usage(11, 3, cached=2, cache_write=4, model="m")
    error = assemble(MESSAGES, sse(OVERLOADED))
    assert error.error and "Overloaded" in error.error
