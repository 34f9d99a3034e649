"""Two mitmdump replicas on one real redis-server: what one learns the other
honours at once, keys rotate across them, a translated conversation begun on
one continues on the other, and losing Redis mid-run loses no call."""

from __future__ import annotations

import json
import time
import urllib.request
from contextlib import ExitStack

import pytest

from support.fakeprovider import CHAT, FakeProvider, Reply
from support.proxy import running_proxy
from support.redisserver import RedisServer

K1, K2 = "sk-replica-key-0001", "sk-replica-key-0002"


def status(running) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{running.status_port}/status",
                                timeout=10) as answer:
        return json.load(answer)


def ask(running, base_url: str) -> str:
    return running.openai(base_url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, confdir, server_cert):
    """A fake with two keys, a chat-only fake, Redis, and replicas A and B."""
    with ExitStack() as stack:
        keyed = stack.enter_context(FakeProvider(server_cert, "keyed"))
        chat_only = stack.enter_context(FakeProvider(server_cert, "chatonly", paths=(CHAT,)))
        redis = stack.enter_context(RedisServer(tmp_path_factory.mktemp("redis")))
        config = f"""
state: {{url: "{redis.url}", prefix: replicas-test}}
providers:
  keyed: {{base_url: "{keyed.base_url}", keys: [{K1}, {K2}]}}
  only: {{base_url: "{chat_only.base_url}"}}
cooldown: {{max_wait: 0s}}
"""
        a, b = (stack.enter_context(running_proxy(tmp_path_factory.mktemp(name), confdir,
                                                  server_cert.ca, config, status=True))
                for name in ("a", "b"))
        yield keyed, chat_only, redis, a, b


@pytest.fixture
def fresh(cluster):
    keyed, chat_only, redis, a, b = cluster
    if redis.process is None:
        redis.start()
    deadline = time.monotonic() + 10
    while not (status(a)["state"]["healthy"] and status(b)["state"]["healthy"]):
        assert time.monotonic() < deadline, "the replicas did not (re)join Redis"
        time.sleep(0.1)
    a.fresh()  # a reset on one replica clears the shared state for both
    time.sleep(0.05)
    keyed.reset()
    chat_only.reset()
    return cluster


def test_both_replicas_report_the_shared_state(fresh):
    keyed, chat_only, redis, a, b = fresh
    for replica in (a, b):
        assert status(replica)["state"] == {"backend": "redis", "healthy": True}
        with urllib.request.urlopen(f"http://127.0.0.1:{replica.status_port}/metrics") as m:
            assert "switchback_state_backend_up 1.0" in m.read().decode()


def test_a_429_through_one_replica_makes_the_other_skip_that_key(fresh):
    keyed, chat_only, redis, a, b = fresh
    keyed.script(Reply(status=429, headers={"retry-after": "30"},
                       body={"error": {"message": "Rate limit reached"}}))
    assert ask(a, keyed.base_url) == "hello from keyed"  # K1 429 → K2
    learned = time.perf_counter()
    deadline = learned + 5
    while not any(c["provider"] == "keyed" for c in status(b)["cooldowns"]):
        assert time.perf_counter() < deadline
        time.sleep(0.002)
    print(f"agreement through two mitmdumps: {(time.perf_counter() - learned) * 1000:.0f} ms "
          "(status polling included)")
    assert ask(b, keyed.base_url) == "hello from keyed"
    assert [s.key for s in keyed.seen] == [K1, K2, K2]  # B never tried the cooling K1


def test_keys_rotate_across_replicas(fresh):
    keyed, chat_only, redis, a, b = fresh
    for replica in (a, b, a, b):
        ask(replica, keyed.base_url)
        time.sleep(0.02)  # the use reaches the other replica in about a millisecond
    assert [s.key for s in keyed.seen] == [K1, K2, K1, K2]


def test_a_translated_conversation_begun_on_one_replica_continues_on_the_other(fresh):
    keyed, chat_only, redis, a, b = fresh
    first = a.openai(chat_only.base_url).responses.create(model="m", input="hello")
    second = b.openai(chat_only.base_url).responses.create(
        model="m", input="and then?", previous_response_id=first.id)
    assert second.output_text == "hello from chatonly"
    assert [m["content"] for m in chat_only.seen[-1].body["messages"]] == [
        "hello", "hello from chatonly", "and then?"]


def test_losing_redis_mid_run_loses_no_call_and_the_replicas_rejoin(fresh):
    keyed, chat_only, redis, a, b = fresh
    redis.stop()
    for _ in range(5):
        for replica in (a, b):  # every call served: none waits on the missing Redis
            assert ask(replica, keyed.base_url) == "hello from keyed"
    assert not status(a)["state"]["healthy"] and not status(b)["state"]["healthy"]
    keyed.script(Reply(status=429, headers={"retry-after": "30"},
                       body={"error": {"message": "Rate limit reached"}}))
    ask(a, keyed.base_url)  # A learns of a cooldown while Redis is away
    cooling = [c["key"] for c in status(a)["cooldowns"] if c["provider"] == "keyed"]
    redis.start()
    deadline = time.monotonic() + 15
    while not (status(a)["state"]["healthy"] and status(b)["state"]["healthy"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while [c["key"] for c in status(b)["cooldowns"] if c["provider"] == "keyed"] != cooling:
        assert time.monotonic() < deadline, "A's cooldown was not written through"
        time.sleep(0.05)


def codex_turn(running, base_url: str, history: list, text: str, session: str) -> None:
    """A Codex-shaped turn (`store: false`, sealed reasoning, `prompt_cache_key`)."""
    history.append({"role": "user", "content": text})
    response = running.openai(base_url).responses.create(
        model="m", input=history, store=False, include=["reasoning.encrypted_content"],
        prompt_cache_key=session)
    history.extend(item.model_dump(exclude_none=True) for item in response.output)


def test_two_replicas_agree_on_a_sessions_key(fresh):
    keyed, chat_only, redis, a, b = fresh
    session: list = []
    codex_turn(a, keyed.base_url, session, "hello", "session-shared")  # a new session: K1
    deadline = time.monotonic() + 5
    while status(b)["sessions"]["pinned"] < 1:
        assert time.monotonic() < deadline, "B never heard of the session"
        time.sleep(0.01)
    # B's rotation alone would pick K2 (K1 was just used); the session goes to K1.
    for turn, replica in enumerate((b, a, b)):
        codex_turn(replica, keyed.base_url, session, f"turn {turn}", "session-shared")
    assert [s.key for s in keyed.seen] == [K1] * 4
    assert sum(i.get("type") == "reasoning" and bool(i.get("encrypted_content"))
               for i in keyed.seen[-1].body["input"]) == 3  # K1's reasoning, all of it
    codex_turn(b, keyed.base_url, [], "hi", "another-session")  # a new one takes the other key
    assert keyed.seen[-1].key == K2
