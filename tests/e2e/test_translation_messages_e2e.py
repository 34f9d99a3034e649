"""Translation between the Messages API and OpenAI's chat and Responses,
through a real mitmdump with the real SDKs.

Claude Code's client (the anthropic SDK) falls back to a chat-only and a
Responses-only provider when its Messages provider is overloaded; the
openai SDK (chat and Responses) falls back to a provider that speaks only
Messages. Each completes a streamed tool round trip: the first turn ends as
a tool call (`tool_use` / `tool_calls` / a function_call item), the tool's
result goes back under the id the client was given, and the second turn
answers with the text. Usage is counted either way. (A Messages provider
without its endpoint, switched to chat: tests/engine/test_protocol_switch.py.)
"""

from __future__ import annotations

import anthropic
import pytest

from support.fakemessages import MESSAGES, OVERLOADED
from support.fakeprovider import CHAT, LIMITED, RESPONSES, Reply

MODEL = "claude-x"
TOOLS_MESSAGES = [{"name": "get_weather", "description": "The weather in a city",
                   "input_schema": {"type": "object",
                                    "properties": {"city": {"type": "string"}}}}]
TOOLS_CHAT = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
TOOLS_RESPONSES = [{"type": "function", "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def anthropic_client(running, fake) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url.removesuffix("/v1"),
                               api_key="sk-ant-client-own", max_retries=0,
                               http_client=running.http_client(timeout=30))


@pytest.fixture(params=["chat", "responses"])
def claude_to_openai(request, shared):
    """Claude Code's provider (Messages, one key) and an OpenAI-style fallback
    that speaks only `request.param`."""
    primary = shared.fake("anthropic", paths=(MESSAGES,))
    path = CHAT if request.param == "chat" else RESPONSES
    fallback = shared.fake(f"only-{request.param}", paths=(path,))
    running = shared.proxy(f"""
providers:
  anthropic: {{base_url: "{primary.base_url}", protocol: messages, keys: [sk-ant-api03-one]}}
  openaiish: {{base_url: "{fallback.base_url}", protocol: {request.param}, keys: [sk-oai-one]}}
fallbacks: {{"*": [openaiish/*]}}
cooldown: {{max_wait: 0s}}
""")
    return primary, fallback, running, request.param


def test_e2e_claude_codes_client_completes_a_tool_round_trip_on_an_openai_fallback(
        claude_to_openai):
    primary, fallback, running, protocol = claude_to_openai
    primary.script(Reply(status=529, body=OVERLOADED), Reply(status=529, body=OVERLOADED))
    client = anthropic_client(running, primary)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    with client.messages.stream(model=MODEL, max_tokens=256, messages=ask,
                                tools=TOOLS_MESSAGES) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"  # a tool call ends as a tool call
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    assert call.id.startswith("toolu_")  # an id of the client's own shape
    answer = [*ask, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                            "content": "18 degrees"}]}]
    with client.messages.stream(model=MODEL, max_tokens=256, messages=answer,
                                tools=TOOLS_MESSAGES) as stream:
        second = stream.get_final_message()
    assert second.stop_reason == "end_turn"
    assert "".join(b.text for b in second.content if b.type == "text") == \
        "weather: 18 degrees"
    assert first.usage.output_tokens > 0 and second.usage.input_tokens > 0
    # The fallback got the result under the id it had given, in its own shape.
    sent = fallback.seen[-1].body
    if protocol == "chat":
        (tool,) = [m for m in sent["messages"] if m["role"] == "tool"]
        assert tool["tool_call_id"] == "call_fake" and tool["content"] == "18 degrees"
    else:
        (output,) = [i for i in sent["input"] if i.get("type") == "function_call_output"]
        assert output["call_id"] == "call_fake"
    line = running.log_line("messages claude-x stream", seconds=10)
    assert f"openaiish[{protocol}] 200" in line and " in, " in line and " tokens" in line, line


@pytest.fixture
def openai_to_claude(shared):
    """An OpenAI-style provider (the client's key) and a fallback that speaks only Messages."""
    primary = shared.fake("primary")
    claude = shared.fake("claude-only", paths=(MESSAGES,))
    running = shared.proxy(f"""
providers:
  primary: {{base_url: "{primary.base_url}"}}
  claude: {{base_url: "{claude.base_url}", protocol: messages, keys: [sk-ant-api03-fallback]}}
fallbacks: {{"*": [claude/*]}}
cooldown: {{max_wait: 0s}}
""")
    return primary, claude, running


def test_e2e_the_openai_chat_sdk_completes_a_tool_round_trip_on_a_messages_fallback(
        openai_to_claude):
    primary, claude, running = openai_to_claude
    primary.script(LIMITED)  # the client's key cools: both turns go to Claude
    sdk = running.openai(primary.base_url)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    with sdk.chat.completions.stream(model=MODEL, messages=ask, tools=TOOLS_CHAT,
                                     stream_options={"include_usage": True}) as stream:
        first = stream.get_final_completion()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert first.usage is not None and first.usage.completion_tokens > 0
    answer = [*ask, choice.message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"}]
    with sdk.chat.completions.stream(model=MODEL, messages=answer, tools=TOOLS_CHAT) as stream:
        second = stream.get_final_completion()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "weather: 18 degrees"
    sent = claude.seen[-1]
    assert sent.headers["x-api-key"] == "sk-ant-api03-fallback"
    results = [b for m in sent.body["messages"] if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert [r["tool_use_id"] for r in results] == ["toolu_fake"]  # Claude's own id, back
    line = running.log_line("chat claude-x stream")
    assert "claude[messages] 200" in line and " in, 3 out" in line, line


def test_e2e_the_openai_responses_sdk_completes_a_tool_round_trip_on_a_messages_fallback(
        openai_to_claude):
    primary, claude, running = openai_to_claude
    primary.script(LIMITED)
    sdk = running.openai(primary.base_url)
    with sdk.responses.stream(model=MODEL, input="Weather in Paris?",
                              tools=TOOLS_RESPONSES) as stream:
        first = stream.get_final_response()
    (call,) = [i for i in first.output if i.type == "function_call"]
    assert call.name == "get_weather" and first.status == "completed"
    assert first.usage is not None and first.usage.output_tokens > 0
    events = []
    with sdk.responses.stream(model=MODEL, input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id,
             "output": "18 degrees"}], tools=TOOLS_RESPONSES) as stream:
        events = [e.type for e in stream]
        second = stream.get_final_response()
    assert second.output_text == "weather: 18 degrees"
    assert events[-1] == "response.completed"
    results = [b for m in claude.seen[-1].body["messages"] if isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert [r["tool_use_id"] for r in results] == ["toolu_fake"]

