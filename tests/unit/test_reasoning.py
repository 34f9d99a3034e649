"""Sealed reasoning goes only where it can be read: tables over Codex-shaped inputs."""

from __future__ import annotations

import pytest

from switchback.protocols.reasoning import mark, marks, refused_as_unreadable, sift

A_SEALED = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA-sealed-by-a"}
B_SEALED = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA-sealed-by-b"}
PLAIN = {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "hm"}]}
USER = {"role": "user", "content": "fix the bug"}
CALL = {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{}"}
A, B = mark(A_SEALED), mark(B_SEALED)


def test_a_mark_tells_sealed_items_apart_even_with_one_id():
    assert A and B and A != B  # same id, different accounts: different marks
    assert mark(PLAIN) is None and mark(USER) is None and mark("text") is None
    assert marks([USER, A_SEALED, CALL, B_SEALED]) == [A, B]


@pytest.mark.parametrize(("producers", "keep_unknown", "kept", "left_out", "unknown"), [
    ({A: "p#a", B: "p#b"}, True, [USER, A_SEALED, CALL], 1, 0),  # B's item is not for p#a
    ({A: "p#a"}, True, [USER, A_SEALED, CALL, B_SEALED], 0, 1),  # B's producer unknown: as sent
    ({A: "p#a"}, False, [USER, A_SEALED, CALL], 1, 0),  # ... or left out after a refusal
    ({}, True, [USER, A_SEALED, CALL, B_SEALED], 0, 2),
    ({A: "q#x", B: "q#y"}, True, [USER, CALL], 2, 0),  # another provider reads neither
])
def test_sift_leaves_out_what_the_candidate_cannot_read(producers, keep_unknown, kept, left_out,
                                                       unknown):
    body = {"model": "m", "store": False, "input": [USER, A_SEALED, CALL, B_SEALED]}
    sifted = sift(body, producers, "p#a", keep_unknown)
    assert sifted.body["input"] == kept
    assert (sifted.left_out, sifted.unknown) == (left_out, unknown)
    assert sifted.body["model"] == "m" and body["input"] == [USER, A_SEALED, CALL, B_SEALED]


def test_sift_leaves_plain_reasoning_and_string_input_alone():
    assert sift({"input": [PLAIN, USER]}, {}, "p#a").body["input"] == [PLAIN, USER]
    assert sift({"input": "hi"}, {A: "x"}, "p#a").body == {"input": "hi"}


@pytest.mark.parametrize(("text", "refused"), [
    ("The encrypted content for item rs_68a3 could not be verified.", True),
    ("Invalid encrypted_content in reasoning item", True),
    ("encrypted content cannot be decrypted with this organization's key", True),
    ("Rate limit reached for gpt-5 in organization org-1", False),
    ("Invalid 'input[3].content': string too long", False),
])
def test_the_refusal_of_unreadable_reasoning_is_recognised(text, refused):
    assert refused_as_unreadable(text) is refused
