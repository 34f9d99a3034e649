"""The rescue's splice, pure: a client's stream cut at any event, continued
by a prefill, a matching restart or a rephrasing one. The client's whole
stream must read as one answer — one id, dense sequence numbers, one end —
whose text is the full answer; a rephrasing restart must be refused before
it gives the client anything."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.fakeprovider import (TOOL_ARGUMENTS, chat_events, chat_tool_events, response_events,
                                  response_tool_events, sse_bytes)
from switchback.protocols.assemble import assemble
from support.recorded_messages import ANSWERS, message, messages_sse, messages_stream, usage
from switchback.health.errors import read_error
from switchback.health.verdict import refuses_prefill
from switchback.protocols.spec import spec
from switchback.protocols.splice import Diverged, MessagesSplice, Splice, Spliced, flagged

from switchback.protocols.sse import SseParser
from switchback.protocols.usage import Usage
from switchback.vocabulary import Protocol, Rescue

CHAT, RESPONSES = Protocol.CHAT, Protocol.RESPONSES
TEXT = "The quick brown fox jumps over the lazy dog, and héllo 你好 🎉 again"


def recorded(protocol: Protocol, text: str = TEXT, rid: str = "resp_first") -> list:
    if protocol is CHAT:
        events = chat_events("m", text, usage=True)
        for event in events:
            if isinstance(event, dict):
                event["id"] = "chatcmpl-" + rid
        return events
    return response_events("m", text, rid=rid)


def splice_for(protocol: Protocol) -> Splice:
    made = spec(protocol).splice
    assert made is not None
    return made()


def stream(events: list) -> bytes:
    return sse_bytes(events)


def cut(protocol: Protocol, events: list, at: int) -> bytes:
    """What a client got of a stream cut after `at` events."""
    return stream(events[:at])


def continued(protocol: Protocol, delivered: bytes, continuation: list, mode: Rescue,
              extra: Usage = Usage(), tail: str = "") -> bytes:
    splice = splice_for(protocol)
    assert splice is not None
    splice.catch_up(delivered)
    splice.begin(mode, extra, tail)
    shaper = Spliced(spec(protocol).passthrough(), splice)
    out = b""
    for event in SseParser().feed(stream(continuation)):
        out += shaper.feed(event)
    return delivered + out


def words_cut(protocol: Protocol, at: int) -> tuple[bytes, str]:
    """The stream cut after `at` events, and the text the client has."""
    delivered = cut(protocol, recorded(protocol), at)
    got = assemble(protocol, delivered)
    assert got is not None
    return delivered, got.text


def check_one_answer(protocol: Protocol, whole: bytes, text: str = TEXT) -> None:
    got = assemble(protocol, whole)
    assert got is not None and got.error is None
    assert got.text == text
    events = [e for e in SseParser().feed(whole) if e.json() is not None]
    if protocol is CHAT:
        assert {e.json()["id"] for e in events} == {"chatcmpl-resp_first"}
        assert sum(1 for e in events for c in e.json()["choices"] if c.get("finish_reason")) == 1
        assert whole.endswith(b"data: [DONE]\n\n")
    else:
        numbers = [e.json()["sequence_number"] for e in events]
        assert numbers == list(range(len(numbers)))
        ends = [e.json() for e in events if e.json()["type"] == "response.completed"]
        assert len(ends) == 1 and ends[0]["response"]["id"] == "resp_first"
        assert ends[0]["response"]["output"][-1]["content"][0]["text"] == text
        done = [e.json()["text"] for e in events if e.json()["type"] == "response.output_text.done"]
        assert done == [text]
        assert [e.json()["type"] for e in events].count("response.output_item.added") == 1


def prefill_answer(protocol: Protocol, delivered_text: str) -> list:
    """What a prefill-capable provider answers: only the rest."""
    return recorded(protocol, TEXT[len(delivered_text):], rid="second")


PROTOCOLS = [CHAT, RESPONSES]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PROTOCOLS), st.data())
def test_every_cut_continued_by_prefill_or_matching_restart_is_the_whole_answer(
        protocol: Protocol, data: st.DataObject) -> None:
    events = recorded(protocol)
    last_content = max(i for i, e in enumerate(events) if "delta" in json.dumps(e)
                       and ('"content": "' in json.dumps(e) or "output_text.delta" in json.dumps(e)))
    at = data.draw(st.integers(1, last_content))
    delivered, text = words_cut(protocol, at)
    splice = splice_for(protocol)
    assert splice is not None
    splice.catch_up(delivered)
    assert splice.blocker() is None
    if text:
        assert splice.prefill() == text
        check_one_answer(protocol, continued(protocol, delivered, prefill_answer(protocol, text),
                                             Rescue.PREFILL))
    check_one_answer(protocol, continued(protocol, delivered, recorded(protocol, rid="second"),
                                         Rescue.RESTART))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_rephrased_restart_diverges_before_it_gives_the_client_anything(
        protocol: Protocol) -> None:
    delivered, text = words_cut(protocol, 6)
    assert text
    with pytest.raises(Diverged):
        continued(protocol, delivered, recorded(protocol, "A quick brown fox", rid="second"),
                  Rescue.RESTART)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_restart_shorter_than_what_was_delivered_diverges_at_its_end(
        protocol: Protocol) -> None:
    delivered, text = words_cut(protocol, 9)
    with pytest.raises(Diverged):
        continued(protocol, delivered, recorded(protocol, text[:5], rid="second"),
                  Rescue.RESTART)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_finished_answer_is_not_continued(protocol: Protocol) -> None:
    splice = splice_for(protocol)
    assert splice is not None
    splice.catch_up(stream(recorded(protocol)))
    assert splice.blocker() == "the answer had completed"


def test_several_choices_are_not_continued() -> None:
    events = recorded(CHAT)
    second = json.loads(json.dumps(events[1]))
    second["choices"][0]["index"] = 1
    splice = splice_for(CHAT)
    assert splice is not None
    splice.catch_up(stream([events[0], events[1], second]))
    assert splice.blocker() == "several choices (n > 1)"


@pytest.mark.parametrize("protocol,events", [
    (CHAT, chat_tool_events("m", "get_weather", usage=True)),
    (RESPONSES, response_tool_events("m", "get_weather")),
])
def test_a_tool_call_cut_mid_arguments_is_spliced_only_from_a_restart_that_repeats_them(
        protocol: Protocol, events: list) -> None:
    at = 4  # inside the arguments
    delivered = stream(events[:at])
    splice = splice_for(protocol)
    assert splice is not None
    splice.catch_up(delivered)
    assert splice.prefill() is None  # prefill cannot continue a tool call
    whole = continued(protocol, delivered, events, Rescue.RESTART)
    got = assemble(protocol, whole)
    assert got is not None and got.error is None
    assert [(c.name, c.arguments) for c in got.tool_calls] == [("get_weather", TOOL_ARGUMENTS)]
    assert got.finish in ("tool_calls", "completed")
    other = json.loads(json.dumps(events).replace('"ci', '"xi'))
    with pytest.raises(Diverged):
        continued(protocol, delivered, other, Rescue.RESTART)
    renamed = json.loads(json.dumps(events).replace("get_weather", "get_time"))
    with pytest.raises(Diverged):
        continued(protocol, delivered, renamed, Rescue.RESTART)


def test_a_prefill_leaves_out_the_new_attempts_reasoning() -> None:
    delivered, text = words_cut(CHAT, 5)
    answer = prefill_answer(CHAT, text)
    answer.insert(1, {**answer[1], "choices": [{"index": 0, "delta": {
        "reasoning_content": "thinking again"}, "finish_reason": None}]})
    whole = continued(CHAT, delivered, answer, Rescue.PREFILL)
    got = assemble(CHAT, whole)
    assert got is not None and got.text == TEXT and got.reasoning == ""


@pytest.mark.parametrize("protocol,fields", [(CHAT, ("prompt_tokens", "completion_tokens")),
                                             (RESPONSES, ("input_tokens", "output_tokens"))])
def test_the_client_sees_the_usage_of_both_attempts(protocol: Protocol, fields: tuple) -> None:
    delivered, text = words_cut(protocol, 5)
    whole = continued(protocol, delivered, prefill_answer(protocol, text), Rescue.PREFILL,
                      Usage(7, 4))
    got = assemble(protocol, whole)
    assert got is not None and got.usage is not None
    assert (got.usage.input, got.usage.output) == (5 + 7, 3 + 4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_clean_error_keeps_the_clients_ids(protocol: Protocol) -> None:
    delivered, _ = words_cut(protocol, 5)
    splice = splice_for(protocol)
    assert splice is not None
    splice.catch_up(delivered)
    end = splice.fail("upstream stream broke: reset")
    events = [e.json() for e in SseParser().feed(end) if e.json() is not None]
    if protocol is CHAT:
        assert events[0]["error"]["message"] == "upstream stream broke: reset"
        assert end.endswith(b"data: [DONE]\n\n")
    else:
        assert events[0]["type"] == "response.failed"
        assert events[0]["response"]["id"] == "resp_first"
        assert events[0]["sequence_number"] == 5


def test_prefilled_requests() -> None:
    prefill = spec(CHAT).prefill
    assert prefill is not None
    chat = prefill({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "He")
    assert chat["messages"][-1] == {"role": "assistant", "content": "He"}
    assert flagged(chat)["messages"][-1] == {"role": "assistant", "content": "He",
                                             "prefix": True}
    prefill = spec(RESPONSES).prefill
    assert prefill is not None
    responses = prefill({"model": "m", "input": "hi"}, "He")
    assert responses["input"] == [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "He", "annotations": []}]}]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_prefill_answered_afresh_is_spliced_like_a_restart(protocol: Protocol) -> None:
    """A provider that takes the prefilled start for a finished turn and
    answers afresh: what it repeats is dropped, never shown twice."""
    delivered, text = words_cut(protocol, 6)
    assert text
    check_one_answer(protocol, continued(protocol, delivered, recorded(protocol, rid="second"),
                                         Rescue.PREFILL))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_prefill_answer_that_stops_inside_the_delivered_text_diverges(
        protocol: Protocol) -> None:
    delivered, text = words_cut(protocol, 9)
    with pytest.raises(Diverged):
        continued(protocol, delivered, recorded(protocol, text[:4], rid="second"),
                  Rescue.PREFILL)


# ------------------------------------------------------------- Messages

def messages_read(whole: bytes) -> tuple[list[tuple[str, str]], list[str], bool]:
    """A Messages client's reading: each block's (type, text), the event
    order, and whether it ended in an error."""
    blocks: dict[int, list[str]] = {}
    kinds: list[str] = []
    for event in SseParser().feed(whole):
        payload = event.json()
        if not isinstance(payload, dict):
            continue
        kinds.append(payload["type"])
        if payload["type"] == "content_block_start":
            assert payload["index"] not in blocks, "a block started twice"
            blocks[payload["index"]] = [payload["content_block"]["type"], ""]
        elif payload["type"] == "content_block_delta":
            delta = payload["delta"]
            blocks[payload["index"]][1] += delta.get("text") or delta.get("thinking") \
                or delta.get("partial_json") or ""
    assert sorted(blocks) == list(range(len(blocks))), "block indexes must be dense"
    return [tuple(blocks[i]) for i in sorted(blocks)], kinds, "error" in kinds


def messages_continued(delivered: bytes, continuation: list, mode: Rescue) -> bytes:
    splice = MessagesSplice()
    splice.catch_up(delivered)
    splice.begin(mode, Usage(7, 4))
    return delivered + splice.take(messages_sse(continuation))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["text", "thinking-then-tools", "two-thinking-blocks"]), st.data())
def test_a_messages_stream_cut_anywhere_is_continued_whole_by_a_matching_restart(
        name: str, data: st.DataObject) -> None:
    events = messages_stream(ANSWERS[name])
    whole_blocks, whole_kinds, _ = messages_read(messages_sse(events))
    at = data.draw(st.integers(1, len(events) - 2))  # before message_delta
    delivered = messages_sse(events[:at])
    got = messages_continued(delivered, events, Rescue.RESTART)
    blocks, kinds, failed = messages_read(got)
    assert not failed and blocks == whole_blocks
    assert kinds.count("message_start") == 1 and kinds.count("message_stop") == 1
    assert kinds.count("content_block_stop") == len(blocks)
    assert kinds[-2:] == ["message_delta", "message_stop"]


def test_a_messages_text_cut_is_continued_by_prefill_without_new_thinking() -> None:
    text = ANSWERS["text"]["content"][0]["text"]
    events = messages_stream(ANSWERS["text"])
    at = 5  # message_start, ping, block start, two deltas
    delivered = messages_sse(events[:at])
    start = messages_read(delivered)[0][0][1]
    rest = message([{"type": "thinking", "thinking": "hmm", "signature": "x"},
                    {"type": "text", "text": text[len(start):]}], "end_turn", usage(30, 9))
    got = messages_continued(delivered, messages_stream(rest), Rescue.PREFILL)
    blocks, kinds, failed = messages_read(got)
    assert not failed and blocks == [("text", text)]
    delta = [e.json() for e in SseParser().feed(got) if e.json() and
             e.json()["type"] == "message_delta"][0]
    assert delta["usage"]["output_tokens"] == 9 + 4  # both attempts


def test_a_rephrased_messages_restart_diverges_and_the_error_is_the_clients() -> None:
    events = messages_stream(ANSWERS["text"])
    delivered = messages_sse(events[:5])
    other = message([{"type": "text", "text": "London is not it."}], "end_turn", usage(3, 3))
    with pytest.raises(Diverged):
        messages_continued(delivered, messages_stream(other), Rescue.RESTART)
    end = MessagesSplice().fail("upstream stream broke: reset")
    assert end.startswith(b"event: error\n") and b'"api_error"' in end


def test_a_restart_never_sends_a_delta_into_a_block_the_client_had_whole() -> None:
    """A thinking block the client had to its stop keeps its own signature
    (found by a second read: the restart's came after the stop)."""
    events = messages_stream(ANSWERS["two-thinking-blocks"])
    text_start = next(i for i, (name, data) in enumerate(events)
                      if name == "content_block_start" and data["content_block"]["type"] == "text")
    delivered = messages_sse(events[:text_start + 2])  # into the text block
    got = messages_continued(delivered, events, Rescue.RESTART)
    stopped: set[int] = set()
    for event in SseParser().feed(got):
        payload = event.json()
        if isinstance(payload, dict) and payload["type"] == "content_block_stop":
            stopped.add(payload["index"])
        if isinstance(payload, dict) and payload["type"] == "content_block_delta":
            assert payload["index"] not in stopped, payload


def test_a_prefill_sent_without_trailing_whitespace_is_continued_without_doubling_it() -> None:
    """Anthropic refuses a prefill that ends in whitespace, so it goes without;
    the model's continuation then starts with the whitespace the client has."""
    delivered, text = words_cut(CHAT, 5)
    assert text.endswith(" ")
    rest = " " + TEXT[len(text):]  # the continuation after "…fox" starts with its space
    check_one_answer(CHAT, continued(CHAT, delivered, recorded(CHAT, rest, rid="second"),
                                     Rescue.PREFILL, tail=" "))


@pytest.mark.parametrize("message,refused", [
    ("This model does not support assistant message prefill. The conversation must end "
     "with a user message.", True),
    ("messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
     "`text`. When `thinking` is enabled, a final `assistant` message must start with a "
     "thinking block.", True),
    ("Expected last role User or Tool (or Assistant with prefix True) for serving but got "
     "assistant", True),
    ("messages: final assistant content cannot end with trailing whitespace", False),
    ("max_tokens: must be at most 8192", False),
])
def test_refusals_of_a_prefill_are_told_from_other_client_errors(message: str,
                                                                 refused: bool) -> None:
    body = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                  "message": message}}).encode()
    assert refuses_prefill(400, read_error(body)) is refused


def test_a_messages_prefill_with_thinking_on_is_not_made() -> None:
    """Anthropic wants the final assistant turn to open with its thinking: a
    started text cannot be prefilled then, and the rescue restarts."""
    prefill = spec(Protocol.MESSAGES).prefill
    assert prefill is not None
    body = {"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    assert prefill(body, "He")["messages"][-1] == {"role": "assistant", "content": "He"}
    assert prefill({**body, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "He") \
        is None
