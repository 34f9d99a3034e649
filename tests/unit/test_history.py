"""Responses conversations as items: replay for another candidate, sealed
reasoning kept for its producer, records that survive a round trip."""

from __future__ import annotations

import pytest

from switchback.protocols.history import Turn, answered, carried, extend, input_items, replay

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


@pytest.mark.parametrize("owner,item,to,expected", [
    ("", USER, "p#k2", USER),  # the client's own words go anywhere
    ("p#k1", SEALED, "p#k1", SEALED),  # its producer reads its reasoning
    ("p#k1", SEALED, "p#k2", None),  # another account cannot decrypt it
    ("p#k1", OPEN_REASONING, "p#k2", None),  # nor find it by its id
    ("p#k1", ANSWER, "p#k1", ANSWER),
    ("p#k1", ANSWER, "q#k9", {k: v for k, v in ANSWER.items() if k != "id"}),
])
def test_what_each_candidate_may_be_handed(owner, item, to, expected):
    assert carried(owner, item, to) == expected


ANSWER_ELSEWHERE = {k: v for k, v in ANSWER.items() if k != "id"}


@pytest.mark.parametrize("to,kept,left_out", [
    ("p#k1", [USER, SEALED, OPEN_REASONING, ANSWER], 0),  # its producer reads it all
    ("p#k2", [USER, ANSWER_ELSEWHERE], 2),  # another account gets no reasoning, no ids
    ("other#k9", [USER, ANSWER_ELSEWHERE], 2),
])
def test_replay_inlines_history_and_keeps_reasoning_with_its_producer(to, kept, left_out):
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
    turn = Turn(HISTORY, "p#k1", "#c11e47")
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
