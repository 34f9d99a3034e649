"""Session affinity and what it remembers (#19): tables over the pure parts."""

from __future__ import annotations

import pytest

from switchback.plan import ahead, plan
from switchback.protocols.reasoning import reasoning_items, session_name
from switchback.recognise import fingerprint
from switchback.state.sessions import Sessions, session_key
from switchback.state.stores import MemoryStore

from test_core_units import CONFIG, TABLE, call

K1, K2, KB = (f"keyed{fingerprint('k1')}", f"keyed{fingerprint('k2')}",
              f"backup{fingerprint('kb')}")
CANDIDATES = plan(call("https://localhost:9003/v1/responses", {"model": "o3"}), CONFIG,
                  TABLE).candidates


@pytest.mark.parametrize(("owner", "order"), [
    (None, [K1, K2, KB]),  # no session (or a new one): rotation as planned
    (K1, [K1, K2, KB]),
    (K2, [K2, K1, KB]),  # the session's key ahead of rotation
    (KB, [KB, K1, K2]),  # a session that failed over to a fallback stays there
    ("gone#123", [K1, K2, KB]),  # its candidate is no longer configured
])
def test_a_session_goes_first_to_the_candidate_that_served_it(owner, order):
    assert [c.owner for c in ahead(CANDIDATES, owner)] == order


@pytest.mark.parametrize(("body", "name"), [
    ({"prompt_cache_key": "0199-session"}, "0199-session"),
    ({"messages": [], "prompt_cache_key": "chat-too"}, "chat-too"),
    ({"prompt_cache_key": ""}, None),
    ({"prompt_cache_key": 7}, None),
    ({}, None),
])
def test_a_call_names_its_session_by_its_prompt_cache_key(body, name):
    assert session_name(body) == name


@pytest.mark.parametrize(("items", "count"), [
    ([{"type": "reasoning", "encrypted_content": "x"}, {"type": "reasoning", "summary": []},
      {"role": "user", "content": "hi"}], 2),
    ("a string input", 0),
    ([], 0),
])
def test_reasoning_items_counts_what_a_translation_drops(items, count):
    assert reasoning_items({"input": items}) == count


def test_sessions_are_a_clients_own_and_remember_owners_and_producers():
    assert session_key("fp-a", "s") != session_key("fp-b", "s")  # another client's namesake
    assert session_key("fp-a", "s") == session_key("fp-a", "s")
    assert len(session_key("fp-a", "x" * 10_000)) == 32  # bounded, whatever the client sends
    now = [0.0]
    sessions = Sessions(MemoryStore(2, lambda: now[0]), MemoryStore(2, lambda: now[0]), ttl=60)
    sessions.pin("s1", K1)
    sessions.produced(["m1", "m1", "m2"], K1)
    assert sessions.owner("s1") == K1 and sessions.producers_of(["m1", "m2", "m3"]) == {
        "m1": K1, "m2": K1}
    sessions.pin("s2", K2)
    sessions.pin("s3", K2)  # the bound: the least recently used goes
    assert sessions.owner("s1") is None and sessions.pinned == 2
    now[0] = 61.0  # the TTL
    assert sessions.owner("s3") is None and sessions.producers_of(["m1"]) == {}
