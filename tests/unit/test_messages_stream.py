"""Streams between the Messages API and OpenAI's chat and Responses, in the
four directions Switchback translates (Messages → chat, Messages →
Responses, chat → Messages, Responses → Messages).

Recorded-style upstream streams are fed through the shapers; the client's
bytes are then read by the official SDK of the client's protocol (which
raises on anything it cannot parse), and the answer its accumulator builds
must equal the whole-answer translation of the upstream answer its own SDK
assembles. Hypothesis cuts the upstream bytes anywhere: the output is the
same however they arrive, and a stream cut before its finish ends in the
client protocol's error form, never with a finish the provider did not send.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.recorded_messages import (ANSWERS, CHAT_ANSWERS, OVERLOADED, RESPONSES_ANSWERS,
                                       chat_sse, chat_stream, messages_sse, messages_stream,
                                       responses_sse, responses_stream, sse_events)
from support.sdk_streams import StreamFailed, anthropic_final, chat_final, responses_final
from switchback.protocols.messages_response import (chat_to_messages_response,
                                                    messages_to_chat_response,
                                                    messages_to_responses_response,
                                                    responses_to_messages_response)
from switchback.protocols.messages_stream import (ChatToMessagesStream, MessagesToChatStream,
                                                  messages_to_responses_stream,
                                                  responses_to_messages_stream)
from switchback.protocols.sse import SseParser

RID = "resp_0123abcd"
CHAT_REQUEST = {"model": "claude-sonnet-4-5", "stream": True,
                "stream_options": {"include_usage": True}}
RESPONSES_REQUEST = {"model": "claude-sonnet-4-5", "stream": True, "input": "hi"}
MESSAGES_REQUEST = {"model": "gpt-4.1", "stream": True, "max_tokens": 1024}


def run(shaper: Any, upstream: bytes, pieces: list[bytes] | None = None,
        cut: bool = False) -> bytes:
    """Feed the upstream bytes (whole or in pieces); then the stream ends —
    or breaks (`cut`)."""
    parser, out = SseParser(), b""
    for piece in pieces if pieces is not None else [upstream]:
        for event in parser.feed(piece):
            out += shaper.feed(event)
    if cut:
        return out + shaper.fail("connection reset by upstream")
    if (last := parser.close()) is not None:
        out += shaper.feed(last)
    return out + shaper.finish()


# ------------------------------------------------------ what a client reads


def _args(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str) else text


def messages_view(message: dict) -> dict:
    content = message["content"]
    return {"id": message["id"],
            "text": "".join(b["text"] for b in content if b["type"] == "text"),
            "thinking": "".join(b["thinking"] for b in content if b["type"] == "thinking"),
            "calls": [(b["id"], b["name"], b["input"]) for b in content
                      if b["type"] == "tool_use"],
            "stop": message["stop_reason"],
            "usage": {k: message["usage"][k] or 0 for k in (
                "input_tokens", "output_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens")}}


def chat_view(completion: dict) -> dict:
    choice = completion["choices"][0]
    message = choice["message"]
    usage = completion.get("usage") or {}
    return {"id": completion["id"], "text": message.get("content") or "",
            "reasoning": message.get("reasoning_content") or "",
            "calls": [(c["id"], c["function"]["name"], _args(c["function"]["arguments"]))
                      for c in message.get("tool_calls") or []],
            "finish": choice["finish_reason"],
            "usage": (usage.get("prompt_tokens"), usage.get("completion_tokens"),
                      (usage.get("prompt_tokens_details") or {}).get("cached_tokens"))}


def responses_view(response: dict) -> dict:
    output = response["output"]
    usage = response.get("usage") or {}
    return {"id": response["id"],
            "text": "".join(p["text"] for i in output if i["type"] == "message"
                            for p in i["content"] if p["type"] == "output_text"),
            "reasoning": "".join(s["text"] for i in output if i["type"] == "reasoning"
                                 for s in i["summary"]),
            "items": [(i["type"], i["id"]) for i in output],
            "calls": [(i["call_id"], i["name"], _args(i["arguments"])) for i in output
                      if i["type"] == "function_call"],
            "status": response["status"], "incomplete": response.get("incomplete_details"),
            "usage": (usage.get("input_tokens"), usage.get("output_tokens"),
                      (usage.get("input_tokens_details") or {}).get("cached_tokens"))}


def _without_nones(value: Any) -> Any:
    """An SDK model dump without the fields it filled with None."""
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nones(v) for v in value]
    return value


# ------------------------------------------------------ the four directions


class Direction:
    """One translated pair: how to make its shaper, read each side, and
    translate a whole upstream answer."""

    def __init__(self, name: str, make: Callable[[], Any], upstreams: dict[str, bytes],
                 read_upstream: Callable[[bytes], dict], read_client: Callable[[bytes], dict],
                 translate: Callable[[dict], dict], view: Callable[[dict], dict],
                 sdk_error: type[Exception]) -> None:
        self.name, self.make, self.upstreams = name, make, upstreams
        self.read_upstream, self.read_client = read_upstream, read_client
        self.translate, self.view, self.sdk_error = translate, view, sdk_error

    def __repr__(self) -> str:
        return self.name


MESSAGES_STREAMS = {name: messages_sse(messages_stream(a)) for name, a in ANSWERS.items()}
CHAT_STREAMS = {name: chat_sse(chat_stream(a)) for name, a in CHAT_ANSWERS.items()}
CHAT_STREAMS["reasoning-and-tools-interleaved"] = chat_sse(
    chat_stream(CHAT_ANSWERS["reasoning-and-tools"], interleave=True))
RESPONSES_STREAMS = {name: responses_sse(responses_stream(a))
                     for name, a in RESPONSES_ANSWERS.items()}

DIRECTIONS = [
    Direction("messages-to-chat", lambda: MessagesToChatStream(CHAT_REQUEST), MESSAGES_STREAMS,
              anthropic_final, chat_final,
              lambda whole: messages_to_chat_response(whole, CHAT_REQUEST), chat_view,
              openai.APIError),
    Direction("messages-to-responses",
              lambda: messages_to_responses_stream(RESPONSES_REQUEST, RID), MESSAGES_STREAMS,
              anthropic_final, responses_final,
              lambda whole: messages_to_responses_response(whole, RESPONSES_REQUEST, RID),
              responses_view, StreamFailed),
    Direction("chat-to-messages", lambda: ChatToMessagesStream(MESSAGES_REQUEST), CHAT_STREAMS,
              chat_final, anthropic_final,
              lambda whole: chat_to_messages_response(whole, MESSAGES_REQUEST), messages_view,
              anthropic.APIError),
    Direction("responses-to-messages", lambda: responses_to_messages_stream(MESSAGES_REQUEST),
              RESPONSES_STREAMS, responses_final, anthropic_final,
              lambda whole: responses_to_messages_response(whole, MESSAGES_REQUEST),
              messages_view, anthropic.APIError),
]
CASES = [(d, name) for d in DIRECTIONS for name in d.upstreams]


@pytest.mark.parametrize("direction, name", CASES, ids=[f"{d.name}:{n}" for d, n in CASES])
def test_the_sdk_assembles_what_the_whole_answer_translates_to(direction: Direction,
                                                               name: str) -> None:
    """The client's SDK reads the translated stream without raising, and its
    answer is the translation of the upstream SDK's answer."""
    upstream = direction.upstreams[name]
    client = direction.read_client(run(direction.make(), upstream))
    whole = direction.translate(_without_nones(direction.read_upstream(upstream)))
    assert direction.view(client) == direction.view(whole)


# ------------------------------------------------------ tables: what reaches the client


def names(out: bytes) -> list[str]:
    return [name or ("[DONE]" if data == "[DONE]" else "chunk") for name, data in sse_events(out)]


def test_messages_stream_to_chat_chunks() -> None:
    out = run(MessagesToChatStream(CHAT_REQUEST), MESSAGES_STREAMS["thinking-then-tools"])
    chunks = [data for _, data in sse_events(out)]
    assert chunks[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning_content", "") for d in deltas) == \
        ANSWERS["thinking-then-tools"]["content"][0]["thinking"]
    heads = [t for d in deltas for t in d.get("tool_calls", []) if "id" in t]
    assert [(t["index"], t["id"], t["function"]["name"]) for t in heads] == [
        (0, "call_01A09q90qw90lq917835lq9", "get_weather"),
        (1, "call_01BbTyGQKn2RTmTtkLzSM4jV", "get_time")]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls"]
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"] == {
        "prompt_tokens": 312 + 2048 + 512, "completion_tokens": 142, "total_tokens": 3014,
        "prompt_tokens_details": {"cached_tokens": 2048, "cache_write_tokens": 512},
        "completion_tokens_details": {"reasoning_tokens": 0}}
    assert b"signature" not in out and SIGNATURE_BYTES not in out


SIGNATURE_BYTES = ANSWERS["thinking-then-tools"]["content"][0]["signature"].encode()


def test_messages_ping_is_a_comment_and_usage_only_when_asked() -> None:
    out = run(MessagesToChatStream({"model": "m"}), MESSAGES_STREAMS["text"])
    assert b"\n\n: ping\n\n" in out
    assert all(c == "[DONE]" or c["choices"] for _, c in sse_events(out))


@pytest.mark.parametrize("name, finish", [
    ("text", "stop"), ("max-tokens", "length"), ("stop-sequence", "stop"),
    ("refusal", "content_filter"), ("pause-turn", "stop"), ("empty-input-tool", "tool_calls")])
def test_messages_stop_reasons_as_chat_finish_reasons(name: str, finish: str) -> None:
    chunks = [c for _, c in sse_events(run(MessagesToChatStream(CHAT_REQUEST),
                                           MESSAGES_STREAMS[name])) if c != "[DONE]"]
    assert [c["choices"][0]["finish_reason"] for c in chunks
            if c["choices"] and c["choices"][0]["finish_reason"]] == [finish]


def test_a_tool_without_input_gets_empty_object_arguments() -> None:
    out = run(MessagesToChatStream(CHAT_REQUEST), MESSAGES_STREAMS["empty-input-tool"])
    completion = chat_final(out)
    assert completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize("name, status, incomplete", [
    ("text", "completed", None), ("thinking-then-tools", "completed", None),
    ("max-tokens", "incomplete", {"reason": "max_output_tokens"}),
    ("refusal", "incomplete", {"reason": "content_filter"}),
    ("pause-turn", "completed", None)])
def test_messages_stream_to_responses_events(name: str, status: str,
                                             incomplete: dict | None) -> None:
    events = [data for _, data in sse_events(run(
        messages_to_responses_stream(RESPONSES_REQUEST, RID), MESSAGES_STREAMS[name]))]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["response"]["status"] == status
    assert events[-1]["response"]["incomplete_details"] == incomplete
    assert all(e["response"]["id"] == RID for e in events if "response" in e)


def test_chat_stream_to_messages_events_in_anthropics_order() -> None:
    out = run(ChatToMessagesStream(MESSAGES_REQUEST),
              CHAT_STREAMS["reasoning-and-tools-interleaved"])
    assert names(out) == [
        "message_start",
        "content_block_start", *["content_block_delta"] * 4, "content_block_stop",
        "content_block_start", *["content_block_delta"] * 6, "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",  # held, then whole
        "message_delta", "message_stop"]
    events = [data for _, data in sse_events(out)]
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "tool_use", "id": "toolu_DdmNJ6z4YoIarJgdUJcz1sHa", "name": "get_weather",
         "input": {}},
        {"type": "tool_use", "id": "toolu_Q8SJbwhmKcE8pBCN3Oo6WEzU", "name": "get_time",
         "input": {}}]
    assert [e["index"] for e in events if "index" in e] == [0] * 6 + [1] * 8 + [2] * 3
    assert events[-2] == {"type": "message_delta",
                          "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"input_tokens": 226, "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": 1024, "output_tokens": 96}}


@pytest.mark.parametrize("name, stop", [
    ("text", "end_turn"), ("reasoning-and-tools", "tool_use"), ("length", "max_tokens"),
    ("content-filter", "refusal"), ("refusal", "refusal"), ("odd-call-id", "tool_use")])
def test_chat_finish_reasons_as_messages_stop_reasons(name: str, stop: str) -> None:
    message = anthropic_final(run(ChatToMessagesStream(MESSAGES_REQUEST), CHAT_STREAMS[name]))
    assert message["stop_reason"] == stop


def test_a_call_that_ends_normally_still_ends_as_a_tool_call() -> None:
    """Some servers finish a tool call with `stop`; Claude Code must see `tool_use`."""
    chunks = chat_stream(CHAT_ANSWERS["odd-call-id"])
    for chunk in chunks:
        if isinstance(chunk, dict) and chunk["choices"] and chunk["choices"][0]["finish_reason"]:
            chunk["choices"][0]["finish_reason"] = "stop"
    message = anthropic_final(run(ChatToMessagesStream(MESSAGES_REQUEST), chat_sse(chunks)))
    assert message["stop_reason"] == "tool_use"
    assert message["content"][0]["id"] == "toolu_sbo-ZnVuY3Rpb25zLmdldF93ZWF0aGVyOjA"


def test_responses_stream_to_messages_keeps_reasoning_and_drops_sealed_content() -> None:
    out = run(responses_to_messages_stream(MESSAGES_REQUEST),
              RESPONSES_STREAMS["reasoning-and-tools"])
    assert b"gAAAAABoSealed" not in out
    message = anthropic_final(out)
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use", "tool_use"]
    assert message["usage"]["cache_read_input_tokens"] == 768
    assert message["usage"]["input_tokens"] == 980 - 768


def test_responses_incomplete_is_max_tokens() -> None:
    message = anthropic_final(run(responses_to_messages_stream(MESSAGES_REQUEST),
                                  RESPONSES_STREAMS["incomplete"]))
    assert message["stop_reason"] == "max_tokens"


# ------------------------------------------------------ errors in the client's form


def test_messages_error_event_reaches_a_chat_client_as_an_error_chunk() -> None:
    events = messages_stream(ANSWERS["text"])[:5] + [OVERLOADED]
    out = run(MessagesToChatStream(CHAT_REQUEST), messages_sse(events))
    *_, error, done = sse_events(out)
    assert error[1] == {"error": {"message": "Overloaded", "type": "server_error",
                                  "param": None, "code": "overloaded"}}
    assert done[1] == "[DONE]"
    with pytest.raises(openai.APIError, match="Overloaded"):
        chat_final(out)


def test_messages_error_event_reaches_a_responses_client_as_response_failed() -> None:
    events = messages_stream(ANSWERS["text"])[:5] + [OVERLOADED]
    out = run(messages_to_responses_stream(RESPONSES_REQUEST, RID), messages_sse(events))
    last = sse_events(out)[-1][1]
    assert last["type"] == "response.failed"
    assert last["response"]["error"] == {"code": "overloaded", "message": "Overloaded"}


def test_chat_error_chunk_reaches_a_messages_client_as_an_error_event() -> None:
    chunks = chat_stream(CHAT_ANSWERS["text"])[:3] + [
        {"error": {"message": "Rate limit reached for gpt-4.1", "type": "tokens",
                   "code": "rate_limit_exceeded", "param": None}}]
    out = run(ChatToMessagesStream(MESSAGES_REQUEST), chat_sse(chunks))
    assert sse_events(out)[-1] == ("error", {"type": "error", "error": {
        "type": "rate_limit_error", "message": "Rate limit reached for gpt-4.1"}})
    with pytest.raises(anthropic.APIError):
        anthropic_final(out)


def test_responses_failed_reaches_a_messages_client_as_an_error_event() -> None:
    events = responses_stream(RESPONSES_ANSWERS["text"])[:4]
    events.append({"type": "response.failed", "sequence_number": 4, "response": {
        **RESPONSES_ANSWERS["text"], "status": "failed",
        "error": {"code": "context_length_exceeded",
                  "message": "Your input exceeds the context window of this model."}}})
    out = run(responses_to_messages_stream(MESSAGES_REQUEST), responses_sse(events))
    name, data = sse_events(out)[-1]
    assert name == "error" and data["error"]["message"].startswith("prompt is too long")


# ------------------------------------------------------ any cut, any chunking

KEEPALIVES = [b": keepalive\n\n", b'event: ping\ndata: {"type": "ping"}\n\n']


@st.composite
def upstream_bytes(draw: st.DrawFn, direction: Direction) -> bytes:
    """A recorded stream, with its line ends and keep-alives between events."""
    stream = direction.upstreams[draw(st.sampled_from(sorted(direction.upstreams)))]
    blocks = [e.raw for e in SseParser().feed(stream)]
    for _ in range(draw(st.integers(0, 2))):
        keepalive = draw(st.sampled_from(KEEPALIVES))
        if direction.name.startswith("messages") or keepalive.startswith(b":"):
            blocks.insert(draw(st.integers(1, len(blocks))), keepalive)
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    return b"".join(blocks).replace(b"\n", eol)


def pieces_of(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)]) if data[a:b]]


chunkings = st.one_of(st.lists(st.integers(0, 20_000), max_size=50),
                      st.just(list(range(1, 20_000))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), direction=st.sampled_from(DIRECTIONS), points=chunkings)
def test_any_chunking_gives_the_same_stream_and_answer(data: st.DataObject,
                                                       direction: Direction,
                                                       points: list[int]) -> None:
    upstream = data.draw(upstream_bytes(direction))
    whole = run(direction.make(), upstream)
    assert run(direction.make(), upstream, pieces_of(upstream, points)) == whole
    expected = direction.translate(_without_nones(direction.read_upstream(upstream)))
    assert direction.view(direction.read_client(whole)) == direction.view(expected)


FINISHED = {  # the upstream event after which the provider has said how the answer ends
    "messages": lambda name, data: name == "message_delta",
    "chat": lambda name, data: isinstance(data, dict) and any(
        c.get("finish_reason") for c in data.get("choices") or []),
    "responses": lambda name, data: name in ("response.completed", "response.incomplete"),
}


def _client_ended_badly(direction: Direction, out: bytes) -> bool:
    """The client stream ends in its protocol's error form, with no finish in it."""
    events = sse_events(out)
    if direction.name.endswith("to-messages"):
        return events[-1][0] == "error" and not any(
            n in ("message_delta", "message_stop") for n, _ in events)
    if direction.name.endswith("to-chat"):
        return events[-1][1] == "[DONE]" and "error" in events[-2][1] and not any(
            isinstance(d, dict) and FINISHED["chat"](n, d) for n, d in events)
    return events[-1][0] == "response.failed" and not any(
        n in ("response.completed", "response.incomplete") for n, _ in events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), direction=st.sampled_from(DIRECTIONS), points=chunkings)
def test_a_cut_stream_ends_in_the_clients_error_form_never_a_made_up_finish(
        data: st.DataObject, direction: Direction, points: list[int]) -> None:
    upstream = data.draw(upstream_bytes(direction))
    at = data.draw(st.integers(0, len(upstream) - 1), "cut at")
    head = upstream[:at]
    out = run(direction.make(), head, pieces_of(head, points), cut=True)
    upstream_kind = direction.name.split("-to-")[0]
    finished = any(FINISHED[upstream_kind](name, payload)
                   for name, payload in sse_events(head) if payload is not None)
    if finished:  # the provider said how it ends: the client gets that ending
        assert not _client_ended_badly(direction, out)
        direction.read_client(out)
    else:
        assert _client_ended_badly(direction, out), out[-400:]
        with pytest.raises(direction.sdk_error):
            direction.read_client(out)


# ------------------------------------------------------ named for the trail


@pytest.mark.parametrize("make, upstream, dropped", [
    (lambda: MessagesToChatStream(CHAT_REQUEST), MESSAGES_STREAMS["thinking-then-tools"],
     ("thinking signature",)),
    (lambda: messages_to_responses_stream(RESPONSES_REQUEST, RID),
     MESSAGES_STREAMS["thinking-then-tools"], ("thinking signature",)),
    (lambda: MessagesToChatStream(CHAT_REQUEST), MESSAGES_STREAMS["text"], ()),
    (lambda: MessagesToChatStream(CHAT_REQUEST), MESSAGES_STREAMS["two-thinking-blocks"],
     ("thinking signature", "block:redacted_thinking")),
    (lambda: responses_to_messages_stream(MESSAGES_REQUEST),
     RESPONSES_STREAMS["reasoning-and-tools"], ("reasoning.encrypted_content",)),
    (lambda: ChatToMessagesStream(MESSAGES_REQUEST), CHAT_STREAMS["reasoning-and-tools"], ()),
], ids=["signature-to-chat", "signature-to-responses", "nothing", "redacted", "sealed-reasoning",
        "chat-loses-nothing"])
def test_what_the_client_never_sees_is_named(make: Callable[[], Any], upstream: bytes,
                                             dropped: tuple) -> None:
    shaper = make()
    run(shaper, upstream)
    assert shaper.dropped == dropped


def test_server_tool_blocks_and_citations_are_named() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {**ANSWERS["text"], "content": [],
                                                                "stop_reason": None}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search",
            "input": {}}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
            "type": "citations_delta", "citation": {"type": "web_search_result_location",
                                                    "url": "https://example.com"}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": "Sunny."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"})]
    shaper = MessagesToChatStream(CHAT_REQUEST)
    completion = chat_final(run(shaper, messages_sse(events)))
    assert completion["choices"][0]["message"]["content"] == "Sunny."
    assert "tool_calls" not in completion["choices"][0]["message"] or \
        not completion["choices"][0]["message"]["tool_calls"]
    assert shaper.dropped == ("block:server_tool_use", "citations")
