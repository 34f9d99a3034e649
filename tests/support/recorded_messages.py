"""Recorded-style exchanges for the Messages ⇄ chat ⇄ Responses translators.

Shapes follow shared/reference/MESSAGES.md and PROTOCOLS.md and what the
providers send: Anthropic's streams open every block empty and close it,
send a `ping` after `message_start`, start a tool's input with an empty
`input_json_delta`, end a thinking block with its `signature_delta`, and put
the final output count in `message_delta`; OpenAI's chat streams carry the
tool call's id and name in its first fragment only and report usage in a
chunk of its own after the finish; Responses streams are numbered densely.
"""

from __future__ import annotations

import json
from typing import Any

from switchback.protocols.sse import encode

MODEL = "claude-sonnet-4-5-20250929"
SIGNATURE = "EqQBCkgIARABGAIiQL2kb3Q0R7cN1wq8pVb2m3hG3Y0Z6b5lX9yQ0v7hFf0o4B1sGmXbT2EHc"

# ---------------------------------------------------------------- Messages answers


def usage(inp: int, out: int, read: int = 0, written: int = 0) -> dict:
    return {"input_tokens": inp, "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read, "output_tokens": out}


def message(content: list[dict], stop: str, use: dict, mid: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
            stop_sequence: str | None = None) -> dict:
    return {"id": mid, "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": stop, "stop_sequence": stop_sequence,
            "usage": use}


TEXT = "Paris — la Ville Lumière 🌍 is the capital of France."
WEATHER_INPUT = {"city": "Paris", "unit": "celsius"}
TIME_INPUT = {"timezone": "Europe/Paris"}

ANSWERS: dict[str, dict] = {
    "text": message([{"type": "text", "text": TEXT}], "end_turn", usage(21, 17)),
    "thinking-then-tools": message([
        {"type": "thinking", "thinking": "The user wants weather and time. I'll call both.",
         "signature": SIGNATURE},
        {"type": "text", "text": "Let me check both."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": WEATHER_INPUT},
        {"type": "tool_use", "id": "toolu_01BbTyGQKn2RTmTtkLzSM4jV", "name": "get_time",
         "input": TIME_INPUT},
    ], "tool_use", usage(312, 142, read=2048, written=512)),
    "two-thinking-blocks": message([
        {"type": "thinking", "thinking": "First, the units.", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "thinking", "thinking": "Then the answer.", "signature": SIGNATURE},
        {"type": "text", "text": "It is 18 °C."}], "end_turn", usage(64, 40, read=30)),
    "empty-input-tool": message([
        {"type": "tool_use", "id": "toolu_01Vz8kCa2ESkPhgaScNGmYHQ", "name": "list_files",
         "input": {}}], "tool_use", usage(90, 12)),
    "max-tokens": message([{"type": "text", "text": "The history of Paris begins"}],
                          "max_tokens", usage(25, 5)),
    "stop-sequence": message([{"type": "text", "text": "1, 2, 3"}], "stop_sequence",
                             usage(30, 6), stop_sequence="4"),
    "refusal": message([{"type": "text", "text": "I can't help with that."}], "refusal",
                       usage(40, 8)),
    "pause-turn": message([{"type": "text", "text": "Searching"}], "pause_turn", usage(50, 3)),
}


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def messages_stream(answer: dict) -> list[tuple[str, dict]]:
    """The stream Anthropic sends for `answer`, as (event name, data)."""
    use = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**use, "output_tokens": 1}}
    events: list[tuple[str, dict]] = [("message_start", {"type": "message_start",
                                                         "message": start}),
                                      ("ping", {"type": "ping"})]
    for index, block in enumerate(answer["content"]):
        kind = block["type"]
        if kind == "text":
            opened, deltas = {"type": "text", "text": ""}, [
                {"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        elif kind == "redacted_thinking":
            opened, deltas = block, []
        elif kind == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p}
                      for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opened = {**block, "input": {}}
            arguments = json.dumps(block["input"]) if block["input"] else ""
            deltas = [{"type": "input_json_delta", "partial_json": p}
                      for p in ["", *(_pieces(arguments, 5) if arguments else [])]]
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": opened}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events += [("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": answer["stop_reason"],
                                            "stop_sequence": answer["stop_sequence"]},
                                  "usage": {"output_tokens": use["output_tokens"]}}),
               ("message_stop", {"type": "message_stop"})]
    return events


def messages_sse(events: list[tuple[str, dict]]) -> bytes:
    return b"".join(encode(data, name) for name, data in events)


OVERLOADED = ("error", {"type": "error", "error": {"type": "overloaded_error",
                                                    "message": "Overloaded"}})

# ---------------------------------------------------------------- chat answers

CREATED = 1_733_300_000
CHAT_USAGE = {"prompt_tokens": 1250, "completion_tokens": 96, "total_tokens": 1346,
              "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0}}


def completion(message: dict, finish: str, use: dict | None = CHAT_USAGE) -> dict:
    body = {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion",
            "created": CREATED, "model": "gpt-4.1-2025-04-14",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "logprobs": None, "finish_reason": finish}]}
    if use:
        body["usage"] = use
    return body


CHAT_ANSWERS: dict[str, dict] = {
    "text": completion({"content": TEXT}, "stop"),
    "reasoning-and-tools": completion({
        "content": None, "reasoning_content": "Two lookups are needed.",
        "tool_calls": [
            {"id": "call_DdmNJ6z4YoIarJgdUJcz1sHa", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps(WEATHER_INPUT)}},
            {"id": "call_Q8SJbwhmKcE8pBCN3Oo6WEzU", "type": "function",
             "function": {"name": "get_time", "arguments": json.dumps(TIME_INPUT)}}]},
        "tool_calls"),
    "length": completion({"content": "The history of Paris begins"}, "length"),
    "content-filter": completion({"content": ""}, "content_filter"),
    "refusal": completion({"content": None, "refusal": "I can't help with that."}, "stop"),
    "odd-call-id": completion({"content": None, "tool_calls": [
        {"id": "functions.get_weather:0", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        "tool_calls", None),
}


def chat_stream(answer: dict, interleave: bool = False) -> list[dict | str]:
    """The chunks an OpenAI-style server streams for `answer` (with usage)."""
    base = {k: answer[k] for k in ("id", "object", "created", "model")}
    base["object"] = "chat.completion.chunk"
    message = answer["choices"][0]["message"]

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    chunks: list[dict | str] = [chunk({"role": "assistant", "content": "", "refusal": None})]
    for piece in _pieces(message.get("reasoning_content") or "") if message.get(
            "reasoning_content") else []:
        chunks.append(chunk({"reasoning_content": piece}))
    for key in ("content", "refusal"):
        if message.get(key):
            chunks += [chunk({key: piece}) for piece in _pieces(message[key])]
    calls = message.get("tool_calls") or []
    heads = [chunk({"tool_calls": [{"index": n, "id": c["id"], "type": "function",
                                    "function": {"name": c["function"]["name"],
                                                 "arguments": ""}}]})
             for n, c in enumerate(calls)]
    bodies = [[chunk({"tool_calls": [{"index": n, "function": {"arguments": p}}]})
               for p in _pieces(c["function"]["arguments"], 6)] for n, c in enumerate(calls)]
    if interleave:  # every head first, then the arguments of all calls in turn
        chunks += heads
        for group in zip(*bodies):
            chunks += group
        for rest in bodies:
            chunks += rest[min(len(b) for b in bodies):]
    else:
        for head, body in zip(heads, bodies):
            chunks += [head, *body]
    chunks.append(chunk({}, answer["choices"][0]["finish_reason"]))
    if answer.get("usage"):
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    return [*chunks, "[DONE]"]


def chat_sse(chunks: list[dict | str]) -> bytes:
    return b"".join(encode(c) for c in chunks)


# ---------------------------------------------------------------- Responses answers

RESPONSES_USAGE = {"input_tokens": 980, "input_tokens_details": {"cached_tokens": 768},
                   "output_tokens": 210, "output_tokens_details": {"reasoning_tokens": 128},
                   "total_tokens": 1190}


def response(output: list[dict], status: str = "completed",
             incomplete: dict | None = None) -> dict:
    return {"id": "resp_68af4030592c81938ec0a5fbab4a3e9f", "object": "response",
            "created_at": CREATED, "status": status, "model": "gpt-5-2025-08-07",
            "output": output, "error": None, "incomplete_details": incomplete,
            "usage": RESPONSES_USAGE, "tools": [], "tool_choice": "auto",
            "parallel_tool_calls": True}


def _message_item(text: str, n: int = 0) -> dict:
    return {"id": f"msg_68af40{n}", "type": "message", "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _call_item(n: int, call_id: str, name: str, arguments: dict) -> dict:
    return {"id": f"fc_68af40{n}", "type": "function_call", "call_id": call_id, "name": name,
            "arguments": json.dumps(arguments), "status": "completed"}


RESPONSES_ANSWERS: dict[str, dict] = {
    "text": response([_message_item(TEXT)]),
    "reasoning-and-tools": response([
        {"id": "rs_68af40", "type": "reasoning", "encrypted_content": "gAAAAABoSealed",
         "summary": [{"type": "summary_text", "text": "Two lookups are needed."}]},
        _call_item(1, "call_xZP3bEJpCz6m9kPhGJSUNH1Q", "get_weather", WEATHER_INPUT),
        _call_item(2, "call_4wDpQqN0AqUuNbLsFQc0fzkq", "get_time", TIME_INPUT)]),
    "incomplete": response([_message_item("The history of Paris begins")], "incomplete",
                           {"reason": "max_output_tokens"}),
}


def responses_stream(answer: dict) -> list[dict]:
    """The events the Responses API streams for `answer`, numbered densely."""
    start = {**answer, "status": "in_progress", "output": [], "usage": None}
    events: list[dict] = [{"type": "response.created", "response": start},
                          {"type": "response.in_progress", "response": start}]
    for index, item in enumerate(answer["output"]):
        ids = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**item, "status": "in_progress", "content": []}})
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append({"type": "response.content_part.added", **ids, "content_index": 0,
                           "part": part})
            events += [{"type": "response.output_text.delta", **ids, "content_index": 0,
                        "delta": p, "logprobs": []} for p in _pieces(text)]
            events += [{"type": "response.output_text.done", **ids, "content_index": 0,
                        "text": text, "logprobs": []},
                       {"type": "response.content_part.done", **ids, "content_index": 0,
                        "part": {**part, "text": text}}]
        elif item["type"] == "reasoning":
            summary = item["summary"][0]["text"]
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**item, "summary": []}})
            part = {"type": "summary_text", "text": ""}
            events.append({"type": "response.reasoning_summary_part.added", **ids,
                           "summary_index": 0, "part": part})
            events += [{"type": "response.reasoning_summary_text.delta", **ids,
                        "summary_index": 0, "delta": p} for p in _pieces(summary)]
            events += [{"type": "response.reasoning_summary_text.done", **ids,
                        "summary_index": 0, "text": summary},
                       {"type": "response.reasoning_summary_part.done", **ids,
                        "summary_index": 0, "part": {**part, "text": summary}}]
        else:
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**item, "arguments": "", "status": "in_progress"}})
            events += [{"type": "response.function_call_arguments.delta", **ids, "delta": p}
                       for p in _pieces(item["arguments"], 6)]
            events.append({"type": "response.function_call_arguments.done", **ids,
                           "name": item["name"], "arguments": item["arguments"]})
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": item})
    terminal = "response.completed" if answer["status"] == "completed" \
        else "response.incomplete"
    events.append({"type": terminal, "response": answer})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def responses_sse(events: list[dict]) -> bytes:
    return b"".join(encode(e, e["type"]) for e in events)


def sse_events(data: bytes) -> list[Any]:
    """Raw SSE bytes → list of (name, parsed data) for assertions."""
    from switchback.protocols.sse import SseParser
    return [(e.name, e.json() if e.data != "[DONE]" else "[DONE]")
            for e in SseParser().feed(data) if e.data is not None]
