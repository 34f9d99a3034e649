"""Responses conversations as items: replay for another candidate, sealed
reasoning kept for its producer, records that survive a round trip."""

from __future__ import annotations

import pytest

from switchback.protocols.history import Turn, answered, extend, input_items, replay, sealed

USER = {"role": "user", "content": "hi"}
SEALED = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA…"}
OPEN_REASONING = {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text",
                                                                   "text": "thought"}]}
ANSWER = {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
          "content": [{"type": "output_text", "text": "hello", "annotations": []}]}
HISTORY = (("", USER), ("p#k1", SEALED), ("p#k1", OPEN_REASONING), ("p#k1", ANSWER))


@pytest.mark.parametrize("value,items", [
    ("hi", [USER]),
    ([USER, "junk", ANSWER], [USER, ANSWER]),
    (None, []),
    (7, []),
])
def test_input_items(value, items):
    assert input_items(value) == items


@pytest.mark.parametrize("item,is_sealed", [
    (SEALED, True), (OPEN_REASONING, False), ({**SEALED, "encrypted_content": ""}, False),
    (ANSWER, False),
])
def test_sealed(item, is_sealed):
    assert sealed(item) is is_sealed


@pytest.mark.parametrize("to,kept,left_out", [
    ("p#k1", [USER, SEALED, OPEN_REASONING, ANSWER], 0),  # its producer reads it
    ("p#k2", [USER, OPEN_REASONING, ANSWER], 1),  # another account cannot
    ("other#k9", [USER, OPEN_REASONING, ANSWER], 1),
])
def test_replay_inlines_history_and_keeps_sealed_reasoning_for_its_producer(to, kept, left_out):
    request = {"model": "m", "previous_response_id": "resp_1", "input": "and then?",
               "store": True}
    body, dropped = replay(request, HISTORY, to)
    assert "previous_response_id" not in body and body["store"] is True
    assert body["input"] == [*kept, {"role": "user", "content": "and then?"}]
    assert dropped == left_out
    assert request["input"] == "and then?"  # the client's body is left alone


def test_extend_records_input_and_output_with_their_producer():
    turn = extend(HISTORY, {"input": [{"role": "user", "content": "more"}]}, [ANSWER, "junk"],
                  "q#k3")
    assert turn.by == "q#k3"
    assert turn.items == (*HISTORY, ("", {"role": "user", "content": "more"}), ("q#k3", ANSWER))


def test_a_turn_survives_its_text_form():
    turn = Turn(HISTORY, "p#k1")
    assert Turn.loads(turn.dumps()) == turn
    assert Turn.loads("not json") is None and Turn.loads('{"items": 3}') is None


@pytest.mark.parametrize("response,found", [
    ({"id": "resp_1", "output": [ANSWER, 4]}, ("resp_1", [ANSWER])),
    ({"id": "resp_1"}, ("resp_1", [])),
    ({"output": []}, None),
    (None, None),
    ([], None),
])
def test_answered(response, found):
    assert answered(response) == found
