"""A committed stream a client can read to its proper end, end to end through
mitmdump with the real openai SDK: a head that only pings moves the call on,
an `event:` line alone is left out, a stream broken into garbage ends in an
error the SDK raises, an answer that lost its `[DONE]` gets one. (The same
in-process and over random chunkings: tests/engine/test_stream_integrity.py.)
"""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from support.fakeprovider import CHAT as CHAT_PATH
from support.fakeprovider import Reply, chat_events, response_events, sse
from test_engine_e2e import chat_body, chat_text, config, post

TEXT = "one two three four five"
GARBAGE = b"\x00\x01garbage"


def chat_content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture
def running(shared):
    """A proxy whose streams must show an answer within a second; the fake
    `primary` falls back to `backup`."""
    primary, backup = shared.fake("primary"), shared.fake("backup")
    return primary, backup, shared.proxy(config(primary, backup,
                                                "timeouts: {first_byte: 1s}"))


def test_e2e_a_provider_that_only_pings_times_out_and_the_backup_answers(running):
    primary, backup, proxy = running
    primary.script(Reply(raw=[b": ping\n\n"] * 80, raw_delay=0.5))  # 40 s of pings
    answer = post(proxy, primary.base_url + CHAT_PATH, chat_body())
    assert chat_text(answer.content)[0] == "hello from backup"
    assert primary.count() == 1 and backup.count() == 1
    assert "timeout" in proxy.output()


CHAT_EVENTS = [sse(event) for event in chat_events("m", TEXT, usage=False)]
RESPONSES_EVENTS = [sse(event) for event in response_events("m", TEXT)]


def test_e2e_the_sdk_reads_a_stream_with_an_event_line_alone(running):
    primary, backup, proxy = running
    with proxy.openai(primary.base_url) as sdk:
        primary.script(Reply(raw=[*CHAT_EVENTS[:3], b"event: ping\n\n", *CHAT_EVENTS[3:]]))
        chunks = list(sdk.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "x"}]))
        assert chat_content(chunks) == TEXT
        primary.script(Reply(raw=[*RESPONSES_EVENTS[:5], b"event: ping\n\n",
                                  *RESPONSES_EVENTS[5:]]))
        events = list(sdk.responses.create(model="m", input="x", stream=True))
    assert events[-1].type == "response.completed" and backup.count() == 0


def test_e2e_the_sdk_sees_the_error_of_a_stream_that_broke_into_garbage(running):
    primary, backup, proxy = running
    primary.script(Reply(raw=[*CHAT_EVENTS[:3], GARBAGE]))
    backup.script(Reply(status=503))  # asked to continue it, and cannot
    with proxy.openai(primary.base_url) as sdk:
        stream = sdk.chat.completions.create(model="m", stream=True,
                                             messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIError, match="upstream stream"):
            list(stream)


def test_e2e_an_answer_cut_after_its_finish_reason_ends_with_one_done(running):
    primary, backup, proxy = running
    primary.script(Reply(raw=CHAT_EVENTS[:-1]))  # no [DONE]
    answer = post(proxy, primary.base_url + CHAT_PATH, chat_body())
    assert chat_text(answer.content) == (TEXT, ["stop"])
    assert answer.content.endswith(b"\n\ndata: [DONE]\n\n")
    assert answer.content.count(b"[DONE]") == 1
