"""A Messages call through the engine, on a scripted transport: what fails
over before any byte reaches the client (an overloaded_error event at the
head, a 529, a 429), what a Messages client gets when everything failed or
the stream broke after commit, and signed thinking that goes only back to
the account that wrote it."""

from __future__ import annotations

import asyncio
import json

from support.engine import Clock, ScriptedReply, ScriptedTransport, wire
from support.fakemessages import (OVERLOADED, RATE_LIMITED, message_events, message_object,
                                  signed_for)
from support.fakeprovider import sse, sse_bytes
from switchback.engine.delivery import Committed
from switchback.engine.results import Answer, Result
from switchback.protocols.sse import SseParser
from switchback.protocols.usage import Usage
from switchback.recognise import fingerprint, recognise
from switchback.vocabulary import CallOutcome, Reason

BASE = "https://anthropic.test/v1"
COMPAT = "https://compat.test/anthropic/v1"
ONE, TWO, BACKUP = "sk-ant-api03-one", "sk-ant-api03-two", "sk-compat-key"
CONFIG = f"""
providers:
  anthropic: {{base_url: "{BASE}", protocol: messages, keys: [{ONE}, {TWO}]}}
  compat: {{base_url: "{COMPAT}", protocol: messages, keys: [{BACKUP}]}}
fallbacks: {{"*": [compat/*]}}
"""
HEADERS = [("x-api-key", "sk-ant-client"), ("anthropic-version", "2023-06-01"),
           ("anthropic-beta", "interleaved-thinking-2025-05-14")]


def stream(*args, status: int = 200, **headers: str) -> ScriptedReply:
    return ScriptedReply(status, [sse_bytes(message_events("claude-x", *args))], **headers)


def error(status: int, body: dict, **headers: str) -> ScriptedReply:
    return ScriptedReply(status, [json.dumps(body).encode()], "application/json", **headers)


def run(transport: ScriptedTransport, body: dict | None = None, clock: Clock | None = None,
        dispatcher=None) -> tuple[Result, bytes]:
    d = dispatcher or wire(CONFIG, clock or Clock(), transport)
    payload = body or {"model": "claude-x", "max_tokens": 100, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}
    call = recognise("POST", f"{BASE}/messages?beta=true", HEADERS,
                     json.dumps(payload).encode(), d.table)
    assert call is not None

    async def go() -> tuple[Result, bytes]:
        result = await d.run(call)
        if isinstance(result.delivery, Committed):
            try:
                got = result.delivery.first + b"".join(
                    [c async for c in result.delivery.rest])
            finally:
                await result.delivery.aclose()
            return result, got
        assert isinstance(result.delivery, Answer)
        return result, result.delivery.body
    return asyncio.run(go())


def sent_keys(transport: ScriptedTransport) -> list[str | None]:
    return [dict(headers).get("x-api-key") for _, headers, _ in transport.sent]


def test_an_overloaded_error_event_before_content_fails_over_with_nothing_delivered():
    head = [message_events("claude-x", "")[0], {"type": "ping"}, OVERLOADED]
    transport = ScriptedTransport(ScriptedReply(200, [sse_bytes(head)]), stream("from two"))
    result, got = run(transport)
    assert got == sse_bytes(message_events("claude-x", "from two"))
    assert b"overloaded" not in got.lower()
    assert result.outcome is CallOutcome.OK and result.failures == 1
    # The overload is the platform's: the other key of the same provider is
    # not tried (the model cools provider-wide); the fallback serves.
    assert [url for url, _, _ in transport.sent] == [f"{BASE}/messages?beta=true",
                                                     f"{COMPAT}/messages"]
    assert sent_keys(transport) == [ONE, BACKUP]
    assert result.attempts[0].reason is Reason.OVERLOADED


def test_a_529_is_served_by_the_messages_compatible_fallback():
    transport = ScriptedTransport(error(529, OVERLOADED), stream("from compat"))
    result, got = run(transport)
    assert b"from " in got and result.served_by.provider.name == "compat"
    url, headers, _ = transport.sent[1]
    assert url == f"{COMPAT}/messages"
    assert ("anthropic-version", "2023-06-01") in headers
    assert ("anthropic-beta", "interleaved-thinking-2025-05-14") in headers
    assert all(value != "sk-ant-client" for _, value in headers)


def test_a_429_on_key_one_is_served_by_key_two():
    transport = ScriptedTransport(error(429, RATE_LIMITED, **{"retry-after": "30"}),
                                  stream("from two"))
    result, got = run(transport)
    assert sent_keys(transport) == [ONE, TWO]
    assert result.served_by.fingerprint == fingerprint(TWO)
    assert result.delivery.meter.usage == Usage(11, 3, cached=2, cache_write=4,
                                                model="claude-x")


def test_a_client_error_is_passed_through_exactly():
    refusal = {"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "max_tokens: Field required"}}
    transport = ScriptedTransport(error(400, refusal))
    result, got = run(transport)
    assert json.loads(got) == refusal and result.outcome is CallOutcome.PASSED_THROUGH
    assert len(transport.sent) == 1


def test_everything_failing_answers_a_messages_client_in_its_envelope():
    overloaded = [error(529, OVERLOADED) for _ in range(3)]
    transport = ScriptedTransport(*overloaded,
                                  ScriptedReply(200, [sse_bytes([OVERLOADED])]))
    result, got = run(transport)
    assert result.outcome is CallOutcome.EXHAUSTED
    assert result.delivery.status == 529
    assert json.loads(got)["error"]["type"] == "overloaded_error"


def test_a_stream_broken_after_commit_ends_with_an_error_event():
    events = message_events("claude-x", "one two three")
    cut = sse_bytes(events[:6])
    transport = ScriptedTransport(ScriptedReply(200, [cut, ConnectionResetError("gone")]))
    result, got = run(transport)
    assert got.startswith(cut)
    last = SseParser().feed(got[len(cut):])
    assert [e.name for e in last] == ["error"]
    assert json.loads(last[0].data)["type"] == "error"
    assert result.delivery.broke


SESSION = {"user_id": "user_abc_account__session_1234"}  # as Claude Code names its session


def test_thinking_from_key_one_is_not_sent_to_key_two():
    """The session goes back to key one, which wrote the thinking; rate
    limited there, it goes on to key two without it."""
    clock = Clock()
    transport = ScriptedTransport(stream("thought", signed_for(ONE)))
    d = wire(CONFIG, clock, transport)
    first, _ = run(transport, {"model": "claude-x", "max_tokens": 100, "stream": True,
                               "metadata": SESSION, "thinking": {"type": "adaptive"},
                               "messages": [{"role": "user", "content": "weather?"}]},
                   dispatcher=d)
    assert first.served_by.fingerprint == fingerprint(ONE)
    follow_up = {"model": "claude-x", "max_tokens": 100, "stream": True, "metadata": SESSION,
                 "thinking": {"type": "adaptive"}, "messages": [
                     {"role": "user", "content": "weather?"},
                     {"role": "assistant", "content": [
                         {"type": "thinking", "thinking": "hm", "signature": signed_for(ONE)},
                         {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
                     {"role": "user", "content": [{"type": "tool_result",
                                                   "tool_use_id": "toolu_1",
                                                   "content": "sunny"}]}]}
    transport.replies += [error(429, RATE_LIMITED, **{"retry-after": "30"}), stream("ok")]
    result, _ = run(transport, follow_up, dispatcher=d)
    to_one, to_two = (json.loads(body) for _, _, body in transport.sent[1:])
    assert to_one["messages"][1]["content"][0]["type"] == "thinking"
    assert to_two["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    assert "thinking" in to_one and "thinking" not in to_two  # its last turn's thinking is gone
    assert sent_keys(transport)[1:] == [ONE, TWO]
    assert "left out 1 thinking block(s) only their producer can read" in result.trail.notes
    assert "thinking turned off: the last turn's thinking is another account's" \
        in result.trail.notes


def test_thinking_of_unknown_producer_refused_is_sent_again_without():
    refusal = {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "messages.1.content.0: Invalid `signature` in `thinking` block"}}
    transport = ScriptedTransport(error(400, refusal), stream("ok"))
    body = {"model": "claude-x", "max_tokens": 100, "stream": True, "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm",
                                           "signature": "Eqsomebody-else"},
                                          {"type": "text", "text": "b"}]},
        {"role": "user", "content": "c"}]}
    result, got = run(transport, body)
    assert result.outcome is CallOutcome.OK
    again = json.loads(transport.sent[1][2])
    assert again["messages"][1]["content"] == [{"type": "text", "text": "b"}]


def test_a_whole_messages_answer_reports_usage():
    answer = message_object("claude-x", "hello")
    transport = ScriptedTransport(ScriptedReply(200, [json.dumps(answer).encode()],
                                                "application/json"))
    body = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user",
                                                                 "content": "hi"}]}
    result, got = run(transport, body)
    assert json.loads(got) == answer
    assert result.usage == Usage(11, 3, cached=2, cache_write=4, model="claude-x")


def test_an_error_event_alone_is_not_a_stream_the_client_sees():
    transport = ScriptedTransport(ScriptedReply(200, [sse(OVERLOADED)]), stream("ok"))
    result, got = run(transport)
    assert b"overloaded" not in got and result.outcome is CallOutcome.OK


def test_count_tokens_goes_to_a_configured_key_and_fails_over_like_a_call():
    d = wire(CONFIG, Clock(), transport := ScriptedTransport(
        error(429, RATE_LIMITED, **{"retry-after": "30"}),
        ScriptedReply(200, [b'{"input_tokens": 12}'], "application/json")))
    call = recognise("POST", f"{BASE}/messages/count_tokens?beta=true", HEADERS,
                     json.dumps({"model": "claude-x", "messages": [
                         {"role": "user", "content": "hi"}]}).encode(), d.table)
    assert call is not None and call.counting
    result = asyncio.run(d.run(call))
    assert result.delivery.body == b'{"input_tokens": 12}' and result.usage is None
    assert [url for url, _, _ in transport.sent] == [f"{BASE}/messages/count_tokens?beta=true"] * 2
    assert sent_keys(transport) == [ONE, TWO]
