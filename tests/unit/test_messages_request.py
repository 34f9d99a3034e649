"""Request bodies between the Messages API and chat / Responses, each
direction on recorded-style requests (Claude Code's, the openai SDK's,
Codex's), with what was dropped named; and tool-call ids that cross over
and come back a turn later exactly as they were issued."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.recorded_messages import CHAT_ANSWERS, RESPONSES_ANSWERS
from switchback.protocols.messages_request import (chat_to_messages, messages_to_chat,
                                                   messages_to_responses, responses_to_messages)
from switchback.protocols.messages_response import (chat_to_messages_response,
                                                    responses_to_messages_response)
from switchback.protocols.messages_terms import DEFAULT_MAX_TOKENS
from switchback.protocols.tool_ids import to_messages_id, to_openai_id

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
       "RU5ErkJggg==")
PDF = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}
EMPTY_SCHEMA = {"type": "object", "properties": {}}

# Claude Code's shape: system blocks with cache_control, thinking with a
# signature in the history, parallel tool calls, results with is_error, a
# server tool, metadata.user_id, top_k.
CLAUDE_CODE = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"}},
               {"type": "text", "text": "Use the tools when they help."}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Paris? Map and forecast attached."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
            {"type": "document", "title": "forecast.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
            {"type": "document", "source": {"type": "url",
                                            "url": "https://example.com/report.pdf"}},
            {"type": "document", "title": "notes",
             "source": {"type": "text", "media_type": "text/plain", "data": "Bring a coat."}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Weather and time.", "signature": "EqQBCkgIARAB"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01BbTyGQKn2RTmTtkLzSM4jV", "name": "get_time",
             "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
             "content": "18°C, cloudy"},
            {"type": "tool_result", "tool_use_id": "toolu_01BbTyGQKn2RTmTtkLzSM4jV",
             "content": [{"type": "text", "text": "clock unavailable"}], "is_error": True},
            {"type": "text", "text": "Thanks!", "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": "Be brief."},
    ],
    "tools": [
        {"name": "get_weather", "description": "Current weather for a city",
         "input_schema": WEATHER_SCHEMA},
        {"name": "get_time", "input_schema": EMPTY_SCHEMA},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 10000},
    "temperature": 1,
    "top_k": 40,
    "stop_sequences": ["\n\nHuman:"],
    "metadata": {"user_id": "user_7f3a_account__session_51b2"},
    "stream": True,
}

SYSTEM = "You are Claude Code, Anthropic's official CLI for Claude.\n\n" \
         "Use the tools when they help."


def test_claude_code_request_as_chat() -> None:
    translated = messages_to_chat(CLAUDE_CODE, upstream_host="api.openai.com")
    assert translated.body == {
        "model": "claude-sonnet-4-5-20250929", "temperature": 1,
        "user": "user_7f3a_account__session_51b2",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris? Map and forecast attached."},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}},
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                          "filename": "forecast.pdf"}},
                {"type": "text", "text": "notes\n\nBring a coat."}]},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_01A09q90qw90lq917835lq9", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_01BbTyGQKn2RTmTtkLzSM4jV", "type": "function",
                 "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_01A09q90qw90lq917835lq9",
             "content": "18°C, cloudy"},
            {"role": "tool", "tool_call_id": "call_01BbTyGQKn2RTmTtkLzSM4jV",
             "content": "Error: clock unavailable"},
            {"role": "user", "content": "Thanks!"},
            {"role": "system", "content": "Be brief."}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather",
                                              "parameters": WEATHER_SCHEMA,
                                              "description": "Current weather for a city"}},
            {"type": "function", "function": {"name": "get_time", "parameters": EMPTY_SCHEMA}}],
        "tool_choice": "auto", "parallel_tool_calls": False,
        "max_completion_tokens": 32000, "reasoning_effort": "medium",
        "stop": ["\n\nHuman:"], "stream": True, "stream_options": {"include_usage": True},
    }
    assert translated.dropped == ("cache_control", "top_k", "document(url)", "block:thinking",
                                  "block:redacted_thinking", "tool:web_search_20250305")


def test_claude_code_request_as_responses() -> None:
    translated = messages_to_responses(CLAUDE_CODE)
    assert translated.body == {
        "model": "claude-sonnet-4-5-20250929", "temperature": 1,
        "user": "user_7f3a_account__session_51b2",
        "instructions": SYSTEM,
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather in Paris? Map and forecast attached."},
                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}",
                 "detail": "auto"},
                {"type": "input_image", "image_url": "https://example.com/map.png",
                 "detail": "auto"},
                {"type": "input_file", "file_data": f"data:application/pdf;base64,{PDF}",
                 "filename": "forecast.pdf"},
                {"type": "input_file", "file_url": "https://example.com/report.pdf"},
                {"type": "input_text", "text": "notes\n\nBring a coat."}]},
            {"type": "message", "role": "assistant", "content": "Checking both."},
            {"type": "function_call", "call_id": "call_01A09q90qw90lq917835lq9",
             "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call", "call_id": "call_01BbTyGQKn2RTmTtkLzSM4jV",
             "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_01A09q90qw90lq917835lq9",
             "output": "18°C, cloudy"},
            {"type": "function_call_output", "call_id": "call_01BbTyGQKn2RTmTtkLzSM4jV",
             "output": "Error: clock unavailable"},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "Thanks!"}]},
            {"type": "message", "role": "system", "content": "Be brief."}],
        "tools": [
            {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA,
             "description": "Current weather for a city", "strict": False},
            {"type": "function", "name": "get_time", "parameters": EMPTY_SCHEMA,
             "strict": False}],
        "tool_choice": "auto", "parallel_tool_calls": False,
        "max_output_tokens": 32000, "reasoning": {"effort": "medium"},
        "stream": True, "store": False,
    }
    assert translated.dropped == ("cache_control", "top_k", "block:thinking",
                                  "block:redacted_thinking", "tool:web_search_20250305",
                                  "stop_sequences")


def test_tool_result_images_reach_responses_but_not_chat() -> None:
    body = {"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01X",
                                      "is_error": True, "content": [
            {"type": "text", "text": "screenshot failed halfway"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}]}]}
    responses = messages_to_responses(body)
    assert responses.body["input"] == [{"type": "function_call_output", "call_id": "call_01X",
                                        "output": [
        {"type": "input_text", "text": "Error:"},
        {"type": "input_text", "text": "screenshot failed halfway"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}",
         "detail": "auto"}]}]
    chat = messages_to_chat(body)
    assert chat.body["messages"] == [{"role": "tool", "tool_call_id": "call_01X",
                                      "content": "Error: screenshot failed halfway"}]
    assert chat.dropped == ("tool_result(image)",)


@pytest.mark.parametrize("choice, chat, responses", [
    ({"type": "auto"}, "auto", "auto"),
    ({"type": "any"}, "required", "required"),
    ({"type": "none"}, "none", "none"),
    ({"type": "tool", "name": "get_weather"},
     {"type": "function", "function": {"name": "get_weather"}},
     {"type": "function", "name": "get_weather"}),
])
def test_tool_choice_from_messages(choice: dict, chat: object, responses: object) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
            "tool_choice": choice}
    assert messages_to_chat(body).body["tool_choice"] == chat
    assert "parallel_tool_calls" not in messages_to_chat(body).body
    assert messages_to_responses(body).body["tool_choice"] == responses


@pytest.mark.parametrize("thinking, effort", [
    (None, None), ({"type": "disabled"}, None), ({"type": "adaptive"}, None),
    ({"type": "enabled", "budget_tokens": 1024}, "low"),
    ({"type": "enabled", "budget_tokens": 4095}, "low"),
    ({"type": "enabled", "budget_tokens": 4096}, "medium"),
    ({"type": "enabled", "budget_tokens": 16384}, "high"),
    ({"type": "enabled", "budget_tokens": 31999}, "high"),
])
def test_thinking_budget_as_reasoning_effort(thinking: dict | None, effort: str | None) -> None:
    body = {"model": "m", "max_tokens": 64000, "messages": [{"role": "user", "content": "hi"}],
            **({"thinking": thinking} if thinking else {})}
    assert messages_to_chat(body).body.get("reasoning_effort") == effort
    assert (messages_to_responses(body).body.get("reasoning") or {}).get("effort") == effort


# ---------------------------------------------------------------- OpenAI → Messages

# The openai SDK's shape: a system message, images by URL and data URL, a PDF,
# parallel calls with their results, sampling, stop, user, n, a response format.
CHAT_REQUEST = {
    "model": "claude-sonnet-4-5",
    "messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Weather and time in Paris?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                                "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}},
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                      "filename": "forecast.pdf"}},
            {"type": "file", "file": {"file_id": "file-abc123"}},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}]},
        {"role": "assistant", "content": None, "reasoning_content": "two calls",
         "tool_calls": [
             {"id": "call_DdmNJ6z4YoIarJgdUJcz1sHa", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
             {"id": "functions.get_time:1", "type": "function",
              "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_DdmNJ6z4YoIarJgdUJcz1sHa", "content": "18°C"},
        {"role": "tool", "tool_call_id": "functions.get_time:1",
         "content": [{"type": "text", "text": "14:05"}]},
        {"role": "user", "content": "Merci"},
        {"role": "assistant", "content": ""},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                "parameters": WEATHER_SCHEMA}},
              {"type": "function", "function": {"name": "get_time"}}],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "temperature": 0.2, "top_p": 0.9, "stop": "END", "user": "user-42",
    "max_completion_tokens": 2048, "n": 1, "seed": 7, "stream": True,
    "stream_options": {"include_usage": True},
    "response_format": {"type": "json_object"},
}


def test_openai_sdk_chat_request_as_messages() -> None:
    translated = chat_to_messages(CHAT_REQUEST)
    assert translated.body == {
        "model": "claude-sonnet-4-5",
        "system": "You are a weather bot.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather and time in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}},
                {"type": "image", "source": {"type": "url",
                                             "url": "https://example.com/map.png"}},
                {"type": "document", "title": "forecast.pdf",
                 "source": {"type": "base64", "media_type": "application/pdf",
                            "data": PDF}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_DdmNJ6z4YoIarJgdUJcz1sHa",
                 "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_sbo-ZnVuY3Rpb25zLmdldF90aW1lOjE",
                 "name": "get_time", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_DdmNJ6z4YoIarJgdUJcz1sHa",
                 "content": "18°C"},
                {"type": "tool_result", "tool_use_id": "toolu_sbo-ZnVuY3Rpb25zLmdldF90aW1lOjE",
                 "content": "14:05"},
                {"type": "text", "text": "Merci"}]}],
        "max_tokens": 2048, "temperature": 0.2, "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"}, "stream": True,
        "tools": [{"name": "get_weather", "description": "Weather",
                   "input_schema": WEATHER_SCHEMA},
                  {"name": "get_time", "input_schema": EMPTY_SCHEMA}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }
    assert translated.dropped == ("file(file_id)", "part:input_audio", "reasoning", "top_p",
                                  "response_format", "seed")


# Codex's shape: instructions, developer and user messages, earlier reasoning
# (sealed), calls and their outputs, a custom tool (apply_patch), store/include.
CODEX_REQUEST = {
    "model": "gpt-5-codex",
    "instructions": "You are Codex, a coding agent.",
    "input": [
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "<permissions>workspace-write</permissions>"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Fix the bug in app.py"},
            {"type": "input_image", "image_url": "https://example.com/trace.png"},
            {"type": "input_image", "file_id": "file-xyz"},
            {"type": "input_file", "file_url": "https://example.com/spec.pdf",
             "filename": "spec.pdf"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB..."},
        {"type": "function_call", "call_id": "call_sh1", "name": "shell",
         "arguments": '{"command":["cat","app.py"]}'},
        {"type": "function_call_output", "call_id": "call_sh1", "output": "print(1/0)"},
        {"type": "custom_tool_call", "call_id": "call_ap1", "name": "apply_patch",
         "input": "*** Begin Patch\n*** End Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_ap1", "output": "Done!"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Patched."}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Run the tests too."}]},
    ],
    "tools": [{"type": "function", "name": "shell", "description": "Run a command",
               "parameters": {"type": "object", "properties": {
                   "command": {"type": "array", "items": {"type": "string"}}}},
               "strict": False},
              {"type": "custom", "name": "apply_patch", "description": "Edit files"},
              {"type": "web_search"}],
    "tool_choice": "auto", "parallel_tool_calls": False,
    "reasoning": {"effort": "high", "summary": "auto"},
    "store": False, "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "5f0c-session", "stream": True,
    "text": {"verbosity": "low"},
}


def test_codex_request_as_messages() -> None:
    translated = responses_to_messages(CODEX_REQUEST)
    body = translated.body
    assert body["system"] == "You are Codex, a coding agent.\n\n" \
                             "<permissions>workspace-write</permissions>"
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Fix the bug in app.py"},
            {"type": "image", "source": {"type": "url",
                                         "url": "https://example.com/trace.png"}},
            {"type": "document", "title": "spec.pdf",
             "source": {"type": "url", "url": "https://example.com/spec.pdf"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_sh1", "name": "shell",
             "input": {"command": ["cat", "app.py"]}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_sh1", "content": "print(1/0)"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_ap1", "name": "apply_patch",
             "input": {"input": "*** Begin Patch\n*** End Patch"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_ap1", "content": "Done!"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Patched."}]},
        {"role": "user", "content": [{"type": "text", "text": "Run the tests too."}]}]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS + 16384
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert [t["name"] for t in body["tools"]] == ["shell", "apply_patch"]
    assert body["tools"][1]["input_schema"]["required"] == ["input"]
    assert body["stream"] is True
    assert set(body) == {"model", "system", "messages", "max_tokens", "thinking", "stream",
                         "tools", "tool_choice"}
    assert translated.dropped == ("input_image(file_id)", "reasoning", "tool:web_search",
                                  "text.verbosity")


@pytest.mark.parametrize("upto, thinks", [(3, True), (4, False), (5, False), (7, False),
                                          (8, False), (9, True)])
def test_no_thinking_inside_a_tool_loop(upto: int, thinks: bool) -> None:
    """Messages wants a tool loop's last assistant turn to start with its
    signed thinking; a conversation from OpenAI has none, so a request that
    continues a loop (or an assistant prefix) goes without thinking."""
    translated = responses_to_messages({**CODEX_REQUEST,
                                        "input": CODEX_REQUEST["input"][:upto]})
    assert ("thinking" in translated.body) is thinks
    assert ("reasoning effort (inside a tool loop, no signed thinking to replay)"
            in translated.dropped) is not thinks


@pytest.mark.parametrize("settings_, expected, dropped", [
    ({}, {"max_tokens": DEFAULT_MAX_TOKENS}, ()),
    ({"max_tokens": 300}, {"max_tokens": 300}, ()),
    ({"reasoning_effort": "low"},
     {"max_tokens": DEFAULT_MAX_TOKENS + 2048,
      "thinking": {"type": "enabled", "budget_tokens": 2048}}, ()),
    ({"reasoning_effort": "high", "max_completion_tokens": 4000},
     {"max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 3999}}, ()),
    ({"reasoning_effort": "medium", "max_tokens": 500}, {"max_tokens": 500},
     ("reasoning effort (max tokens leave no room to think)",)),
    ({"reasoning_effort": "none"}, {"max_tokens": DEFAULT_MAX_TOKENS}, ()),
    ({"reasoning_effort": "medium", "temperature": 0.3},
     {"max_tokens": DEFAULT_MAX_TOKENS + 8192,
      "thinking": {"type": "enabled", "budget_tokens": 8192}},
     ("temperature (thinking needs 1)",)),
    ({"temperature": 1.6}, {"max_tokens": DEFAULT_MAX_TOKENS, "temperature": 1},
     ("temperature above 1 (clamped)",)),
    ({"top_p": 0.5}, {"max_tokens": DEFAULT_MAX_TOKENS, "top_p": 0.5}, ()),
    ({"temperature": 0.5, "top_p": 1}, {"max_tokens": DEFAULT_MAX_TOKENS, "temperature": 0.5},
     ()),
    ({"stop": ["a", "b"]}, {"max_tokens": DEFAULT_MAX_TOKENS, "stop_sequences": ["a", "b"]}, ()),
])
def test_limits_thinking_and_sampling_from_chat(settings_: dict, expected: dict,
                                                dropped: tuple) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **settings_}
    translated = chat_to_messages(body)
    rest = {k: v for k, v in translated.body.items() if k not in ("model", "messages")}
    assert rest == expected
    assert translated.dropped == dropped


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
])
def test_tool_choice_from_chat_and_responses(choice: object, expected: dict) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": choice,
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert chat_to_messages(chat).body["tool_choice"] == expected
    flat = {"type": "function", "name": "f"} if isinstance(choice, dict) else choice
    responses = {"model": "m", "input": "hi", "tool_choice": flat,
                 "tools": [{"type": "function", "name": "f"}]}
    assert responses_to_messages(responses).body["tool_choice"] == expected


def test_an_empty_assistant_turn_is_left_out_and_turns_of_one_role_merge() -> None:
    body = {"model": "m", "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "assistant", "content": ""}, {"role": "assistant", "content": None}]}
    assert chat_to_messages(body).body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text",
                                                                      "text": "b"}]}]


# ---------------------------------------------------------------- ids, next turn


@settings(max_examples=500)
@given(st.one_of(st.text(), st.from_regex(r"call_[A-Za-z0-9_-]{0,30}", fullmatch=True),
                 st.from_regex(r"call_sb[mo]-[A-Za-z0-9_-]{0,20}", fullmatch=True)))
def test_an_openai_id_comes_back_as_it_went(openai_id: str) -> None:
    messages_id = to_messages_id(openai_id)
    assert to_openai_id(messages_id) == openai_id
    if not openai_id.startswith("call_sbm-"):  # (one that carries a Messages id gives it back)
        assert messages_id.startswith("toolu_")


@settings(max_examples=500)
@given(st.one_of(st.text(), st.from_regex(r"toolu_[A-Za-z0-9_-]{0,30}", fullmatch=True),
                 st.from_regex(r"toolu_sb[mo]-[A-Za-z0-9_-]{0,20}", fullmatch=True)))
def test_a_messages_id_comes_back_as_it_went(messages_id: str) -> None:
    openai_id = to_openai_id(messages_id)
    assert to_messages_id(openai_id) == messages_id
    if not messages_id.startswith("toolu_sbo-"):
        assert openai_id.startswith("call_")


@pytest.mark.parametrize("openai_id", ["call_DdmNJ6z4YoIarJgdUJcz1sHa",
                                       "functions.get_weather:0", "chatcmpl-tool-9f8e7d"])
def test_a_messages_id_has_a_shape_anthropic_accepts(openai_id: str) -> None:
    import re
    assert re.fullmatch(r"toolu_[A-Za-z0-9_-]+", to_messages_id(openai_id))


def next_turn(message: dict) -> dict:
    """What Claude Code sends after `message`: it, and a result for each call."""
    calls = [b for b in message["content"] if b["type"] == "tool_use"]
    return {"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": message["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": c["id"],
                                      "content": "ok"} for c in calls]}]}


@pytest.mark.parametrize("answer", ["reasoning-and-tools", "odd-call-id"])
def test_the_next_turn_sends_the_chat_providers_own_ids_back(answer: str) -> None:
    """A chat provider's tool calls reach Claude Code as tool_use blocks; its
    next turn (the calls and their results) reaches the provider with the
    ids the provider issued."""
    chat = CHAT_ANSWERS[answer]
    sent = messages_to_chat(next_turn(chat_to_messages_response(chat, {"model": "m"})))
    sent = sent.body["messages"]
    issued = [c["id"] for c in chat["choices"][0]["message"]["tool_calls"]]
    assert [c["id"] for c in sent[1]["tool_calls"]] == issued
    assert [m["tool_call_id"] for m in sent[2:]] == issued


def test_the_next_turn_sends_the_responses_providers_own_call_ids_back() -> None:
    response = RESPONSES_ANSWERS["reasoning-and-tools"]
    message = responses_to_messages_response(response, {"model": "m"})
    items = messages_to_responses(next_turn(message)).body["input"]
    issued = [i["call_id"] for i in response["output"] if i["type"] == "function_call"]
    assert [i["call_id"] for i in items if i["type"] == "function_call"] == issued
    assert [i["call_id"] for i in items if i["type"] == "function_call_output"] == issued
    assert not any(i.get("type") == "reasoning" for i in items)  # sealed: never sent back


def test_the_next_turn_sends_claudes_own_ids_back() -> None:
    """The other way: Claude's tool_use ids reach a chat client as call ids,
    and the client's next turn reaches Anthropic with Claude's ids."""
    from support.recorded_messages import ANSWERS
    from switchback.protocols.messages_response import messages_to_chat_response
    answer = ANSWERS["thinking-then-tools"]
    completion = messages_to_chat_response(answer, {"model": "m"})
    calls = completion["choices"][0]["message"]["tool_calls"]
    next_turn = {"model": "m", "messages": [
        {"role": "user", "content": "go"}, completion["choices"][0]["message"],
        *[{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls]]}
    sent = chat_to_messages(next_turn).body["messages"]
    issued = [b["id"] for b in answer["content"] if b["type"] == "tool_use"]
    assert [b["id"] for b in sent[1]["content"] if b["type"] == "tool_use"] == issued
    assert [b["tool_use_id"] for b in sent[2]["content"]] == issued
    assert not any(b["type"] == "thinking" for b in sent[1]["content"])


# ---------------------------------------------------------------- there and back

_ids = st.one_of(st.from_regex(r"call_[A-Za-z0-9]{24}", fullmatch=True),
                 st.text(min_size=1, max_size=30))
_words = st.text(min_size=1, max_size=40).filter(str.strip)
_arguments = st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                             st.one_of(st.integers(), st.text(max_size=10)), max_size=3)


@st.composite
def chat_conversations(draw: st.DrawFn) -> list[dict]:
    """A chat history as agents send it: user words, assistant words and/or
    parallel tool calls, each call's result right after."""
    messages: list[dict] = []
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(_words)})
        ids = draw(st.lists(_ids, max_size=3, unique=True))
        text = draw(st.one_of(st.none(), _words)) if ids else draw(_words)
        assistant: dict = {"role": "assistant", "content": text}
        if ids:
            assistant["tool_calls"] = [
                {"id": i, "type": "function", "function": {
                    "name": draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True)),
                    "arguments": json.dumps(draw(_arguments))}} for i in ids]
        messages.append(assistant)
        messages += [{"role": "tool", "tool_call_id": i, "content": draw(_words)} for i in ids]
    return messages


def _parsed(messages: list[dict]) -> list[dict]:
    """Messages with tool arguments as values (their spacing is not meaning)."""
    return [{**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.loads(
        c["function"]["arguments"])}} for c in m["tool_calls"]]} if m.get("tool_calls") else m
        for m in messages]


@settings(max_examples=150)
@given(chat_conversations())
def test_a_chat_history_through_messages_and_back_is_the_same(messages: list[dict]) -> None:
    there = chat_to_messages({"model": "m", "messages": messages})
    assert there.dropped == ()
    back = messages_to_chat(there.body)
    assert back.dropped == ()
    assert _parsed(back.body["messages"]) == _parsed(messages)


@settings(max_examples=150)
@given(chat_conversations())
def test_a_responses_history_through_messages_and_back_is_the_same(messages: list[dict]) -> None:
    from switchback.protocols.translate_request import chat_to_responses
    items = chat_to_responses({"model": "m", "messages": messages}).body["input"]
    there = responses_to_messages({"model": "m", "input": items})
    back = messages_to_responses(there.body).body["input"]
    normal = [{**i, "arguments": json.loads(i["arguments"])} if "arguments" in i else i
              for i in items]
    assert [{**i, "arguments": json.loads(i["arguments"])} if "arguments" in i else i
            for i in back] == normal
