"""Whole answers and errors between the Messages API and chat / Responses:
every stop reason, usage field and block kind, on recorded-style answers,
each checked against the client SDK's own types."""

from __future__ import annotations

import json

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from support.recorded_messages import (ANSWERS, CHAT_ANSWERS, CREATED, RESPONSES_ANSWERS,
                                       SIGNATURE, TIME_INPUT, WEATHER_INPUT)
from switchback.protocols.messages_errors import (messages_to_openai_error,
                                                  openai_to_messages_error,
                                                  to_messages_error_body, to_openai_error_body)
from switchback.protocols.messages_response import (chat_to_messages_response,
                                                    messages_to_chat_response,
                                                    messages_to_responses_response,
                                                    responses_to_messages_response)

RID = "resp_5e1f"
CHAT_REQUEST = {"model": "claude-sonnet-4-5", "messages": []}
RESPONSES_REQUEST = {"model": "claude-sonnet-4-5", "input": "hi", "store": False}


# ---------------------------------------------------------------- Messages → chat


def test_thinking_text_and_parallel_tools_as_a_chat_completion() -> None:
    body = messages_to_chat_response(ANSWERS["thinking-then-tools"], CHAT_REQUEST,
                                     created=CREATED)
    ChatCompletion.model_validate(body)
    assert body == {
        "id": "chatcmpl-01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion",
        "created": CREATED, "model": "claude-sonnet-4-5-20250929",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check both.",
            "reasoning_content": "The user wants weather and time. I'll call both.",
            "tool_calls": [
                {"id": "call_01A09q90qw90lq917835lq9", "type": "function",
                 "function": {"name": "get_weather", "arguments": json.dumps(WEATHER_INPUT)}},
                {"id": "call_01BbTyGQKn2RTmTtkLzSM4jV", "type": "function",
                 "function": {"name": "get_time", "arguments": json.dumps(TIME_INPUT)}}]}}],
        "usage": {"prompt_tokens": 312 + 2048 + 512, "completion_tokens": 142,
                  "total_tokens": 3014,
                  "prompt_tokens_details": {"cached_tokens": 2048, "cache_write_tokens": 512},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }
    assert SIGNATURE not in json.dumps(body)


@pytest.mark.parametrize("answer, finish", [
    ("text", "stop"), ("stop-sequence", "stop"), ("pause-turn", "stop"),
    ("max-tokens", "length"), ("refusal", "content_filter"),
    ("empty-input-tool", "tool_calls"), ("thinking-then-tools", "tool_calls")])
def test_stop_reasons_as_finish_reasons(answer: str, finish: str) -> None:
    body = messages_to_chat_response(ANSWERS[answer], CHAT_REQUEST)
    assert body["choices"][0]["finish_reason"] == finish


def test_a_tool_call_cut_by_the_limit_ends_as_length() -> None:
    answer = {**ANSWERS["empty-input-tool"], "stop_reason": "max_tokens"}
    assert messages_to_chat_response(answer, CHAT_REQUEST)["choices"][0]["finish_reason"] \
        == "length"


# ---------------------------------------------------------------- Messages → Responses


@pytest.mark.parametrize("answer, status, incomplete", [
    ("text", "completed", None), ("stop-sequence", "completed", None),
    ("pause-turn", "completed", None), ("thinking-then-tools", "completed", None),
    ("max-tokens", "incomplete", {"reason": "max_output_tokens"}),
    ("refusal", "incomplete", {"reason": "content_filter"})])
def test_stop_reasons_as_responses_status(answer: str, status: str,
                                          incomplete: dict | None) -> None:
    body = messages_to_responses_response(ANSWERS[answer], RESPONSES_REQUEST, RID)
    Response.model_validate(body)
    assert (body["status"], body["incomplete_details"]) == (status, incomplete)
    assert body["id"] == RID and body["store"] is False


def test_thinking_and_tools_as_responses_output() -> None:
    body = messages_to_responses_response(ANSWERS["thinking-then-tools"], RESPONSES_REQUEST,
                                          RID)
    assert [(i["type"], i.get("call_id")) for i in body["output"]] == [
        ("reasoning", None), ("message", None),
        ("function_call", "call_01A09q90qw90lq917835lq9"),
        ("function_call", "call_01BbTyGQKn2RTmTtkLzSM4jV")]
    assert body["output"][0]["summary"][0]["text"].startswith("The user wants")
    assert "encrypted_content" not in body["output"][0]
    assert body["usage"] == {"input_tokens": 2872, "output_tokens": 142, "total_tokens": 3014,
                             "input_tokens_details": {"cached_tokens": 2048,
                                                      "cache_write_tokens": 512},
                             "output_tokens_details": {"reasoning_tokens": 0}}


def test_a_responses_clients_custom_tool_comes_back_as_a_custom_call() -> None:
    """apply_patch went to Claude as a tool with one `input` string; its call
    comes back to Codex as the freeform call it declared."""
    request = {**RESPONSES_REQUEST, "tools": [{"type": "custom", "name": "apply_patch"}]}
    answer = {**ANSWERS["empty-input-tool"], "content": [
        {"type": "tool_use", "id": "toolu_01P", "name": "apply_patch",
         "input": {"input": "*** Begin Patch\n*** End Patch"}}]}
    body = messages_to_responses_response(answer, request, RID)
    assert body["output"] == [{"id": "fc_5e1f_0", "type": "custom_tool_call",
                               "call_id": "call_01P", "name": "apply_patch",
                               "input": "*** Begin Patch\n*** End Patch"}]


# ---------------------------------------------------------------- chat → Messages


def test_reasoning_and_parallel_calls_as_a_messages_answer() -> None:
    body = chat_to_messages_response(CHAT_ANSWERS["reasoning-and-tools"], {"model": "m"})
    Message.model_validate(body)
    assert body == {
        "id": "msg_B9MBs8CjcvOU2jLn4n570S5qMJKcT", "type": "message", "role": "assistant",
        "model": "gpt-4.1-2025-04-14", "stop_reason": "tool_use", "stop_sequence": None,
        "content": [
            {"type": "thinking", "thinking": "Two lookups are needed.", "signature": ""},
            {"type": "tool_use", "id": "toolu_DdmNJ6z4YoIarJgdUJcz1sHa", "name": "get_weather",
             "input": WEATHER_INPUT},
            {"type": "tool_use", "id": "toolu_Q8SJbwhmKcE8pBCN3Oo6WEzU", "name": "get_time",
             "input": TIME_INPUT}],
        "usage": {"input_tokens": 1250 - 1024, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 1024, "output_tokens": 96},
    }


@pytest.mark.parametrize("answer, stop", [
    ("text", "end_turn"), ("reasoning-and-tools", "tool_use"), ("length", "max_tokens"),
    ("content-filter", "refusal"), ("refusal", "refusal"), ("odd-call-id", "tool_use")])
def test_finish_reasons_as_stop_reasons(answer: str, stop: str) -> None:
    body = chat_to_messages_response(CHAT_ANSWERS[answer], {"model": "m"})
    Message.model_validate(body)
    assert body["stop_reason"] == stop


def test_a_refusal_is_text_ending_in_refusal_and_no_usage_is_zeros() -> None:
    body = chat_to_messages_response(CHAT_ANSWERS["refusal"], {"model": "m"})
    assert body["content"] == [{"type": "text", "text": "I can't help with that."}]
    odd = chat_to_messages_response(CHAT_ANSWERS["odd-call-id"], {"model": "m"})
    assert odd["usage"] == {"input_tokens": 0, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0, "output_tokens": 0}


# ---------------------------------------------------------------- Responses → Messages


@pytest.mark.parametrize("answer, stop", [
    ("text", "end_turn"), ("reasoning-and-tools", "tool_use"), ("incomplete", "max_tokens")])
def test_responses_status_as_stop_reasons(answer: str, stop: str) -> None:
    body = responses_to_messages_response(RESPONSES_ANSWERS[answer], {"model": "m"})
    Message.model_validate(body)
    assert body["stop_reason"] == stop


def test_responses_reasoning_and_calls_as_a_messages_answer() -> None:
    body = responses_to_messages_response(RESPONSES_ANSWERS["reasoning-and-tools"],
                                          {"model": "m"})
    assert body["id"] == "msg_68af4030592c81938ec0a5fbab4a3e9f"
    assert [b["type"] for b in body["content"]] == ["thinking", "tool_use", "tool_use"]
    assert body["content"][1]["id"] == "toolu_xZP3bEJpCz6m9kPhGJSUNH1Q"
    assert "gAAAAABoSealed" not in json.dumps(body)
    assert body["usage"] == {"input_tokens": 212, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 768, "output_tokens": 210}


def test_a_responses_content_filter_is_a_refusal() -> None:
    response = {**RESPONSES_ANSWERS["text"], "status": "incomplete",
                "incomplete_details": {"reason": "content_filter"}}
    assert responses_to_messages_response(response, {"model": "m"})["stop_reason"] == "refusal"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("status, openai_error, kind", [
    (400, {"message": "Invalid 'messages'", "type": "invalid_request_error",
           "code": None}, "invalid_request_error"),
    (401, {"message": "Incorrect API key provided", "type": "invalid_request_error",
           "code": "invalid_api_key"}, "authentication_error"),
    (403, {"message": "Country not supported", "type": "request_forbidden",
           "code": "unsupported_country_region_territory"}, "permission_error"),
    (404, {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error",
           "code": "model_not_found"}, "not_found_error"),
    (429, {"message": "Rate limit reached", "type": "tokens",
           "code": "rate_limit_exceeded"}, "rate_limit_error"),
    (500, {"message": "The server had an error", "type": "server_error", "code": None},
     "api_error"),
    (503, {"message": "The engine is currently overloaded", "type": "server_error",
           "code": None}, "overloaded_error"),
])
def test_openai_errors_in_the_messages_envelope(status: int, openai_error: dict,
                                                kind: str) -> None:
    body = json.loads(to_messages_error_body(json.dumps({"error": openai_error}).encode(),
                                             status))
    assert body == {"type": "error", "error": {"type": kind,
                                               "message": openai_error["message"]}}


def test_a_too_long_prompt_reads_as_anthropics_words() -> None:
    error = openai_to_messages_error({"error": {
        "message": "This model's maximum context length is 128000 tokens.",
        "type": "invalid_request_error", "code": "context_length_exceeded"}}, 400)
    assert error["error"]["message"].startswith("prompt is too long: ")


@pytest.mark.parametrize("kind, openai_type, code", [
    ("invalid_request_error", "invalid_request_error", None),
    ("authentication_error", "invalid_request_error", "invalid_api_key"),
    ("permission_error", "invalid_request_error", "permission_denied"),
    ("not_found_error", "invalid_request_error", "not_found"),
    ("request_too_large", "invalid_request_error", "request_too_large"),
    ("rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
    ("api_error", "server_error", None),
    ("overloaded_error", "server_error", "overloaded"),
])
def test_messages_errors_in_the_openai_envelope(kind: str, openai_type: str,
                                                code: str | None) -> None:
    body = json.loads(to_openai_error_body(json.dumps({
        "type": "error", "error": {"type": kind, "message": "words"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}).encode()))
    assert body == {"error": {"message": "words", "type": openai_type, "param": None,
                              "code": code}}


def test_anthropics_too_long_prompt_gets_openais_code() -> None:
    error = messages_to_openai_error({"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 208310 tokens > 200000"}})
    assert error["error"]["code"] == "context_length_exceeded"


def test_an_error_body_that_is_not_json_becomes_the_message() -> None:
    body = json.loads(to_messages_error_body(b"<html>502 Bad Gateway</html>", 502))
    assert body == {"type": "error", "error": {"type": "api_error",
                                               "message": "<html>502 Bad Gateway</html>"}}


# ---------------------------------------------------------------- named for the trail


def test_what_a_messages_answer_loses_is_named() -> None:
    from switchback.protocols.messages_response import messages_answer_dropped
    assert messages_answer_dropped(ANSWERS["thinking-then-tools"]) == ("thinking signature",)
    assert messages_answer_dropped(ANSWERS["text"]) == ()
    answer = {**ANSWERS["text"], "content": [
        {"type": "redacted_thinking", "data": "EmwKAhgB"},
        {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {}},
        {"type": "text", "text": "Sunny.", "citations": [{"type": "char_location"}]}]}
    assert messages_answer_dropped(answer) == ("block:redacted_thinking",
                                               "block:server_tool_use", "citations")
    body = messages_to_chat_response(answer, CHAT_REQUEST)
    assert body["choices"][0]["message"]["content"] == "Sunny."
    assert "EmwKAhgB" not in json.dumps(body)


def test_what_a_response_loses_is_named() -> None:
    from switchback.protocols.messages_response import responses_answer_dropped
    response = {**RESPONSES_ANSWERS["reasoning-and-tools"]}
    response["output"] = [*response["output"], {"type": "web_search_call", "id": "ws_1",
                                                "status": "completed"}]
    assert responses_answer_dropped(response) == ("reasoning.encrypted_content",
                                                  "item:web_search_call")
    assert responses_answer_dropped(RESPONSES_ANSWERS["text"]) == ()
