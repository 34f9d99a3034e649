"""Protocol auto-switch end to end: the official openai SDK against fakes that
speak only one protocol, through a real mitmdump with Switchback. The SDK's
own typed parsing must succeed and the content must be what the fake made."""

from __future__ import annotations

import json

import openai
import pytest

from support.fakeprovider import CHAT, RESPONSES, TOOL_ARGUMENTS, Reply

WEATHER_TOOL_RESPONSES = {"type": "function", "name": "get_weather",
                          "description": "Weather for a city",
                          "parameters": {"type": "object",
                                         "properties": {"city": {"type": "string"}},
                                         "required": ["city"]}}
WEATHER_TOOL_CHAT = {"type": "function", "function": {
    k: v for k, v in WEATHER_TOOL_RESPONSES.items() if k != "type"}}


def single(fake, protocol: str | None = None) -> str:
    line = f", protocol: {protocol}" if protocol else ""
    return f'providers: {{only: {{base_url: "{fake.base_url}"{line}}}}}\n'


@pytest.fixture
def chat_only(shared):
    fake = shared.fake("chatonly", paths=(CHAT,))
    running = shared.proxy(single(fake))
    return fake, running, running.openai(fake.base_url)


@pytest.fixture
def responses_only(shared):
    fake = shared.fake("responsesonly", paths=(RESPONSES,))
    running = shared.proxy(single(fake))
    return fake, running, running.openai(fake.base_url)


def test_responses_create_on_chat_only_provider(chat_only):
    fake, running, client = chat_only
    answer = client.responses.create(model="gpt-4o", input="hi", instructions="be brief")
    assert answer.output_text == "hello from chatonly"
    assert answer.status == "completed" and answer.id.startswith("resp_")
    assert answer.usage.input_tokens == 5 and answer.usage.output_tokens == 3
    sent = [s for s in fake.seen if s.path.endswith(CHAT)][0].body
    assert sent["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hi"}]
    assert "only 404 (switch to chat) → only[chat] 200" in running.output()


def test_responses_stream_on_chat_only_provider(chat_only):
    fake, running, client = chat_only
    events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "hello from chatonly"
    assert events[-1].response.output[0].content[0].text == text
    assert fake.count(CHAT) == 1
    assert fake.seen[-1].body["stream_options"] == {"include_usage": True}


def test_responses_stream_helper_on_chat_only_provider(chat_only):
    fake, running, client = chat_only
    with client.responses.stream(model="gpt-4o", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "hello from chatonly"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_function_tool_round_trip_with_previous_response_id(chat_only, stream):
    fake, running, client = chat_only

    def create(**kwargs):
        if not stream:
            return client.responses.create(model="gpt-4o", tools=[WEATHER_TOOL_RESPONSES],
                                           **kwargs)
        with client.responses.stream(model="gpt-4o", tools=[WEATHER_TOOL_RESPONSES],
                                     **kwargs) as events:
            return events.get_final_response()

    first = create(input="weather in Paris?")
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == \
        [("get_weather", json.loads(TOOL_ARGUMENTS))]
    second = create(previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}])
    assert second.output_text == "weather: sunny"
    replayed = [s for s in fake.seen if s.path.endswith(CHAT)][-1].body["messages"]
    assert replayed[0] == {"role": "user", "content": "weather in Paris?"}
    assert replayed[1]["role"] == "assistant"
    assert replayed[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert replayed[2] == {"role": "tool", "tool_call_id": calls[0].call_id,
                           "content": "sunny"}


def test_unknown_previous_response_id_is_a_clear_404(chat_only):
    fake, running, client = chat_only
    client.responses.create(model="gpt-4o", input="hi")  # learn that only chat works
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-4o", input="more", previous_response_id="resp_nope")
    error = caught.value.body
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "previous_response_id"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_chat_completions_with_tools_on_responses_only_provider(responses_only, stream):
    fake, running, client = responses_only
    messages = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with client.beta.chat.completions.stream(model="gpt-4o", messages=messages,
                                                 tools=[WEATHER_TOOL_CHAT]) as events:
            answer = events.get_final_completion()
    else:
        answer = client.chat.completions.create(model="gpt-4o", messages=messages,
                                                tools=[WEATHER_TOOL_CHAT])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == json.loads(TOOL_ARGUMENTS)
    sent = [s for s in fake.seen if s.path.endswith(RESPONSES)][0].body
    assert sent["tools"][0]["name"] == "get_weather"
    follow = client.chat.completions.create(model="gpt-4o", messages=[
        *messages, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "rainy"}],
        tools=[WEATHER_TOOL_CHAT])
    assert follow.choices[0].message.content == "weather: rainy"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_chat_text_on_responses_only_provider(responses_only, stream):
    fake, running, client = responses_only
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    if stream:
        chunks = list(client.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage.total_tokens == 8
        plain = list(client.chat.completions.create(model="gpt-4o", messages=messages,
                                                    stream=True))
        assert all(c.usage is None for c in plain)  # usage only when asked for
    else:
        text = client.chat.completions.create(model="gpt-4o", messages=messages) \
            .choices[0].message.content
    assert text == "hello from responsesonly"
    assert fake.seen[-1].body["instructions"] == "be brief"


def test_second_call_goes_straight_to_the_working_protocol(chat_only):
    fake, running, client = chat_only
    for _ in range(3):
        assert client.responses.create(model="gpt-4o", input="hi").output_text
    assert fake.count(RESPONSES) == 1  # probed once
    assert fake.count(CHAT) == 3


def test_configured_protocol_is_never_probed(fakes, proxy):
    fake = fakes("chatonly", paths=(CHAT,))
    running = proxy(single(fake, "chat"))
    client = running.openai(fake.base_url)
    assert client.responses.create(model="gpt-4o", input="hi").output_text
    assert fake.count(RESPONSES) == 0 and fake.count(CHAT) == 1


def test_the_fallback_that_served_is_the_one_cached(fakes, proxy):
    primary = fakes("primary")
    backup = fakes("backup", paths=(CHAT,))
    running = proxy(f"""
providers:
  primary: {{base_url: "{primary.base_url}"}}
  backup: {{base_url: "{backup.base_url}", keys: [sk-backup]}}
fallbacks: {{"*": [backup/*]}}
""")
    client = running.openai(primary.base_url)
    broken = Reply(status=500, body={"error": {"message": "boom"}})
    primary.script(broken, broken)
    for _ in range(2):
        assert client.responses.create(model="gpt-4o", input="hi").output_text == \
            "hello from backup"
    assert backup.count(RESPONSES) == 1 and backup.count(CHAT) == 2  # remembered: chat
    assert primary.count(RESPONSES) == 2  # primary never served: nothing cached for it


def test_model_not_found_is_not_mistaken_for_a_missing_endpoint(fakes, proxy):
    fake = fakes("p")
    running = proxy(single(fake))
    fake.script(Reply(status=404, body={"error": {"message": "The model `x` does not exist",
                                                  "type": "invalid_request_error",
                                                  "code": "model_not_found"}}))
    client = running.openai(fake.base_url)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="x", input="hi")
    assert fake.count(CHAT) == 0
