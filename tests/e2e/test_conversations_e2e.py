"""Responses conversations survive failover, end to end: the fake scopes
response ids and encrypted reasoning to the key that made them, as real
providers scope them to an account, so a follow-up only works where it goes
back to its producer, or where Switchback replays the history."""

from __future__ import annotations

import openai
import pytest

from support.fakeprovider import CHAT, RESPONSES, Reply

K1, K2, KC = "sk-conv-key-0001", "sk-conv-key-0002", "sk-conv-chat-0003"
SEALED = {"include": ["reasoning.encrypted_content"]}


@pytest.fixture
def setup(shared):
    p = shared.fake("p")
    chat_only = shared.fake("chatonly", paths=(CHAT,))
    running = shared.proxy(f"""
providers:
  p: {{base_url: "{p.base_url}", keys: [{K1}, {K2}]}}
  c: {{base_url: "{chat_only.base_url}", keys: [{KC}]}}
fallbacks: {{"*": [c/*]}}
""")
    return p, chat_only, running, running.openai(p.base_url)


def texts(items: list[dict]) -> list[str]:
    """The text of each message item (or chat message), in order."""
    out = []
    for item in items:
        content = item.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.append("".join(part.get("text", "") for part in content))
    return out


def test_a_follow_up_goes_back_to_the_key_that_made_the_response(setup):
    p, chat_only, running, client = setup
    first = client.responses.create(model="m", input="hello")
    assert p.seen[-1].key == K1
    second = client.responses.create(model="m", input="again", previous_response_id=first.id)
    # Rotation alone would have picked K2; only K1 can continue its own response.
    assert second.output_text == "hello from p" and p.seen[-1].key == K1
    assert p.seen[-1].body["previous_response_id"] == first.id


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_when_the_producer_fails_the_history_goes_to_the_next_key(setup, stream):
    p, chat_only, running, client = setup
    if stream:
        events = list(client.responses.create(model="m", input="hello", stream=True, **SEALED))
        first_id = events[-1].response.id
    else:
        first_id = client.responses.create(model="m", input="hello", **SEALED).id
    p.script(Reply(status=429, headers={"retry-after": "30"},
                   body={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}))
    second = client.responses.create(model="m", input="and then?",
                                      previous_response_id=first_id, **SEALED)
    assert second.output_text == "hello from p"
    replayed = p.seen[-1]
    assert replayed.key == K2 and "previous_response_id" not in replayed.body
    assert texts(replayed.body["input"]) == ["hello", "hello from p", "and then?"]
    # K1's sealed reasoning was left out: K2's account would refuse it (the fake does).
    assert not any(i.get("type") == "reasoning" for i in replayed.body["input"])
    log = running.output()
    assert "replayed history" in log and "left out 1 reasoning item(s)" in log


def test_a_conversation_continues_on_a_chat_fallback(setup):
    p, chat_only, running, client = setup
    first = client.responses.create(model="m", input="hello")
    overloaded = Reply(status=503, body={"error": {"message": "overloaded"}})
    p.script(overloaded, overloaded)  # a one-off 503 is retried once (#17)
    second = client.responses.create(model="m", input="and then?",
                                      previous_response_id=first.id)
    assert second.output_text == "hello from chatonly"
    assert texts(chat_only.seen[-1].body["messages"]) == ["hello", "hello from p", "and then?"]
    # ... and the next turn continues from there: back to its producer first.
    third = client.responses.create(model="m", input="last", previous_response_id=second.id)
    assert third.output_text == "hello from chatonly"
    assert texts(chat_only.seen[-1].body["messages"]) == [
        "hello", "hello from p", "and then?", "hello from chatonly", "last"]


def test_an_unknown_conversation_goes_only_to_its_provider_and_its_error_comes_back(setup):
    p, chat_only, running, client = setup
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="m", input="hi", previous_response_id="resp_elsewhere")
    assert caught.value.body["code"] == "previous_response_not_found"  # the provider's own
    assert p.count(RESPONSES) == 1 and chat_only.count() == 0


def test_clients_that_send_the_whole_conversation_are_unchanged(setup):
    p, chat_only, running, client = setup
    p.script(Reply(status=429, body={"error": {"message": "Rate limit reached"}}))
    history = [{"role": "user", "content": "hello"},
               {"role": "assistant", "content": "hello from p"},
               {"role": "user", "content": "and then?"}]
    client.responses.create(model="m", input=history, store=False)
    assert [s.key for s in p.seen] == [K1, K2]
    assert p.seen[0].body == p.seen[1].body  # the same request, to the next key
    assert p.seen[1].body["input"] == history and p.seen[1].body["store"] is False


def test_another_clients_conversation_is_never_handed_over(setup):
    p, chat_only, running, client = setup
    first = client.responses.create(model="m", input="my secret plan")
    stranger = running.openai(p.base_url, api_key="sk-someone-else")
    p.script(Reply(status=429, headers={"retry-after": "30"},
                   body={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}))
    with pytest.raises(openai.RateLimitError):
        stranger.responses.create(model="m", input="what was it?", previous_response_id=first.id)
    # Only the producer was asked, with the id (its account decides); nothing was replayed.
    assert [s.body.get("previous_response_id") for s in p.seen[1:]] == [first.id]
    assert chat_only.count() == 0
    assert all("my secret plan" not in str(s.body) for s in p.seen[1:] + chat_only.seen)
