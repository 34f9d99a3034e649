"""A stream cut mid-answer, rescued end to end: the openai SDK through a real
mitmdump gets one complete, well-formed answer — plain streams and the SDK's
stream helpers, chat and Responses — and its own parser raises nothing. The
addressed provider's connection drops after part of the answer; the backup
is asked for the rest by prefill. (Every break point, every protocol pair
and the refusing and rephrasing backups: tests/engine/test_rescue.py.)
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from support.fakeprovider import Reply, chat_events, response_events, sse
from test_engine_e2e import config

TEXT = "The quick brown fox jumps over the lazy dog, then naps in the sun"
CUT_AT = 8  # events the primary sends before its connection drops: mid-answer


def delivered(events: list, count: int) -> str:
    """The answer text in the first `count` events."""
    text = ""
    for event in events[:count]:
        if isinstance(event, dict):
            for choice in event.get("choices") or ():
                text += choice["delta"].get("content") or ""
            if event.get("type") == "response.output_text.delta":
                text += event["delta"]
    return text


@pytest.fixture
def running(shared):
    primary, backup = shared.fake("primary"), shared.fake("backup")
    return primary, backup, shared.proxy(config(primary, backup))


def metric(port: int, name: str) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return [line for line in answer.read().decode().splitlines() if line.startswith(name)]


def prefill_of(seen) -> str:
    """The answer's start the backup was sent back (the last input, the assistant's)."""
    last = (seen.body.get("messages") or seen.body.get("input"))[-1]
    assert last["role"] == "assistant", last
    content = last["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


def cut_chat(primary, backup) -> str:
    events = chat_events("m", TEXT, usage=False)
    start = delivered(events, CUT_AT)
    primary.script(Reply(raw=[sse(e) for e in events[:CUT_AT]]))
    backup.script(Reply(text=TEXT[len(start):]))
    return start


def cut_responses(primary, backup) -> str:
    events = response_events("m", TEXT, rid="resp_primary")
    start = delivered(events, CUT_AT)
    primary.script(Reply(raw=[sse(e) for e in events[:CUT_AT]]))
    backup.script(Reply(text=TEXT[len(start):]))
    return start


def test_e2e_a_cut_chat_stream_reaches_the_sdk_whole(running):
    primary, backup, proxy = running
    start = cut_chat(primary, backup)
    with proxy.openai(primary.base_url) as sdk:
        chunks = list(sdk.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "x"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert {c.id for c in chunks} == {chunks[0].id}
    assert [c.choices[0].finish_reason for c in chunks if c.choices
            and c.choices[0].finish_reason] == ["stop"]
    assert prefill_of(backup.seen[-1]) == start.rstrip()  # sent without trailing space
    line = proxy.log_line("→ rescued")
    assert f"primary cut after {CUT_AT} chunks → backup continued (prefill, " in line, line
    assert any('outcome="rescued"' in sample and sample.endswith(" 1.0")
               for sample in metric(proxy.status_port, "switchback_calls_total"))


def test_e2e_the_chat_stream_helper_gets_the_whole_completion(running):
    primary, backup, proxy = running
    cut_chat(primary, backup)
    with proxy.openai(primary.base_url) as sdk:
        with sdk.chat.completions.stream(
                model="m", messages=[{"role": "user", "content": "x"}]) as stream:
            texts = [e.delta for e in stream if e.type == "content.delta"]
            final = stream.get_final_completion()
    assert "".join(texts) == TEXT
    assert final.choices[0].message.content == TEXT
    assert final.choices[0].finish_reason == "stop"


def test_e2e_a_cut_responses_stream_reaches_the_sdk_whole(running):
    primary, backup, proxy = running
    start = cut_responses(primary, backup)
    with proxy.openai(primary.base_url) as sdk:
        events = list(sdk.responses.create(model="m", input="x", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events].count("response.completed") == 1
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.id == "resp_primary" and completed.response.output_text == TEXT
    assert completed.response.usage.output_tokens > 3  # both attempts: what each wrote
    assert prefill_of(backup.seen[-1]) == start.rstrip()  # sent without trailing space
    proxy.log_line("→ rescued")


def test_e2e_the_responses_stream_helper_gets_the_whole_response(running):
    primary, backup, proxy = running
    cut_responses(primary, backup)
    with proxy.openai(primary.base_url) as sdk:
        with sdk.responses.stream(model="m", input="x") as stream:
            texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
    assert "".join(texts) == TEXT
    assert final.output_text == TEXT and final.status == "completed"
    assert [item.type for item in final.output] == ["message"]


def test_e2e_a_prefill_refusal_never_reaches_the_sdk(running):
    primary, backup, proxy = running
    events = chat_events("m", TEXT, usage=False)
    primary.script(Reply(raw=[sse(e) for e in events[:CUT_AT]]))
    backup.script(Reply(status=400, body={"error": {
        "message": "This model does not support assistant message prefill.",
        "type": "invalid_request_error"}}), Reply(text=TEXT))
    with proxy.openai(primary.base_url) as sdk:
        chunks = list(sdk.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "x"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [json.dumps(s.body["messages"][-1]["role"]) for s in backup.seen] == \
        ['"assistant"', '"user"']  # prefill refused, then the restart that repeats the answer
    line = proxy.log_line("→ rescued")
    assert "backup 400 (refuses prefill)" in line and "continued (restart, " in line, line
