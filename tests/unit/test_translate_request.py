"""Request bodies: Responses → Chat and Chat → Responses, case by case, each
result also validated against the openai SDK's own request types."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from openai.types.chat import completion_create_params as chat_params
from openai.types.responses import response_create_params as responses_params
from pydantic import TypeAdapter

from switchback.protocols.translate_request import chat_to_responses, responses_to_chat

CHAT_REQUEST = TypeAdapter(chat_params.CompletionCreateParamsNonStreaming)
RESPONSES_REQUEST = TypeAdapter(responses_params.ResponseCreateParamsNonStreaming)

EXPECTED_SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}}
PATCH_GRAMMAR = {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}


def valid(adapter: TypeAdapter, body: dict) -> None:
    """Strictly validate a request body: pydantic checks `Iterable` fields
    lazily, so walk the result to make every nested item validate."""
    def force(value: Any) -> None:
        if isinstance(value, Mapping):
            for v in value.values():
                force(v)
        elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
            for v in value:
                force(v)
    force(adapter.validate_python({k: v for k, v in body.items() if k != "stream"}))


def fc(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# ------------------------------------------------------------ Responses → Chat
# (id, responses body, keyword args, expected chat fields, expected dropped)
TO_CHAT = [
    ("instructions-and-string-input",
     {"model": "m", "instructions": "be brief", "input": "hi"}, {},
     {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "hi"}]}, ()),
    ("message-items-with-and-without-type",
     {"model": "m", "input": [
         {"role": "developer", "content": "dev"},
         {"type": "message", "role": "system", "content": "sys"},
         {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]},
         {"role": "assistant", "content": "a"}]}, {},
     {"messages": [{"role": "developer", "content": "dev"}, {"role": "system", "content": "sys"},
                   {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, ()),
    ("input-parts",
     {"model": "m", "input": [{"role": "user", "content": [
         {"type": "input_text", "text": "look"},
         {"type": "input_image", "image_url": "https://x/i.png", "detail": "low"},
         {"type": "input_image", "file_id": "file-1", "detail": "auto"},
         {"type": "input_file", "file_data": "data:application/pdf;base64,AA",
          "filename": "a.pdf"},
         {"type": "input_file", "file_url": "https://x/a.pdf"}]}]}, {},
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "look"},
         {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "low"}},
         {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA",
                                   "filename": "a.pdf"}}]}]},
     ("input_image(file_id)", "input_file(file_url)")),
    ("assistant-output-text-and-refusal",
     {"model": "m", "input": [{"type": "message", "role": "assistant", "content": [
         {"type": "output_text", "text": "Hel", "annotations": []},
         {"type": "output_text", "text": "lo", "annotations": []},
         {"type": "refusal", "refusal": "no"}]}]}, {},
     {"messages": [{"role": "assistant", "content": "Hello", "refusal": "no"}]}, ()),
    ("consecutive-function-calls-merge-into-one-assistant-message",
     {"model": "m", "input": [
         {"role": "user", "content": "weather?"},
         {"type": "reasoning", "id": "rs_1", "summary": []},
         {"type": "message", "role": "assistant",
          "content": [{"type": "output_text", "text": "checking"}]},
         {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"c\":\"A\"}"},
         {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{\"c\":\"B\"}"},
         {"type": "function_call_output", "call_id": "c1", "output": "sun"},
         {"type": "function_call_output", "call_id": "c2", "output": [
             {"type": "input_text", "text": "rain"}, {"type": "input_text", "text": "wind"}]}]},
     {},
     {"messages": [
         {"role": "user", "content": "weather?"},
         {"role": "assistant", "content": "checking",
          "tool_calls": [fc("c1", "w", "{\"c\":\"A\"}"), fc("c2", "w", "{\"c\":\"B\"}")]},
         {"role": "tool", "tool_call_id": "c1", "content": "sun"},
         {"role": "tool", "tool_call_id": "c2", "content": "rain\nwind"}]}, ()),
    ("function-call-without-preceding-text",
     {"model": "m", "input": [
         {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""}]}, {},
     {"messages": [{"role": "assistant", "content": None, "tool_calls": [fc("c1", "f", "{}")]}]},
     ()),
    ("custom-tool-and-its-calls",
     {"model": "m",
      "tools": [{"type": "custom", "name": "apply_patch", "description": "Patch files",
                 "format": PATCH_GRAMMAR}],
      "tool_choice": {"type": "custom", "name": "apply_patch"},
      "input": [
          {"type": "custom_tool_call", "call_id": "c9", "name": "apply_patch",
           "input": "*** Begin Patch"},
          {"type": "custom_tool_call_output", "call_id": "c9", "output": "done"}]}, {},
     {"tools": [{"type": "function", "function": {
         "name": "apply_patch", "description": "Patch files",
         "parameters": {"type": "object", "properties": {"input": {
             "type": "string",
             "description": "The raw tool input. It must match this lark grammar:\n"
                            "start: /.+/"}},
             "required": ["input"], "additionalProperties": False}}}],
      "tool_choice": {"type": "function", "function": {"name": "apply_patch"}},
      "messages": [
          {"role": "assistant", "content": None,
           "tool_calls": [fc("c9", "apply_patch", "{\"input\": \"*** Begin Patch\"}")]},
          {"role": "tool", "tool_call_id": "c9", "content": "done"}]}, ()),
    ("function-tools-flat-and-nested-builtins-dropped",
     {"model": "m", "input": "x", "parallel_tool_calls": False, "tool_choice": "required",
      "tools": [
          {"type": "function", "name": "f", "description": "d", "parameters": EXPECTED_SCHEMA,
           "strict": True},
          {"type": "function", "function": {"name": "g", "parameters": {}}},
          {"type": "web_search"}, {"type": "local_shell"}]}, {},
     {"tools": [
         {"type": "function", "function": {"name": "f", "description": "d",
                                           "parameters": EXPECTED_SCHEMA, "strict": True}},
         {"type": "function", "function": {"name": "g", "parameters": {}}}],
      "tool_choice": "required", "parallel_tool_calls": False},
     ("tool:web_search", "tool:local_shell")),
    ("tool-settings-without-tools-are-not-sent",
     {"model": "m", "input": "x", "tools": [{"type": "web_search"}],
      "tool_choice": "auto", "parallel_tool_calls": True}, {},
     {"messages": [{"role": "user", "content": "x"}]}, ("tool:web_search",)),
    ("tool-choice-function-and-allowed-tools",
     {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
      "tool_choice": {"type": "allowed_tools", "mode": "required",
                      "tools": [{"type": "function", "name": "f"}]}}, {},
     {"tool_choice": {"type": "allowed_tools", "allowed_tools": {
         "mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}}}, ()),
    ("text-format-json-schema",
     {"model": "m", "input": "x", "text": {"format": {
         "type": "json_schema", "name": "out", "schema": EXPECTED_SCHEMA, "strict": True}}}, {},
     {"response_format": {"type": "json_schema", "json_schema": {
         "name": "out", "schema": EXPECTED_SCHEMA, "strict": True}}}, ()),
    ("text-format-json-object-and-verbosity",
     {"model": "m", "input": "x",
      "text": {"format": {"type": "json_object"}, "verbosity": "low"}}, {},
     {"response_format": {"type": "json_object"}}, ("text.verbosity",)),
    ("max-output-tokens-openai",
     {"model": "m", "input": "x", "max_output_tokens": 50},
     {"upstream_host": "api.openai.com"}, {"max_completion_tokens": 50}, ()),
    ("max-output-tokens-elsewhere",
     {"model": "m", "input": "x", "max_output_tokens": 50},
     {"upstream_host": "localhost"}, {"max_tokens": 50}, ()),
    ("reasoning-sampling-user-stream",
     {"model": "m", "input": "x", "reasoning": {"effort": "high", "summary": "auto"},
      "temperature": 0.2, "top_p": 0.9, "user": "u", "stream": True}, {},
     {"reasoning_effort": "high", "temperature": 0.2, "top_p": 0.9, "user": "u",
      "stream": True, "stream_options": {"include_usage": True}}, ()),
    ("responses-only-settings-dropped-quietly",
     {"model": "m", "input": "x", "store": True, "include": ["reasoning.encrypted_content"],
      "truncation": "auto", "background": False, "prompt_cache_key": "k",
      "metadata": {"a": "b"}, "previous_response_id": "resp_1",
      "stream_options": {"include_obfuscation": False}}, {},
     {"model": "m", "messages": [{"role": "user", "content": "x"}]}, ()),
    ("untranslatable-settings-named",
     {"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}],
      "conversation": "conv_1", "top_logprobs": 2}, {},
     {"messages": []}, ("item:item_reference", "conversation", "top_logprobs")),
]


@pytest.mark.parametrize("body, kwargs, expected, dropped",
                         [c[1:] for c in TO_CHAT], ids=[c[0] for c in TO_CHAT])
def test_responses_to_chat(body: dict, kwargs: dict, expected: dict, dropped: tuple) -> None:
    result = responses_to_chat(body, **kwargs)
    if set(expected) >= {"model", "messages"}:
        assert result.body == expected
    else:
        assert {k: result.body.get(k) for k in expected} == expected
    assert result.dropped == dropped
    valid(CHAT_REQUEST, result.body)


HISTORY = [
    {"role": "system", "content": "old instructions"},
    {"role": "user", "content": "first"},
    {"role": "assistant", "content": None, "tool_calls": [fc("c1", "f", "{}")]},
]


def test_a_replayed_conversation_becomes_chat_messages_after_the_instructions() -> None:
    # What `history.replay` hands the bridge: earlier items first, then this turn's input.
    body = {"model": "m", "instructions": "new", "input": [
        {"role": "user", "content": "first"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}]}
    result = responses_to_chat(body)
    assert result.body["messages"] == [
        {"role": "system", "content": "new"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": None, "tool_calls": [fc("c1", "f", "{}")]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    assert result.dropped == ()


# ------------------------------------------------------------ Chat → Responses
# (id, chat body, expected responses fields, expected dropped)
TO_RESPONSES = [
    ("system-messages-become-instructions",
     {"model": "m", "messages": [
         {"role": "system", "content": "one"},
         {"role": "developer", "content": [{"type": "text", "text": "two"}]},
         {"role": "user", "content": "hi"}]},
     {"model": "m", "instructions": "one\n\ntwo", "store": False, "input": [
         {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]},
     ()),
    ("user-parts",
     {"model": "m", "messages": [{"role": "user", "content": [
         {"type": "text", "text": "see"},
         {"type": "image_url", "image_url": {"url": "https://x/i.png", "detail": "high"}},
         {"type": "image_url", "image_url": {"url": "https://x/j.png"}},
         {"type": "file", "file": {"file_id": "file-1"}},
         {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]},
     {"input": [{"type": "message", "role": "user", "content": [
         {"type": "input_text", "text": "see"},
         {"type": "input_image", "image_url": "https://x/i.png", "detail": "high"},
         {"type": "input_image", "image_url": "https://x/j.png", "detail": "auto"},
         {"type": "input_file", "file_id": "file-1"}]}]},
     ("part:input_audio",)),
    ("assistant-text-tool-calls-and-results",
     {"model": "m", "messages": [
         {"role": "user", "content": "go"},
         {"role": "assistant", "content": "sure",
          "tool_calls": [fc("c1", "f", "{\"a\":1}"), fc("c2", "g", "{}")]},
         {"role": "tool", "tool_call_id": "c1", "content": "r1"},
         {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
         {"role": "assistant", "content": None, "refusal": "cannot"}]},
     {"input": [
         {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
         {"type": "message", "role": "assistant", "content": "sure"},
         {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
         {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
         {"type": "function_call_output", "call_id": "c1", "output": "r1"},
         {"type": "function_call_output", "call_id": "c2", "output": "r2"},
         {"type": "message", "role": "assistant", "content": "cannot"}]},
     ()),
    ("custom-tools-and-calls",
     {"model": "m",
      "tools": [{"type": "custom", "custom": {
          "name": "apply_patch", "description": "Patch",
          "format": {"type": "grammar", "grammar": {"syntax": "lark",
                                                    "definition": "start: /.+/"}}}}],
      "tool_choice": {"type": "custom", "custom": {"name": "apply_patch"}},
      "messages": [
          {"role": "assistant", "content": None, "tool_calls": [
              {"id": "c3", "type": "custom", "custom": {"name": "apply_patch", "input": "P"}}]},
          {"role": "tool", "tool_call_id": "c3", "content": "ok"}]},
     {"tools": [{"type": "custom", "name": "apply_patch", "description": "Patch",
                 "format": PATCH_GRAMMAR}],
      "tool_choice": {"type": "custom", "name": "apply_patch"},
      "input": [{"type": "custom_tool_call", "call_id": "c3", "name": "apply_patch", "input": "P"},
                {"type": "custom_tool_call_output", "call_id": "c3", "output": "ok"}]},
     ()),
    ("function-tools-flattened",
     {"model": "m", "messages": [], "parallel_tool_calls": True,
      "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                  "parameters": EXPECTED_SCHEMA}},
                {"type": "function", "function": {"name": "g", "strict": True}}],
      "tool_choice": {"type": "function", "function": {"name": "f"}}},
     {"tools": [{"type": "function", "name": "f", "description": "d",
                 "parameters": EXPECTED_SCHEMA, "strict": False},
                {"type": "function", "name": "g",
                 "parameters": {"type": "object", "properties": {}}, "strict": True}],
      "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": True},
     ()),
    ("allowed-tools-choice",
     {"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "allowed_tools", "allowed_tools": {
          "mode": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]}}},
     {"tool_choice": {"type": "allowed_tools", "mode": "auto",
                      "tools": [{"type": "function", "name": "f"}]}},
     ()),
    ("parallel-tool-calls-only-with-tools",
     {"model": "m", "messages": [], "parallel_tool_calls": False, "tool_choice": "none"},
     {"model": "m", "input": [], "store": False}, ()),
    ("response-format-json-schema-and-verbosity",
     {"model": "m", "messages": [], "verbosity": "high", "response_format": {
         "type": "json_schema", "json_schema": {"name": "o", "schema": EXPECTED_SCHEMA,
                                                "strict": True}}},
     {"text": {"format": {"type": "json_schema", "name": "o", "schema": EXPECTED_SCHEMA,
                          "strict": True}, "verbosity": "high"}},
     ()),
    ("response-format-json-object",
     {"model": "m", "messages": [], "response_format": {"type": "json_object"}},
     {"text": {"format": {"type": "json_object"}}}, ()),
    ("limits-reasoning-sampling",
     {"model": "m", "messages": [], "max_tokens": 10, "max_completion_tokens": 20,
      "reasoning_effort": "low", "temperature": 1, "top_p": 0.5, "user": "u",
      "metadata": {"k": "v"}, "stream": True, "stream_options": {"include_usage": True},
      "store": True, "n": 1},
     {"model": "m", "input": [], "max_output_tokens": 20, "reasoning": {"effort": "low"},
      "temperature": 1, "top_p": 0.5, "user": "u", "metadata": {"k": "v"}, "stream": True,
      "store": False},
     ()),
    ("chat-only-settings-named",
     {"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}],
      "n": 2, "seed": 1, "stop": ["x"], "logprobs": True, "frequency_penalty": 0.1,
      "tools": [{"type": "retrieval"}]},
     {"input": []},
     ("message:function", "tool:retrieval", "n", "logprobs", "seed", "stop",
      "frequency_penalty")),
]


@pytest.mark.parametrize("body, expected, dropped",
                         [c[1:] for c in TO_RESPONSES], ids=[c[0] for c in TO_RESPONSES])
def test_chat_to_responses(body: dict, expected: dict, dropped: tuple) -> None:
    result = chat_to_responses(body)
    if set(expected) >= {"model", "input"}:
        assert result.body == expected
    else:
        assert {k: result.body.get(k) for k in expected} == expected
    assert result.body["store"] is False
    assert result.dropped == dropped
    valid(RESPONSES_REQUEST, result.body)


def test_round_trip_keeps_a_tool_conversation() -> None:
    """Chat → Responses → Chat gives back the conversation the client sent."""
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "ok", "tool_calls": [fc("c1", "f", "{\"a\":1}")]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
    ]
    there = chat_to_responses({"model": "m", "messages": messages}).body
    back = responses_to_chat(there).body
    assert back["messages"] == messages
    assert json.loads(back["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
