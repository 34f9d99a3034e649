"""Anthropic's Messages API through a real mitmdump, with the anthropic SDK
as the client: Messages fakes (Anthropic's exact event sequences) for the
addressed provider, with two keys, and a Messages-compatible fallback.

A 429 on key 1 is served by key 2; a 529 and an overloaded_error event
before content are served by the fallback with nothing of them reaching
the client; a tool-use round trip streams byte for byte, also when the
network coalesces, splits and compresses it; thinking key 1 signed is not
sent to key 2; a stream broken after commit ends in an error the SDK
raises; usage and cost reach the log line, /status and metrics;
count_tokens goes to a configured key and costs nothing."""

from __future__ import annotations

import json
import urllib.request

import anthropic
import pytest

from support.fakemessages import (COUNT, MESSAGES, OVERLOADED, RATE_LIMITED, message_events,
                                  signed_for)
from support.fakeprovider import Reply, sse_bytes

ONE, TWO, BACKUP = "sk-ant-api03-one", "sk-ant-api03-two", "sk-compat-backup"
CLIENT_KEY = "sk-ant-client-own"
MODEL = "claude-x"


def config(primary: str, backup: str) -> str:
    return f"""
providers:
  anthropic: {{base_url: "{primary}", protocol: messages, keys: [{ONE}, {TWO}]}}
  compat: {{base_url: "{backup}", protocol: messages, keys: [{BACKUP}]}}
fallbacks: {{"*": [compat/*]}}
cooldown: {{max_wait: 0s}}
pricing:
  {MODEL}: {{input: 1000000, output: 1000000, cached_input: 100000, cache_write: 2000000}}
"""


SESSION = {"user_id": "user_abc_account__session_42"}  # as Claude Code names its session


@pytest.fixture
def setup(shared):
    primary = shared.fake("anthropic", paths=(MESSAGES, COUNT))
    backup = shared.fake("compat", paths=(MESSAGES,))
    running = shared.proxy(config(primary.base_url, backup.base_url))
    client = anthropic.Anthropic(base_url=primary.base_url.removesuffix("/v1"),
                                 api_key=CLIENT_KEY, max_retries=0,
                                 http_client=running.http_client(timeout=30))
    return primary, backup, running, client


def raw_stream(running, fake, body: dict) -> bytes:
    """The bytes a client gets for a streamed call, as they came."""
    with running.http_client(timeout=30) as http:
        with http.stream("POST", f"{fake.base_url}/messages?beta=true",
                         headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01",
                                  "content-type": "application/json"},
                         json={**body, "stream": True}) as answer:
            assert answer.status_code == 200
            return answer.read()


def ask(**extra) -> dict:
    return {"model": MODEL, "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}], **extra}


def test_a_429_on_key_one_is_served_by_key_two(setup):
    primary, backup, running, client = setup
    primary.script(Reply(status=429, headers={"retry-after": "20"}, body=RATE_LIMITED))
    with client.messages.stream(**ask()) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "hello from anthropic"
    assert (primary.count(key=ONE), primary.count(key=TWO)) == (1, 1)
    assert primary.count(key=CLIENT_KEY) == 0  # configured keys only; the client's stays home
    seen = primary.seen[-1].headers
    assert seen["anthropic-version"] == "2023-06-01" and "authorization" not in seen
    assert primary.seen[-1].path.endswith("/v1/messages")
    line = running.log_line("429")
    assert f"{MODEL}" in line and "200" in line, line


def test_a_529_is_served_by_the_messages_compatible_fallback(setup):
    primary, backup, running, client = setup
    primary.script(Reply(status=529, body=OVERLOADED))
    message = client.messages.create(**ask())
    assert message.content[0].text == "hello from compat"
    # Overloaded is the platform's: key two of the same provider is not tried.
    assert (primary.count(), backup.count(key=BACKUP)) == (1, 1)


def test_an_overloaded_error_event_before_content_fails_over_unseen(setup):
    primary, backup, running, client = setup
    head = message_events(MODEL, "")[:1] + [{"type": "ping"}, OVERLOADED]
    primary.script(Reply(events=head))
    got = raw_stream(running, primary, ask())
    assert got == sse_bytes(message_events(MODEL, "hello from compat"))
    assert b"overloaded" not in got.lower()
    assert (primary.count(), backup.count()) == (1, 1)


def test_a_tool_use_round_trip_streams_byte_for_byte(setup):
    primary, backup, running, client = setup
    tools = [{"name": "get_weather", "description": "Weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    got = raw_stream(running, primary, ask(tools=tools))
    assert got == sse_bytes(message_events(MODEL, "", None, "get_weather"))
    with client.messages.stream(**ask(tools=tools)) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (call,) = first.content
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Paris"})
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [c.model_dump() for c in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                              "content": "sunny"}]}]
    with client.messages.stream(model=MODEL, max_tokens=64, tools=tools,
                                messages=messages) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "weather: sunny" and final.stop_reason == "end_turn"


def test_thinking_key_one_signed_is_not_sent_to_key_two(setup):
    primary, backup, running, client = setup
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    with client.messages.stream(**ask(tools=tools, metadata=SESSION,
                                      thinking={"type": "enabled", "budget_tokens": 1024},
                                      max_tokens=2048)) as stream:
        first = stream.get_final_message()
    thinking, call = first.content
    assert thinking.type == "thinking" and thinking.signature == signed_for(ONE)
    assert primary.seen[-1].key == ONE
    primary.script(Reply(status=429, headers={"retry-after": "20"}, body=RATE_LIMITED))
    follow_up = [{"role": "user", "content": "hi"},
                 {"role": "assistant", "content": [c.model_dump() for c in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "sunny"}]}]
    with client.messages.stream(model=MODEL, max_tokens=2048, tools=tools, metadata=SESSION,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=follow_up) as stream:
        final = stream.get_final_message()
    assert final.content[-1].text == "weather: sunny"
    to_one, to_two = primary.seen[-2:]
    assert (to_one.key, to_two.key) == (ONE, TWO)
    assert [b["type"] for b in to_one.body["messages"][1]["content"]] == ["thinking", "tool_use"]
    assert [b["type"] for b in to_two.body["messages"][1]["content"]] == ["tool_use"]
    # The API wants the last turn to open with its thinking: key two thinks no more.
    assert "thinking" in to_one.body and "thinking" not in to_two.body
    assert "left out 1 thinking block(s)" in running.log_line("left out")


def test_a_stream_broken_after_commit_nobody_continues_ends_in_an_error_the_sdk_raises(setup):
    primary, backup, running, client = setup
    # Cut after its first words; the other key and the fallback cannot continue it.
    primary.script(Reply(cut_after=5), Reply(status=529, body=OVERLOADED))
    backup.script(Reply(status=529, body=OVERLOADED))
    with pytest.raises(anthropic.APIStatusError) as raised:
        with client.messages.stream(**ask()) as stream:
            for _ in stream:
                pass
    assert raised.value.body["error"]["message"] == "upstream stream ended before message_stop"
    assert "broke" in running.log_line("broke")


def test_an_exhausted_call_answers_in_the_messages_envelope(setup):
    primary, backup, running, client = setup
    primary.script(Reply(status=529, body=OVERLOADED))
    backup.script(Reply(status=529, body=OVERLOADED))
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(**ask())
    assert raised.value.status_code == 529
    assert raised.value.body["error"]["type"] == "overloaded_error"


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode()


def samples(port: int) -> dict[str, float]:
    """/metrics as sample → value (the shared proxy's counters run on across tests)."""
    return {name: float(value) for name, _, value in (
        line.rpartition(" ") for line in get(port, "/metrics").splitlines()
        if line and not line.startswith("#"))}


def test_usage_and_cost_reach_the_log_line_status_and_metrics(setup):
    primary, backup, running, client = setup
    before = samples(running.status_port)
    counted = json.loads(get(running.status_port, "/status"))["counters"]
    with client.messages.stream(**ask()) as stream:
        message = stream.get_final_message()
    assert message.usage.cache_read_input_tokens == 2
    # 5 plain + 2 read + 4 written in, 3 out: $5 + $0.2 + $8 + $3 at the configured prices
    line = running.log_line("11 in, 3 out")
    assert "11 in, 3 out (2 cached, 4 cache write) tokens, $16.2" in line, line
    after = samples(running.status_port)
    for kind, count in (("input", 11), ("output", 3), ("cached", 2), ("cache_write", 4)):
        sample = f'switchback_tokens_total{{kind="{kind}",model="{MODEL}",provider="anthropic"}}'
        assert after[sample] - before.get(sample, 0.0) == count, sample
    cost = f'switchback_cost_usd_total{{model="{MODEL}",provider="anthropic"}}'
    assert after[cost] - before.get(cost, 0.0) == pytest.approx(16.2)
    counters = json.loads(get(running.status_port, "/status"))["counters"]
    assert counters["switchback_tokens"] - counted["switchback_tokens"] == 20
    assert counters["switchback_cost_usd"] - counted["switchback_cost_usd"] == pytest.approx(16.2)


def test_a_stream_the_network_coalesces_splits_and_compresses_arrives_byte_for_byte(setup):
    primary, backup, running, client = setup
    stream = sse_bytes(message_events(MODEL, "", signed_for(ONE), "get_weather"))
    # Several events in one write, then one event over many writes, gzip-flushed per write.
    cuts = [0, 700, *range(701, 760, 7), len(stream)]
    pieces = [stream[a:b] for a, b in zip(cuts, cuts[1:])]
    primary.script(Reply(raw=pieces, encoding="gzip"))
    assert raw_stream(running, primary, ask()) == stream


def test_count_tokens_goes_to_a_configured_key_and_costs_nothing(setup):
    primary, backup, running, client = setup
    before = samples(running.status_port)
    primary.script(Reply(status=429, headers={"retry-after": "20"}, body=RATE_LIMITED))
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user",
                                                                   "content": "hi"}])
    assert counted.input_tokens >= 1
    assert [(seen.path, seen.key) for seen in primary.seen] == [
        ("/v1/messages/count_tokens", ONE), ("/v1/messages/count_tokens", TWO)]
    line = running.log_line(f"messages {MODEL} count_tokens")
    assert "ok via anthropic" in line and " tokens" not in line, line
    after = samples(running.status_port)
    assert {k: v for k, v in after.items() if k.startswith("switchback_tokens_total")} == \
        {k: v for k, v in before.items() if k.startswith("switchback_tokens_total")}


def test_a_stream_cut_mid_answer_is_continued_on_the_other_key_whole(setup):
    primary, backup, running, client = setup
    primary.script(Reply(cut_after=5))  # message_start, block, ping, two words
    with client.messages.stream(**ask()) as stream:
        texts = [e.delta.text for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "".join(texts) == "hello from anthropic" == final.content[0].text
    assert final.stop_reason == "end_turn" and len(final.content) == 1
    # The other key was asked for the rest: the delivered start came back as
    # prefill, without the trailing space Anthropic refuses there.
    last = primary.seen[-1].body["messages"][-1]
    assert last["role"] == "assistant" and last["content"] == "hello from"
    line = running.log_line("→ rescued")
    assert "cut after 5 chunks → anthropic" in line and "continued (prefill, " in line, line
