"""The LLM view's text, from recorded requests and answers of each protocol:
streams assembled into what a person reads, whole answers and errors read
the same way, requests laid out as labelled conversations."""

from __future__ import annotations

import json

import pytest

from support.fakeprovider import (chat_events, chat_tool_events, response_events,
                                  response_tool_events, sse_bytes)
from switchback.protocols.assemble import (READERS, assemble, protocol_of, render_answer,
                                           render_request)
from switchback.vocabulary import Protocol

CHAT, RESPONSES = Protocol.CHAT, Protocol.RESPONSES


def sse(*events: object) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode()
                    for e in events)


def chunk(delta: dict, finish: str | None = None, **extra: object) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


# A reasoning model's chat stream: reasoning deltas, then text, a tool call
# whose name and arguments arrive in pieces, and the usage chunk.
CHAT_REASONING_TOOL = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "The user wants "}),
    chunk({"reasoning_content": "the weather."}),
    chunk({"content": "Let me check."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({}, "tool_calls"),
    {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06",
     "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 12,
                              "prompt_tokens_details": {"cached_tokens": 32},
                              "completion_tokens_details": {"reasoning_tokens": 6}}},
    "[DONE]")

# A Responses stream with a reasoning summary, text and a function call.
RESPONSES_FULL = b"".join([
    b"event: response.created\ndata: " + json.dumps({"type": "response.created", "response": {
        "id": "resp_1", "status": "in_progress", "model": "o4-mini", "output": []}}).encode()
    + b"\n\n",
    sse({"type": "response.reasoning_summary_text.delta", "delta": "Thinking about "},
        {"type": "response.reasoning_summary_text.delta", "delta": "Paris."},
        {"type": "response.output_text.delta", "delta": "Checking "},
        {"type": "response.output_text.delta", "delta": "now."},
        {"type": "response.output_item.added", "output_index": 2, "item": {
            "type": "function_call", "name": "get_weather", "call_id": "call_7",
            "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "output_index": 2,
         "delta": '{"city":"Paris"}'},
        {"type": "response.output_item.done", "output_index": 2, "item": {
            "type": "function_call", "name": "get_weather", "call_id": "call_7",
            "arguments": '{"city":"Paris"}'}},
        {"type": "response.completed", "response": {
            "id": "resp_1", "status": "completed", "model": "o4-mini-2025-04-16",
            "usage": {"input_tokens": 20, "output_tokens": 30,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 16}}}}),
])

ANSWERS = [
    pytest.param(CHAT, sse_bytes(chat_events("m", "hello from primary", usage=True)), [
        "model  m", "usage  5 in, 3 out", "",
        "── answer (assembled from 6 stream events) ──", "hello from primary", "",
        "── finish ──", "stop"], id="chat-stream"),
    pytest.param(CHAT, CHAT_REASONING_TOOL, [
        "model  gpt-4o-2024-08-06", "usage  40 in, 12 out (32 cached, 6 reasoning)", "",
        "── reasoning ──", "The user wants the weather.", "",
        "── answer (assembled from 9 stream events) ──", "Let me check.", "",
        "── tool call ──", "get_weather [call_9]", "{", '  "city": "Paris"', "}", "",
        "── finish ──", "tool_calls"], id="chat-stream-reasoning-tool"),
    pytest.param(CHAT, sse_bytes(chat_tool_events("m", "get_weather", usage=False)), [
        "model  m", "", "── tool call ──", "get_weather [call_fake]", "{",
        '  "city": "Paris"', "}", "", "── finish ──", "tool_calls"], id="chat-stream-tool"),
    pytest.param(RESPONSES, sse_bytes(response_events("m", "hello from backup")), [
        "model  m", "usage  5 in, 3 out", "",
        "── answer (assembled from 11 stream events) ──", "hello from backup", "",
        "── finish ──", "completed"], id="responses-stream"),
    pytest.param(RESPONSES, RESPONSES_FULL, [
        "model  o4-mini-2025-04-16", "usage  20 in, 30 out (16 reasoning)", "",
        "── reasoning ──", "Thinking about Paris.", "",
        "── answer (assembled from 9 stream events) ──", "Checking now.", "",
        "── tool call ──", "get_weather [call_7]", "{", '  "city": "Paris"', "}", "",
        "── finish ──", "completed"], id="responses-stream-reasoning-tool"),
    pytest.param(RESPONSES, sse_bytes(response_tool_events("m", "get_weather"))[:-2], [
        "model  m", "usage  5 in, 3 out", "", "── tool call ──", "get_weather [call_fake]",
        "{", '  "city": "Paris"', "}", "", "── finish ──", "completed"],
        id="responses-stream-without-its-last-blank-line"),
    pytest.param(RESPONSES, sse(
        {"type": "response.output_text.delta", "delta": "Once upon"},
        {"type": "response.incomplete", "response": {
            "status": "incomplete", "model": "m",
            "incomplete_details": {"reason": "max_output_tokens"}}}), [
        "model  m", "", "── answer (assembled from 2 stream events) ──", "Once upon", "",
        "── finish ──", "incomplete (max_output_tokens)"], id="responses-incomplete"),
    pytest.param(RESPONSES, sse({"type": "error", "code": "server_error",
                                 "message": "The server had an error"}), [
        "── error ──", "The server had an error (server_error)"], id="responses-error-event"),
    pytest.param(CHAT, json.dumps({
        "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Hi there.", "refusal": None}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3}}).encode(), [
        "model  gpt-4o-mini", "usage  9 in, 3 out", "", "── answer (whole) ──", "Hi there.", "",
        "── finish ──", "stop"], id="chat-whole"),
    pytest.param(RESPONSES, json.dumps({
        "model": "gpt-4.1", "status": "completed", "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Short."}]},
            {"type": "message", "role": "assistant", "content": [
                {"type": "refusal", "refusal": "I can't help with that."}]}]}).encode(), [
        "model  gpt-4.1", "", "── reasoning ──", "Short.", "", "── refusal ──",
        "I can't help with that.", "", "── finish ──", "completed"], id="responses-whole-refusal"),
    pytest.param(CHAT, json.dumps({"error": {"message": "Rate limit reached",
                                             "code": "rate_limit_exceeded"}}).encode(), [
        "── error ──", "Rate limit reached (rate_limit_exceeded)"], id="error-envelope"),
]


@pytest.mark.parametrize(("protocol", "body", "lines"), ANSWERS)
def test_an_answer_reads_as_text_reasoning_tool_calls_and_finish(protocol, body, lines):
    assembled = assemble(protocol, body)
    assert assembled is not None
    assert render_answer(assembled) == lines


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b"[1, 2]", b""])
def test_what_is_no_answer_is_left_to_the_raw_view(body):
    assert assemble(CHAT, body) is None


REQUESTS = [
    pytest.param(CHAT, {
        "model": "gpt-4o", "stream": True, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}]}, [
        "model     gpt-4o", "protocol  chat", "stream    yes", "",
        "── system ──", "Be brief.", "", "── user ──", "Weather in Paris?", "",
        "── tool call ──", "get_weather [call_1]", "{", '  "city": "Paris"', "}", "",
        "── tool result ──", "[call_1] sunny", "", "── tools offered ──", "get_weather"],
        id="chat"),
    pytest.param(RESPONSES, {
        "model": "gpt-5", "instructions": "You are a coding agent.",
        "previous_response_id": "resp_0", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Fix the bug."}]},
            {"type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
            {"type": "custom_tool_call", "name": "apply_patch", "call_id": "c2",
             "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": "Done"}],
        "tools": [{"type": "custom", "name": "apply_patch"}, {"type": "web_search"}]}, [
        "model     gpt-5", "protocol  responses", "",
        "── instructions ──", "You are a coding agent.", "", "── continues ──", "resp_0", "",
        "── user ──", "Fix the bug.", "", "── reasoning ──", "(encrypted)", "",
        "── tool call ──", "apply_patch [c2]", "*** Begin Patch", "",
        "── tool result ──", "[c2] Done", "", "── tools offered ──", "apply_patch, web_search"],
        id="responses-items"),
    pytest.param(RESPONSES, {"model": "m", "input": "hi"}, [
        "model     m", "protocol  responses", "", "── user ──", "hi"], id="responses-string"),
]


@pytest.mark.parametrize(("protocol", "body", "lines"), REQUESTS)
def test_a_request_reads_as_a_labelled_conversation(protocol, body, lines):
    assert render_request(protocol, json.dumps(body).encode()) == lines


def test_every_protocol_has_a_reader_and_an_endpoint():
    assert set(READERS) == set(Protocol)
    assert protocol_of("/v1/chat/completions") is CHAT
    assert protocol_of("/openai/v1/responses?x=1") is RESPONSES
    assert protocol_of("/v1/models") is None
