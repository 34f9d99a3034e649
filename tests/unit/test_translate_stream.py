"""Stream translators, event by event: every emitted Responses event and chat
chunk is parsed with the openai SDK's own types, and the translation is the
same however the upstream bytes are split."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from switchback.protocols.sse import SseParser, encode
from switchback.protocols.shapers import ChatPassthrough, ResponsesPassthrough
from switchback.vocabulary import Protocol

CHAT, RESPONSES = Protocol.CHAT, Protocol.RESPONSES
from switchback.protocols.bridge import Bridge
from switchback.protocols.translate_stream import ChatToResponsesStream, ResponsesToChatStream

# The SDK's event union, keyed by each member's `type` literal: validating an
# event against its own class gives a precise error when a shape is wrong.
EVENT_CLASSES = {get_args(cls.model_fields["type"].annotation)[0]: cls
                 for cls in get_args(get_args(ResponseStreamEvent)[0])}
RID = "resp_abc"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
         "prompt_tokens_details": {"cached_tokens": 3},
         "completion_tokens_details": {"reasoning_tokens": 1}}
DONE = "[DONE]"


# ------------------------------------------------------------------ helpers


def run(translator: Any, upstream: bytes, pieces: list[bytes] | None = None) -> bytes:
    """Feed upstream bytes (whole, or in the given pieces) and end the stream."""
    parser, out = SseParser(), b""
    for piece in pieces or [upstream]:
        for event in parser.feed(piece):
            out += translator.feed(event)
    if (last := parser.close()) is not None:
        out += translator.feed(last)
    return out + translator.finish()


def chunk(delta: dict | None = None, finish: str | None = None, *, usage: dict | None = None,
          choices: bool = True) -> dict:
    body: dict = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 7,
                  "model": "up-model", "choices": []}
    if choices:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage:
        body["usage"] = usage
    return body


def call(index: int, args: str, call_id: str | None = None, name: str | None = None) -> dict:
    fragment: dict = {"index": index, "function": {"arguments": args}}
    if call_id:
        fragment |= {"id": call_id, "type": "function"}
    if name:
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


def chat_sse(*events: dict | str) -> bytes:
    return b"".join(encode(e) for e in events)


def responses_events(out: bytes) -> list[dict]:
    """Client-side view of a translated Responses stream, validated by the SDK."""
    events = [e.json() for e in SseParser().feed(out)]
    for n, event in enumerate(events):
        EVENT_CLASSES[event["type"]].model_validate(event)
        assert event["sequence_number"] == n
    for event in events:
        if "response" in event:
            Response.model_validate(event["response"])
            assert event["response"]["id"] == RID
    return events


def kinds(events: list[dict]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def chat_view(out: bytes) -> list[Any]:
    """Client-side view of a translated chat stream: per chunk its delta and
    finish_reason, `usage`, `error` or [DONE]; chunks validated by the SDK."""
    view: list[Any] = []
    for event in SseParser().feed(out):
        if event.data == DONE:
            view.append(DONE)
            continue
        body = event.json()
        if "error" in body:
            view.append(("error", body["error"]["message"]))
            continue
        ChatCompletionChunk.model_validate(body)
        assert (body["id"], body["object"], body["model"]) == (
            "chatcmpl-abc", "chat.completion.chunk", "up-model")
        if not body["choices"]:
            view.append(("usage", body["usage"]))
        else:
            choice = body["choices"][0]
            view.append((choice["delta"], choice["finish_reason"]))
    return view


def msg(text: str, n: int = 0, status: str = "completed") -> dict:
    return {"id": f"msg_abc_{n}", "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def fc(n: int, call_id: str, name: str, arguments: str) -> dict:
    return {"id": f"fc_abc_{n}", "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


START = ["created", "in_progress"]
TEXT_OPEN = ["output_item.added", "content_part.added"]
TEXT_CLOSE = ["output_text.done", "content_part.done", "output_item.done"]
CALL_CLOSE = ["function_call_arguments.done", "output_item.done"]
REASONING_OPEN = ["output_item.added", "reasoning_summary_part.added"]
REASONING_CLOSE = ["reasoning_summary_text.done", "reasoning_summary_part.done",
                   "output_item.done"]
ROLE = ({"role": "assistant", "content": ""}, None)

# ---------------------------------------------------- Chat → Responses cases
# (id, request, upstream chunks, event kinds, terminal status, final output)
CHAT_TO_RESPONSES = [
    ("text-with-empty-deltas",
     {"model": "m"},
     [chunk({"role": "assistant", "content": ""}), chunk({}), chunk({"content": "Hel"}),
      chunk({"content": ""}), chunk({"content": "lo"}), chunk({}, "stop"),
      chunk(choices=False, usage=USAGE), DONE],
     START + TEXT_OPEN + ["output_text.delta"] * 2 + TEXT_CLOSE + ["completed"],
     "completed", [msg("Hello")]),
    ("tool-call-split-across-many-chunks",
     {"model": "m"},
     [chunk({"role": "assistant", "content": None}), call(0, "", "c1", "lookup"),
      call(0, "{\"ci"), call(0, "ty\": "), call(0, "\"Par"), call(0, "is\"}"),
      chunk({}, "tool_calls"), chunk(choices=False, usage=USAGE), DONE],
     START + ["output_item.added"] + ["function_call_arguments.delta"] * 4 + CALL_CLOSE
     + ["completed"],
     "completed", [fc(0, "c1", "lookup", "{\"city\": \"Paris\"}")]),
    ("text-plus-tool-calls",
     {"model": "m"},
     [chunk({"content": "Let me look"}), call(0, "{}", "c1", "f"), chunk({}, "tool_calls"),
      chunk(choices=False, usage=USAGE)],
     START + TEXT_OPEN + ["output_text.delta"] + TEXT_CLOSE
     + ["output_item.added", "function_call_arguments.delta"] + CALL_CLOSE + ["completed"],
     "completed", [msg("Let me look"), fc(0, "c1", "f", "{}")]),
    ("parallel-tool-calls-interleaved",
     {"model": "m"},
     [call(0, "", "c1", "f"), call(1, "", "c2", "g"), call(0, "{\"a\":"), call(1, "{\"b\":"),
      call(0, "1}"), call(1, "2}"), chunk({}, "tool_calls"), chunk(choices=False, usage=USAGE)],
     START + ["output_item.added"] * 2 + ["function_call_arguments.delta"] * 4
     + CALL_CLOSE * 2 + ["completed"],
     "completed", [fc(0, "c1", "f", "{\"a\":1}"), fc(1, "c2", "g", "{\"b\":2}")]),
    ("arguments-before-name-are-held",
     {"model": "m"},
     [call(0, "{\"x\"", "c1"), call(0, ":1}", name="f"), chunk({}, "tool_calls"), DONE],
     START + ["output_item.added", "function_call_arguments.delta"] + CALL_CLOSE
     + ["completed"],
     "completed", [fc(0, "c1", "f", "{\"x\":1}")]),
    ("provider-without-call-ids",
     {"model": "m"},
     [chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
      chunk({}, "tool_calls"), DONE],
     START + ["output_item.added", "function_call_arguments.delta"] + CALL_CLOSE
     + ["completed"],
     "completed", [fc(0, "call_abc_0", "f", "{}")]),
    ("reasoning-then-text",
     {"model": "m"},
     [chunk({"reasoning_content": "Think"}), chunk({"reasoning_content": "ing"}),
      chunk({"reasoning": ""}), chunk({"content": "42"}), chunk({}, "stop"), DONE],
     START + REASONING_OPEN + ["reasoning_summary_text.delta"] * 2 + REASONING_CLOSE
     + TEXT_OPEN + ["output_text.delta"] + TEXT_CLOSE + ["completed"],
     "completed",
     [{"id": "rs_abc_0", "type": "reasoning",
       "summary": [{"type": "summary_text", "text": "Thinking"}]}, msg("42")]),
    ("refusal",
     {"model": "m"},
     [chunk({"refusal": "No"}), chunk({}, "stop"), DONE],
     START + ["output_item.added", "content_part.added", "refusal.delta", "refusal.done",
              "content_part.done", "output_item.done", "completed"],
     "completed",
     [{"id": "msg_abc_0", "type": "message", "role": "assistant", "status": "completed",
       "content": [{"type": "refusal", "refusal": "No"}]}]),
    ("custom-tool-call",
     {"model": "m", "tools": [{"type": "custom", "name": "apply_patch"}]},
     [call(0, "{\"input\": \"*** Begin", "c1", "apply_patch"), call(0, " Patch\"}"),
      chunk({}, "tool_calls"), DONE],
     START + ["output_item.added", "custom_tool_call_input.delta",
              "custom_tool_call_input.done", "output_item.done", "completed"],
     "completed",
     [{"id": "fc_abc_0", "type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
       "input": "*** Begin Patch"}]),
    ("length-is-incomplete",
     {"model": "m"},
     [chunk({"content": "cu"}), chunk({}, "length"), chunk(choices=False, usage=USAGE)],
     START + TEXT_OPEN + ["output_text.delta"] + TEXT_CLOSE + ["incomplete"],
     "incomplete", [msg("cu", status="incomplete")]),
    ("done-without-finish-reason-fails",
     {"model": "m"},
     [chunk({"content": "Hel"}), DONE],
     START + TEXT_OPEN + ["output_text.delta", "failed"],
     "failed", [msg("", status="in_progress") | {"content": []}]),
    ("stream-cut-without-finish-reason-fails",
     {"model": "m"},
     [chunk({"content": "Hel"})],
     START + TEXT_OPEN + ["output_text.delta", "failed"],
     "failed", [msg("", status="in_progress") | {"content": []}]),
    ("finish-reason-then-cut-completes",
     {"model": "m"},
     [chunk({"content": "ok"}, "stop")],
     START + TEXT_OPEN + ["output_text.delta"] + TEXT_CLOSE + ["completed"],
     "completed", [msg("ok")]),
    ("error-chunk",
     {"model": "m"},
     [chunk({"content": "Hel"}),
      {"error": {"message": "overloaded", "type": "server_error", "code": "server_error"}}],
     START + TEXT_OPEN + ["output_text.delta", "error", "failed"],
     "failed", [msg("", status="in_progress") | {"content": []}]),
]


@pytest.mark.parametrize("request_body, upstream, expected_kinds, status, output",
                         [c[1:] for c in CHAT_TO_RESPONSES],
                         ids=[c[0] for c in CHAT_TO_RESPONSES])
def test_chat_to_responses_stream(request_body: dict, upstream: list, expected_kinds: list,
                                  status: str, output: list) -> None:
    translator = ChatToResponsesStream(request_body, RID)
    events = responses_events(run(translator, chat_sse(*upstream)))
    assert kinds(events) == expected_kinds
    assert translator.complete
    final = events[-1]["response"]
    assert (final["status"], final["output"], final["model"], final["created_at"]) == (
        status, output, "up-model", 7)
    added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    done = {e["output_index"]: e["item"] for e in events
            if e["type"] == "response.output_item.done"}
    assert [item["id"] for item in output] == added  # dense, in order, same ids
    assert all(done[n] == item for n, item in enumerate(output) if n in done)


def test_arguments_stream_as_they_arrive() -> None:
    events = responses_events(run(ChatToResponsesStream({}, RID), chat_sse(
        call(0, "", "c1", "f"), call(0, "{\"a\""), call(0, ":1}"), chunk({}, "tool_calls"),
        DONE)))
    deltas = [e["delta"] for e in events if e["type"].endswith("arguments.delta")]
    done = next(e for e in events if e["type"].endswith("arguments.done"))
    assert deltas == ["{\"a\"", ":1}"] and done["arguments"] == "{\"a\":1}"


def test_terminal_event_waits_for_the_usage_chunk() -> None:
    translator = ChatToResponsesStream({"model": "m"}, RID)

    def feed(upstream: dict | str) -> list[str | None]:
        (event,) = SseParser().feed(chat_sse(upstream))
        return [e.name for e in SseParser().feed(translator.feed(event))]

    assert feed(chunk({"content": "ok"}))[-1] == "response.output_text.delta"
    assert feed(chunk({}, "stop")) == []  # finish_reason recorded, not acted on yet
    assert not translator.complete
    assert feed(chunk(choices=False, usage=USAGE))[-1] == "response.completed"
    assert translator.complete
    assert feed(DONE) == []


def test_usage_is_mapped_into_the_terminal_response() -> None:
    events = responses_events(run(ChatToResponsesStream({}, RID), chat_sse(
        chunk({"content": "ok"}), chunk({}, "stop"), chunk(choices=False, usage=USAGE), DONE)))
    assert events[-1]["response"]["usage"] == {
        "input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 1}}


def test_error_chunk_carries_message_and_code() -> None:
    events = responses_events(run(ChatToResponsesStream({}, RID), chat_sse(
        chunk({"content": "x"}),
        {"error": {"message": "slow down", "code": "rate_limit_exceeded"}})))
    error, failed = events[-2], events[-1]
    assert (error["message"], error["code"]) == ("slow down", "rate_limit_exceeded")
    assert failed["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}


def test_response_echoes_request_settings_in_every_snapshot() -> None:
    request = {"model": "m", "instructions": "be brief", "temperature": 0.5,
               "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": False}],
               "tool_choice": "auto", "store": False, "previous_response_id": "resp_0"}
    events = responses_events(run(ChatToResponsesStream(request, RID), chat_sse(
        chunk({"content": "ok"}, "stop"), DONE)))
    for event in (events[0], events[-1]):
        response = event["response"]
        assert {k: response[k] for k in request if k != "model"} == {
            k: v for k, v in request.items() if k != "model"}


@pytest.mark.parametrize("upstream, texts, calls", [
    ([chunk({"content": "Hi"}), chunk({}, "stop"), DONE], ["Hi"], []),
    ([chunk({"content": "Hi"}), call(0, "{}", "c1", "f"), chunk({}, "tool_calls"), DONE],
     ["Hi"], ["c1"]),
    ([chunk({"content": "Hi"}), DONE], None, None),  # failed: nothing to record
], ids=["text", "tool-calls", "failed"])
def test_the_final_response_is_kept_for_the_conversation(upstream: list, texts, calls) -> None:
    translator = ChatToResponsesStream({}, RID)
    assert translator.final is None
    run(translator, chat_sse(*upstream))
    if texts is None:
        assert translator.final is None
        return
    final = translator.final
    assert final["id"] == RID and final["status"] == "completed"
    assert [p["text"] for i in final["output"] if i["type"] == "message"
            for p in i["content"]] == texts
    assert [i["call_id"] for i in final["output"] if i["type"] == "function_call"] == calls


def test_a_passed_through_responses_stream_keeps_its_final_response() -> None:
    shaper = ResponsesPassthrough()
    for event in SseParser().feed(responses_sse(*RESPONSES_TO_CHAT[0][2])):
        shaper.feed(event)
    assert shaper.final is not None and shaper.final["status"] in ("completed", "incomplete")


@pytest.mark.parametrize("before", [[], [chunk({"content": "Hel"})]],
                         ids=["before-any-event", "mid-text"])
def test_chat_to_responses_fail(before: list) -> None:
    translator = ChatToResponsesStream({}, RID)
    out = b"".join(translator.feed(e) for e in SseParser().feed(chat_sse(*before)))
    out += translator.fail("connection reset")
    events = responses_events(out)
    assert kinds(events)[:2] == START and events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error",
                                               "message": "connection reset"}
    assert translator.complete and translator.fail("again") == b"" and translator.finish() == b""


# ---------------------------------------------------- Responses → Chat cases


def responses_sse(*events: dict) -> bytes:
    """A Responses stream as a provider sends it, numbered as it goes."""
    return b"".join(encode({**e, "sequence_number": n}, e["type"]) for n, e in enumerate(events))


RESPONSE = {"id": RID, "object": "response", "created_at": 7, "model": "up-model",
            "status": "in_progress", "output": [], "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": True}
RESP_USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
              "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
              "output_tokens_details": {"reasoning_tokens": 1}}
CHAT_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
              "prompt_tokens_details": {"cached_tokens": 3},
              "completion_tokens_details": {"reasoning_tokens": 1}}


def started() -> list[dict]:
    return [{"type": "response.created", "response": RESPONSE},
            {"type": "response.in_progress", "response": RESPONSE}]


def ended(status: str = "completed", reason: str | None = None, output: list | None = None
          ) -> dict:
    response = RESPONSE | {"status": status, "usage": RESP_USAGE, "output": output or []}
    if reason:
        response["incomplete_details"] = {"reason": reason}
    kind = "response.completed" if status == "completed" else "response.incomplete"
    return {"type": kind, "response": response}


def text_item(index: int, *deltas: str) -> list[dict]:
    iid, text = f"msg_{index}", "".join(deltas)
    item = {"id": iid, "type": "message", "role": "assistant", "status": "in_progress",
            "content": []}
    ids = {"item_id": iid, "output_index": index, "content_index": 0}
    return [
        {"type": "response.output_item.added", "output_index": index, "item": item},
        {"type": "response.content_part.added", **ids,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        *({"type": "response.output_text.delta", **ids, "delta": d, "logprobs": []}
          for d in deltas),
        {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
        {"type": "response.output_item.done", "output_index": index,
         "item": item | {"status": "completed",
                         "content": [{"type": "output_text", "text": text, "annotations": []}]}},
    ]


def call_item(index: int, call_id: str, name: str, *deltas: str, custom: bool = False,
              announce: bool = True) -> list[dict]:
    iid, full = f"fc_{index}", "".join(deltas)
    key, delta_kind = ("input", "custom_tool_call_input") if custom else (
        "arguments", "function_call_arguments")
    kind = "custom_tool_call" if custom else "function_call"
    item = {"id": iid, "type": kind, "call_id": call_id, "name": name, key: ""}
    events = [{"type": "response.output_item.added", "output_index": index, "item": item}]
    events += [{"type": f"response.{delta_kind}.delta", "item_id": iid, "output_index": index,
                "delta": d} for d in deltas if d != "<no deltas>"]
    full = full.replace("<no deltas>", "")
    events.append({"type": "response.output_item.done", "output_index": index,
                   "item": item | {key: full}})
    return events if announce else events[-1:]


def tool_head(index: int, call_id: str, name: str) -> tuple:
    return ({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                             "function": {"name": name, "arguments": ""}}]}, None)


def tool_args(index: int, arguments: str) -> tuple:
    return ({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}, None)


# (id, request, upstream events, expected client view)
RESPONSES_TO_CHAT = [
    ("text-with-empty-delta",
     {"model": "m"},
     [*started(), *text_item(0, "Hel", "", "lo"), ended()],
     [ROLE, ({"content": "Hel"}, None), ({"content": "lo"}, None), ({}, "stop"), DONE]),
    ("usage-only-when-asked",
     {"model": "m", "stream_options": {"include_usage": True}},
     [*started(), *text_item(0, "ok"), ended()],
     [ROLE, ({"content": "ok"}, None), ({}, "stop"), ("usage", CHAT_USAGE), DONE]),
    ("tool-call-split-across-many-deltas",
     {"model": "m"},
     [*started(), *call_item(0, "c1", "f", "{\"ci", "ty\":", "\"Paris\"}"), ended()],
     [ROLE, tool_head(0, "c1", "f"), tool_args(0, "{\"ci"), tool_args(0, "ty\":"),
      tool_args(0, "\"Paris\"}"), ({}, "tool_calls"), DONE]),
    ("text-plus-parallel-tool-calls",
     {"model": "m"},
     [*started(), *text_item(0, "Checking"), *call_item(1, "c1", "f", "{}"),
      *call_item(2, "c2", "g", "{\"x\":1}"), ended()],
     [ROLE, ({"content": "Checking"}, None), tool_head(0, "c1", "f"), tool_args(0, "{}"),
      tool_head(1, "c2", "g"), tool_args(1, "{\"x\":1}"), ({}, "tool_calls"), DONE]),
    ("arguments-only-in-item-done",
     {"model": "m"},
     [*started(), *call_item(0, "c1", "f", "<no deltas>", "{\"a\":1}"), ended()],
     [ROLE, tool_head(0, "c1", "f"), tool_args(0, "{\"a\":1}"), ({}, "tool_calls"), DONE]),
    ("item-done-without-added",
     {"model": "m"},
     [*started(), *call_item(0, "c1", "f", "<no deltas>", "{}", announce=False), ended()],
     [ROLE, tool_head(0, "c1", "f"), tool_args(0, "{}"), ({}, "tool_calls"), DONE]),
    ("custom-tool-call",
     {"model": "m"},
     [*started(), *call_item(0, "c1", "apply_patch", "*** Begin", " Patch", custom=True),
      ended()],
     [ROLE, tool_head(0, "c1", "apply_patch"), tool_args(0, "*** Begin"),
      tool_args(0, " Patch"), ({}, "tool_calls"), DONE]),
    ("reasoning-summary-and-text",
     {"model": "m"},
     [*started(),
      {"type": "response.output_item.added", "output_index": 0,
       "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
      {"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 0,
       "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
      {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0,
       "summary_index": 0, "delta": "First"},
      {"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 0,
       "summary_index": 1, "part": {"type": "summary_text", "text": ""}},
      {"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0,
       "summary_index": 1, "delta": "Second"},
      {"type": "response.output_item.done", "output_index": 0,
       "item": {"id": "rs_1", "type": "reasoning", "summary": [
           {"type": "summary_text", "text": "First"},
           {"type": "summary_text", "text": "Second"}]}},
      *text_item(1, "42"), ended()],
     [ROLE, ({"reasoning_content": "First"}, None), ({"reasoning_content": "\n\n"}, None),
      ({"reasoning_content": "Second"}, None), ({"content": "42"}, None), ({}, "stop"),
      DONE]),
    ("message-only-in-item-done",
     {"model": "m"},
     [*started(), text_item(0, "whole")[-1], ended(output=[])],
     [ROLE, ({"content": "whole"}, None), ({}, "stop"), DONE]),
    ("completed-output-is-not-replayed",
     {"model": "m"},
     [*started(), ended(output=[text_item(0, "x")[-1]["item"]])],
     [ROLE, ({}, "stop"), DONE]),
    ("max-output-tokens-is-length",
     {"model": "m"},
     [*started(), *text_item(0, "cu"), ended("incomplete", "max_output_tokens")],
     [ROLE, ({"content": "cu"}, None), ({}, "length"), DONE]),
    ("content-filter",
     {"model": "m"},
     [*started(), ended("incomplete", "content_filter")],
     [ROLE, ({}, "content_filter"), DONE]),
    ("response-failed",
     {"model": "m"},
     [*started(), *text_item(0, "Hel")[:3],
      {"type": "response.failed", "response": RESPONSE | {
          "status": "failed", "error": {"code": "server_error", "message": "boom"}}}],
     [ROLE, ({"content": "Hel"}, None), ("error", "boom"), DONE]),
    ("error-event",
     {"model": "m"},
     [*started(), {"type": "error", "code": "rate_limit_exceeded", "message": "slow",
                   "param": None}],
     [ROLE, ("error", "slow"), DONE]),
    ("cut-before-completed",
     {"model": "m"},
     [*started(), *text_item(0, "Hel")[:3]],
     [ROLE, ({"content": "Hel"}, None),
      ("error", "upstream stream ended before response.completed"), DONE]),
]


@pytest.mark.parametrize("request_body, upstream, expected",
                         [c[1:] for c in RESPONSES_TO_CHAT],
                         ids=[c[0] for c in RESPONSES_TO_CHAT])
def test_responses_to_chat_stream(request_body: dict, upstream: list, expected: list) -> None:
    for event in upstream:  # the fixtures themselves are valid Responses events
        EVENT_CLASSES[event["type"]].model_validate({**event, "sequence_number": 0})
    translator = ResponsesToChatStream(request_body)
    assert chat_view(run(translator, responses_sse(*upstream))) == expected
    assert translator.complete


def test_responses_to_chat_fail_mid_stream() -> None:
    translator = ResponsesToChatStream({"model": "m"})
    out = b"".join(translator.feed(e) for e in SseParser().feed(
        responses_sse(*started(), *text_item(0, "Hel")[:3])))
    out += translator.fail("connection reset")
    assert chat_view(out)[-2:] == [("error", "connection reset"), DONE]
    assert translator.fail("again") == b"" and translator.finish() == b""


# ------------------------------------------------ the SDK's own stream accumulators


ENDING_WELL = [c for c in CHAT_TO_RESPONSES if c[4] != "failed"]
ENDING_WELL_CHAT = [c for c in RESPONSES_TO_CHAT
                    if not any(step[0] == "error" for step in c[3] if step != DONE)]


@pytest.mark.parametrize("request_body, upstream, output",
                         [(c[1], c[2], c[5]) for c in ENDING_WELL],
                         ids=[c[0] for c in ENDING_WELL])
def test_openai_sdk_accumulates_the_responses_stream(request_body: dict, upstream: list,
                                                     output: list) -> None:
    """What `client.responses.stream()` does with the events: it must reach
    the terminal event with the same items we announced."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    seen = []
    for event in responses_events(run(ChatToResponsesStream(request_body, RID),
                                      chat_sse(*upstream))):
        seen += state.handle_event(EVENT_CLASSES[event["type"]].model_validate(event))
    final = seen[-1].response
    assert [(item.type, item.id) for item in final.output] == [
        (item["type"], item["id"]) for item in output]
    assert final.output_text == "".join(
        part.get("text", "") for item in output if item["type"] == "message"
        for part in item["content"])


@pytest.mark.parametrize("request_body, upstream", [c[1:3] for c in ENDING_WELL_CHAT],
                         ids=[c[0] for c in ENDING_WELL_CHAT])
def test_openai_sdk_accumulates_the_chat_stream(request_body: dict, upstream: list) -> None:
    """What `client.chat.completions.stream()` does with the chunks: the final
    completion holds the text and whole tool calls the deltas spelled out."""
    state = ChatCompletionStreamState()
    text, calls = "", {}
    for event in SseParser().feed(run(ResponsesToChatStream(request_body),
                                      responses_sse(*upstream))):
        if event.data == DONE:
            break
        chunk_ = ChatCompletionChunk.model_validate(event.json())
        state.handle_chunk(chunk_)
        for choice in chunk_.choices:
            text += choice.delta.content or ""
            for fragment in choice.delta.tool_calls or []:
                calls.setdefault(fragment.index, "")
                calls[fragment.index] += fragment.function.arguments or ""
    message = state.current_completion_snapshot.choices[0].message
    assert (message.content or "") == text
    assert [c.function.arguments for c in message.tool_calls or []] == list(calls.values())


# ------------------------------------------------------------ liveness, factory


@pytest.mark.parametrize("make, upstream, marker", [
    (lambda: ChatToResponsesStream({}, RID),
     chat_sse(chunk({"content": "Hel"}), chunk({"content": "lo"})), b'"delta":"lo"'),
    (lambda: ResponsesToChatStream({}),
     responses_sse(*started(), *text_item(0, "Hel", "lo")[:4]), b'"content":"lo"'),
], ids=["chat-to-responses", "responses-to-chat"])
def test_each_event_is_emitted_at_once(make: Any, upstream: bytes, marker: bytes) -> None:
    translator = make()
    *before, last = SseParser().feed(upstream)
    for event in before:
        translator.feed(event)
    assert marker in translator.feed(last)


@pytest.mark.parametrize("upstream, client, expected", [
    (CHAT, CHAT, ChatPassthrough), (RESPONSES, RESPONSES, ResponsesPassthrough),
    (CHAT, RESPONSES, ChatToResponsesStream), (RESPONSES, CHAT, ResponsesToChatStream),
])
def test_shaper_factory(upstream: str, client: str, expected: type) -> None:
    bridge = Bridge(client, upstream, {"model": "m"}, b"{}", response_id=RID)
    assert isinstance(bridge.shaper().inner, expected)


# ------------------------------------------------------------ any split, same output

CHAT_STREAMS = [chat_sse(*c[2]) for c in CHAT_TO_RESPONSES]
RESPONSES_STREAMS = [responses_sse(*c[2]) for c in RESPONSES_TO_CHAT]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_split_gives_the_same_translation(data: st.DataObject) -> None:
    to_responses = data.draw(st.booleans(), "to_responses")
    streams = CHAT_STREAMS if to_responses else RESPONSES_STREAMS
    upstream = data.draw(st.sampled_from(streams), "upstream")
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(upstream)), max_size=40))

    def make() -> Any:
        return ChatToResponsesStream({"model": "m"}, RID) if to_responses \
            else ResponsesToChatStream({"model": "m", "stream_options": {"include_usage": True}})

    assert run(make(), upstream, split(upstream, cuts)) == run(make(), upstream)
