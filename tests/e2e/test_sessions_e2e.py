"""Agent sessions survive failover, end to end (#19): Codex-shaped turns
(`store: false`, `include: ["reasoning.encrypted_content"]`, the whole
conversation as `input` with earlier sealed reasoning, `prompt_cache_key`)
through a real mitmdump, against a fake that, like real accounts, refuses
reasoning sealed by another key and keeps a prompt cache per key."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import httpx
import pytest

from support.fakeprovider import CHAT, RESPONSES, Reply, sealed_for
from support.proxy import running_proxy

# Keys of equal length: the solo key's answers are exactly as long as the pair's.
K1, K2, KS, KC = "sk-sess-key-0001", "sk-sess-key-0002", "sk-sess-solo-001", "sk-sess-chat-01"
CONFIG = """
providers:
  p: {{base_url: "{p}", keys: [{k1}, {k2}]}}
  solo: {{base_url: "{solo}", keys: [{ks}]}}
  c: {{base_url: "{c}", keys: [{kc}]}}
fallbacks: {{"m": [c/m]}}
cooldown: {{max_wait: 0s}}
"""
RATE_LIMITED = Reply(status=429, headers={"retry-after": "1"},
                     body={"error": {"message": "Rate limit reached",
                                     "code": "rate_limit_exceeded"}})


@pytest.fixture
def setup(shared):
    p = shared.fake("p")
    # The same name as p: its answers (ids, texts) are p's, byte for byte.
    solo = shared.fake("p", paths=(CHAT, RESPONSES))
    chat_only = shared.fake("chatonly", paths=(CHAT,))
    config = CONFIG.format(p=p.base_url, solo=solo.base_url, c=chat_only.base_url,
                           k1=K1, k2=K2, ks=KS, kc=KC)
    running = shared.proxy(config)
    with running.http_client(timeout=30) as client:
        yield p, solo, chat_only, running, client, config


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def codex_turn(client: httpx.Client, base_url: str, history: list[dict], text: str,
               session: str, stream: bool = True) -> dict:
    """One Codex-shaped turn; the response object as completed. `history`
    grows by the turn's input and output, as Codex keeps it."""
    body = {"model": "m", "input": [*history, user(text)], "store": False, "stream": stream,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": session,
            "reasoning": {"effort": "medium"}, "instructions": "You are a coding agent."}
    answer = client.post(f"{base_url}/responses", json=body,
                         headers={"authorization": "Bearer sk-codex-login"})
    assert answer.status_code == 200, answer.text
    if stream:
        events = [json.loads(line[6:]) for line in answer.text.splitlines()
                  if line.startswith("data: ") and line[6:].startswith("{")]
        response = next(e["response"] for e in events if e.get("type") == "response.completed")
    else:
        response = answer.json()
    history += [user(text), *response["output"]]
    return response


def sealed(seen) -> set[str]:
    """Whose sealed reasoning a request carried."""
    return {i["encrypted_content"] for i in seen.body.get("input", [])
            if isinstance(i, dict) and i.get("type") == "reasoning" and "encrypted_content" in i}


def status(running) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{running.status_port}/status",
                                timeout=10) as answer:
        return json.load(answer)


def cached_tokens(running, provider: str) -> float:
    """switchback_tokens_total{kind="cached"} of one provider, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{running.status_port}/metrics",
                                timeout=10) as answer:
        text = answer.read().decode()
    pattern = re.compile(r'^switchback_tokens_total\{(.*)\} ([0-9.e+]+)$', re.M)
    return sum(float(value) for labels, value in pattern.findall(text)
               if f'provider="{provider}"' in labels and 'kind="cached"' in labels)


def test_a_ten_turn_session_stays_on_one_key_and_keeps_its_cache(setup):
    p, solo, chat_only, running, client, _ = setup
    before_p, before_solo = cached_tokens(running, "p"), cached_tokens(running, "solo")
    paired_history: list[dict] = []
    alone_history: list[dict] = []
    paired, alone = [], []
    for n in range(10):
        paired.append(codex_turn(client, p.base_url, paired_history, f"step {n}", "session-ten"))
        alone.append(codex_turn(client, solo.base_url, alone_history, f"step {n}", "session-1"))
    assert {s.key for s in p.seen} == {K1} and len(p.seen) == 10  # one key, no retry, no 400
    pair = cached_tokens(running, "p") - before_p
    one = cached_tokens(running, "solo") - before_solo
    per_turn = [r["usage"]["input_tokens_details"]["cached_tokens"] for r in paired]
    assert per_turn == [r["usage"]["input_tokens_details"]["cached_tokens"] for r in alone]
    print(f"cached tokens over ten turns: two keys {pair:.0f}, one key alone {one:.0f} "
          f"({pair / one:.0%})")
    assert one > 0 and pair / one >= 0.9
    assert status(running)["sessions"]["pinned"] == 2


def test_new_sessions_are_spread_over_the_keys(setup):
    p, solo, chat_only, running, client, _ = setup
    histories: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    for n in range(3):
        for name, history in histories.items():
            codex_turn(client, p.base_url, history, f"{name} {n}", f"session-{name}")
    by_session = {}
    for seen in p.seen:
        by_session.setdefault(seen.body["prompt_cache_key"], set()).add(seen.key)
    assert by_session == {"session-a": {K1}, "session-b": {K2}, "session-c": {K1}}


def test_a_429_mid_session_moves_it_to_the_other_key_and_it_stays_there(setup):
    p, solo, chat_only, running, client, _ = setup
    history: list[dict] = []
    for n in range(3):
        codex_turn(client, p.base_url, history, f"step {n}", "session-429")
    p.script(RATE_LIMITED)
    codex_turn(client, p.base_url, history, "step 3", "session-429")  # no 400 reaches us
    assert [s.key for s in p.seen[3:]] == [K1, K2]
    assert sealed(p.seen[-1]) == set()  # K1's reasoning left out: K2 could not read it
    assert "left out 3 reasoning item(s)" in running.log_line("left out")
    # K1 is back after its second; the session stays with K2, which has its cache now.
    time.sleep(1.1)
    for n in range(4, 7):
        response = codex_turn(client, p.base_url, history, f"step {n}", "session-429")
        assert p.seen[-1].key == K2 and sealed(p.seen[-1]) == {sealed_for(K2)}
    assert response["usage"]["input_tokens_details"]["cached_tokens"] > 0
    assert status(running)["sessions"]["reasoning_left_out"] == 3 * 4


def test_a_session_that_fails_over_to_a_chat_only_provider_completes(setup):
    p, solo, chat_only, running, client, _ = setup
    history: list[dict] = []
    codex_turn(client, p.base_url, history, "step 0", "session-chat")
    overloaded = Reply(status=503, body={"error": {"message": "overloaded"}})
    p.script(overloaded, overloaded)  # a one-off 503 is retried once, then the next provider
    response = codex_turn(client, p.base_url, history, "step 1", "session-chat")
    assert response["output"][-1]["content"][0]["text"] == "hello from chatonly"
    assert "dropped 1 reasoning item(s) (translated to chat)" in running.log_line("dropped")
    codex_turn(client, p.base_url, history, "step 2", "session-chat")  # stays there
    assert chat_only.count(CHAT) == 2 and len(p.seen) == 3


def test_after_a_restart_reasoning_of_an_unknown_producer_still_works(setup, tmp_path, confdir,
                                                                      server_cert):
    p, solo, chat_only, running, client, config = setup
    history: list[dict] = []
    for n in range(2):
        codex_turn(client, p.base_url, history, f"step {n}", "session-restart")
    assert {s.key for s in p.seen} == {K1}
    # A new Switchback on memory state: it knows neither the session nor the reasoning.
    with running_proxy(tmp_path, confdir, server_cert.ca, config, status=True) as restarted, \
            restarted.http_client(timeout=30) as fresh_client:
        p.script(RATE_LIMITED)  # K1 is busy: the turn goes to K2 with K1's reasoning
        codex_turn(fresh_client, p.base_url, history, "step 2", "session-restart")
        assert [s.key for s in p.seen[2:]] == [K1, K2, K2]
        assert sealed(p.seen[3]) == {sealed_for(K1)} and sealed(p.seen[4]) == set()
        assert "again without" in restarted.log_line("again without")
        # The next turn stays on K2, and K1's items are now known for what they are.
        codex_turn(fresh_client, p.base_url, history, "step 3", "session-restart")
        assert p.seen[-1].key == K2 and sealed(p.seen[-1]) == {sealed_for(K2)}
        assert len(p.seen) == 6


def test_unknown_reasoning_that_its_producer_reads_is_learned(setup, tmp_path, confdir,
                                                              server_cert):
    p, solo, chat_only, running, client, config = setup
    history: list[dict] = []
    codex_turn(client, p.base_url, history, "step 0", "session-learn")
    with running_proxy(tmp_path, confdir, server_cert.ca, config, status=True) as restarted, \
            restarted.http_client(timeout=30) as fresh_client:
        codex_turn(fresh_client, p.base_url, history, "step 1", "session-learn")
        assert p.seen[-1].key == K1 and sealed(p.seen[-1]) == {sealed_for(K1)}
        assert status(restarted)["sessions"] == {"pinned": 1, "reasoning_known": 1,
                                                 "reasoning_left_out": 0}
