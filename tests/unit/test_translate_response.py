"""Non-streaming answers both ways, checked value by value and against the
openai SDK's response models."""

from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from switchback.vocabulary import Protocol

CHAT, RESPONSES = Protocol.CHAT, Protocol.RESPONSES
from switchback.protocols.translate_response import (
    chat_to_responses_response,
    responses_to_chat_response,
)

RID = "resp_abc"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
         "prompt_tokens_details": {"cached_tokens": 4},
         "completion_tokens_details": {"reasoning_tokens": 2}}
RESPONSES_USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                   "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                   "output_tokens_details": {"reasoning_tokens": 2}}
FUNCTION_TOOL = {"type": "function", "name": "f", "parameters": {}, "strict": False}
PATCH_TOOL = {"type": "custom", "name": "apply_patch"}


def chat(message: dict, finish: str = "stop", usage: dict | None = USAGE) -> dict:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "up-model",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    return body


def fc(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def msg(text: str, status: str = "completed", n: int = 0) -> dict:
    return {"id": f"msg_abc_{n}", "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def fc_item(n: int, call_id: str, name: str, arguments: str) -> dict:
    return {"id": f"fc_abc_{n}", "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


# ------------------------------------------------------------ Chat → Responses
# (id, chat completion, original responses request, expected output, status,
#  incomplete_details)
TO_RESPONSES = [
    ("text", chat({"content": "Hi"}), {"model": "m"}, [msg("Hi")], "completed", None),
    ("text-and-parallel-tool-calls",
     chat({"content": "Let me check", "tool_calls": [fc("c1", "f", "{\"a\":1}"),
                                                     fc("c2", "f", "{\"a\":2}")]}, "tool_calls"),
     {"model": "m", "tools": [FUNCTION_TOOL]},
     [msg("Let me check"), fc_item(0, "c1", "f", "{\"a\":1}"), fc_item(1, "c2", "f", "{\"a\":2}")],
     "completed", None),
    ("reasoning-content-first",
     chat({"content": "42", "reasoning_content": "thinking"}), {"model": "m"},
     [{"id": "rs_abc_0", "type": "reasoning",
       "summary": [{"type": "summary_text", "text": "thinking"}]}, msg("42")],
     "completed", None),
    ("reasoning-field",
     chat({"content": None, "reasoning": "hmm", "tool_calls": [fc("c1", "f", "{}")]},
          "tool_calls"), {"model": "m"},
     [{"id": "rs_abc_0", "type": "reasoning",
       "summary": [{"type": "summary_text", "text": "hmm"}]},
      fc_item(0, "c1", "f", "{}")], "completed", None),
    ("refusal",
     chat({"content": None, "refusal": "I can't"}), {"model": "m"},
     [{"id": "msg_abc_0", "type": "message", "role": "assistant", "status": "completed",
       "content": [{"type": "refusal", "refusal": "I can't"}]}], "completed", None),
    ("length", chat({"content": "cut"}, "length"), {"model": "m"}, [msg("cut", "incomplete")],
     "incomplete", {"reason": "max_output_tokens"}),
    ("content-filter", chat({"content": ""}, "content_filter"), {"model": "m"}, [],
     "incomplete", {"reason": "content_filter"}),
    ("custom-tool-comes-back-custom",
     chat({"content": None, "tool_calls": [
         fc("c1", "apply_patch", "{\"input\": \"*** Begin Patch\"}"),
         fc("c2", "apply_patch", "not json")]}, "tool_calls"),
     {"model": "m", "tools": [PATCH_TOOL]},
     [{"id": "fc_abc_0", "type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
       "input": "*** Begin Patch"},
      {"id": "fc_abc_1", "type": "custom_tool_call", "call_id": "c2", "name": "apply_patch",
       "input": "not json"}], "completed", None),
    ("chat-custom-call-form",
     chat({"content": None, "tool_calls": [
         {"id": "c1", "type": "custom", "custom": {"name": "apply_patch", "input": "P"}}]},
          "tool_calls"),
     {"model": "m", "tools": [PATCH_TOOL]},
     [{"id": "fc_abc_0", "type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
       "input": "P"}], "completed", None),
]


@pytest.mark.parametrize("body, request_body, output, status, incomplete",
                         [c[1:] for c in TO_RESPONSES], ids=[c[0] for c in TO_RESPONSES])
def test_chat_to_responses_response(body: dict, request_body: dict, output: list, status: str,
                                    incomplete: dict | None) -> None:
    response = chat_to_responses_response(body, request_body, RID)
    assert response["output"] == output
    assert (response["status"], response["incomplete_details"]) == (status, incomplete)
    assert (response["id"], response["object"], response["created_at"], response["model"]) == (
        RID, "response", 7, "up-model")
    assert response["usage"] == RESPONSES_USAGE
    Response.model_validate(response)


def test_response_echoes_the_request_settings() -> None:
    request = {"model": "m", "instructions": "be brief", "tools": [FUNCTION_TOOL],
               "tool_choice": "required", "parallel_tool_calls": False, "temperature": 0.3,
               "top_p": 0.8, "text": {"format": {"type": "text"}},
               "reasoning": {"effort": "low"}, "store": True, "metadata": {"k": "v"},
               "previous_response_id": "resp_0", "max_output_tokens": 99,
               "truncation": "auto", "user": "u", "input": "ignored", "stream": False}
    response = chat_to_responses_response(chat({"content": "ok"}), request, RID)
    for key in ("instructions", "tools", "tool_choice", "parallel_tool_calls", "temperature",
                "top_p", "text", "reasoning", "store", "metadata", "previous_response_id",
                "max_output_tokens", "truncation", "user"):
        assert response[key] == request[key], key
    assert "input" not in response and "stream" not in response
    Response.model_validate(response)


def test_response_defaults_and_missing_usage() -> None:
    response = chat_to_responses_response(chat({"content": "ok"}, usage=None), {"model": "m"}, RID)
    assert (response["tools"], response["tool_choice"], response["parallel_tool_calls"],
            response["usage"]) == ([], "auto", True, None)
    Response.model_validate(response)


# ------------------------------------------------------------ Responses → Chat


def resp(output: list[dict], status: str = "completed", reason: str | None = None) -> dict:
    return {"id": RID, "object": "response", "created_at": 9, "model": "up-model",
            "status": status, "output": output, "tool_choice": "auto", "tools": [],
            "parallel_tool_calls": True, "usage": RESPONSES_USAGE,
            "incomplete_details": {"reason": reason} if reason else None}


# (id, response, expected message, expected finish_reason)
TO_CHAT = [
    ("text", resp([msg("Hel"), msg("lo", n=1)]), {"role": "assistant", "content": "Hello"},
     "stop"),
    ("text-and-tool-calls",
     resp([msg("checking"), fc_item(0, "c1", "f", "{}"), fc_item(1, "c2", "g", "{\"x\":1}")]),
     {"role": "assistant", "content": "checking",
      "tool_calls": [fc("c1", "f", "{}"), fc("c2", "g", "{\"x\":1}")]}, "tool_calls"),
    ("custom-tool-call",
     resp([{"type": "custom_tool_call", "id": "ctc_1", "call_id": "c1", "name": "apply_patch",
            "input": "P"}]),
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "c1", "type": "custom", "custom": {"name": "apply_patch", "input": "P"}}]},
     "tool_calls"),
    ("reasoning-summary",
     resp([{"type": "reasoning", "id": "rs_1", "summary": [
         {"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}]},
           msg("x")]),
     {"role": "assistant", "content": "x", "reasoning_content": "a\n\nb"}, "stop"),
    ("refusal",
     resp([{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "refusal", "refusal": "no"}]}]),
     {"role": "assistant", "content": None, "refusal": "no"}, "stop"),
    ("max-output-tokens", resp([msg("cu", "incomplete")], "incomplete", "max_output_tokens"),
     {"role": "assistant", "content": "cu"}, "length"),
    ("content-filter", resp([], "incomplete", "content_filter"),
     {"role": "assistant", "content": None}, "content_filter"),
]


@pytest.mark.parametrize("body, message, finish", [c[1:] for c in TO_CHAT],
                         ids=[c[0] for c in TO_CHAT])
def test_responses_to_chat_response(body: dict, message: dict, finish: str) -> None:
    completion = responses_to_chat_response(body, {"model": "m", "messages": []})
    assert completion["choices"] == [{"index": 0, "message": message, "logprobs": None,
                                      "finish_reason": finish}]
    assert (completion["id"], completion["object"], completion["created"],
            completion["model"]) == ("chatcmpl-abc", "chat.completion", 9, "up-model")
    assert completion["usage"] == {
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2}}
    ChatCompletion.model_validate(completion)


def test_round_trip_keeps_the_answer() -> None:
    original = chat({"content": "ok", "tool_calls": [fc("c1", "f", "{}")]}, "tool_calls")
    there = chat_to_responses_response(original, {"model": "m"}, RID)
    back = responses_to_chat_response(there, {"model": "m"})
    assert back["choices"][0] == original["choices"][0] | {"logprobs": None}
    assert back["usage"] == USAGE
