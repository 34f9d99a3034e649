"""Anthropic's Messages API as a fake provider answers it.

Whole messages and streams with Anthropic's exact event sequence —
`message_start`, per block `content_block_start` / deltas /
`content_block_stop` with a `ping` after the first block opens,
`message_delta` with the stop reason and the final output count,
`message_stop` — for text, signed thinking and tool use. Like the real API
it signs thinking for the account (the key) that asked, and refuses a
signature another account made. `FakeProvider` answers `…/messages` with
these.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

MESSAGES, COUNT = "/messages", "/messages/count_tokens"
TOOL_INPUT = {"city": "Paris"}
USAGE = {"input_tokens": 5, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 2,
         "output_tokens": 3}
THINKING_TEXT = "Let me think about that."


def signed_for(key: str | None) -> str:
    """A thinking signature only `key`'s account accepts back (it does not show the key)."""
    return "Eq" + hashlib.sha256(f"signed for {key}".encode()).hexdigest()[:40]


def wants_thinking(body: dict) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def tool_result(body: dict) -> str | None:
    """The content of the last tool_result block the call sends back, if any."""
    found = None
    for message in body.get("messages") or ():
        for block in message.get("content") if isinstance(message.get("content"), list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                found = content if isinstance(content, str) else json.dumps(content)
    return found


def tool_name(body: dict) -> str | None:
    """The first tool's name, when the call offers tools and sends no result yet."""
    if tool_result(body) is not None:
        return None
    return next((t["name"] for t in body.get("tools") or () if isinstance(t, dict)
                 and t.get("name")), None)


def refusal(body: dict, key: str | None) -> tuple[int, dict] | None:
    """What Anthropic refuses across accounts — thinking another key signed —
    and around thinking: with it on, the final assistant turn must open with
    its thinking; with it off, that turn may hold none."""
    messages = body.get("messages") or []
    assistant = [n for n, m in enumerate(messages) if m.get("role") == "assistant"]
    final = messages[assistant[-1]].get("content") if assistant else None
    if isinstance(final, list) and final:
        thinking = [b.get("type") in ("thinking", "redacted_thinking") for b in final]
        if wants_thinking(body) and not thinking[0]:
            return 400, error_body("invalid_request_error", (
                f"messages.{assistant[-1]}.content.0.type: Expected `thinking` or "
                "`redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final "
                "`assistant` message must start with a thinking block"))
        if not wants_thinking(body) and any(thinking):
            return 400, error_body("invalid_request_error", (
                f"messages.{assistant[-1]}.content.0: When thinking is disabled, an "
                "`assistant` message in the final position cannot contain `thinking`."))
    for number, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        for index, block in enumerate(content if isinstance(content, list) else ()):
            if isinstance(block, dict) and block.get("type") == "thinking" \
                    and block.get("signature") != signed_for(key):
                return 400, error_body("invalid_request_error",
                                       f"messages.{number}.content.{index}: Invalid "
                                       "`signature` in `thinking` block")
    return None


def error_body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message},
            "request_id": "req_fake"}


OVERLOADED = error_body("overloaded_error", "Overloaded")
RATE_LIMITED = error_body("rate_limit_error", "This request would exceed your rate limit.")


def blocks(text: str, thinking: str | None, tool: str | None) -> list[dict]:
    """A whole answer's content: signed thinking, then text or a tool call."""
    out: list[dict] = []
    if thinking is not None:
        out.append({"type": "thinking", "thinking": THINKING_TEXT, "signature": thinking})
    if tool is not None:
        out.append({"type": "tool_use", "id": "toolu_fake", "name": tool, "input": TOOL_INPUT})
    else:
        out.append({"type": "text", "text": text})
    return out


def message_object(model: str, text: str, thinking: str | None = None,
                   tool: str | None = None, mid: str = "msg_fake") -> dict:
    return {"id": mid, "type": "message", "role": "assistant", "model": model,
            "content": blocks(text, thinking, tool),
            "stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None,
            "usage": dict(USAGE)}


def message_events(model: str, text: str, thinking: str | None = None,
                   tool: str | None = None, mid: str = "msg_fake") -> list[dict]:
    """A Messages stream, event by event, as Anthropic sends it."""
    start = {**message_object(model, text, thinking, tool, mid), "content": [],
             "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}}
    events: list[dict] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(blocks(text, thinking, tool)):
        kind = block["type"]
        opened = {"thinking": {"type": "thinking", "thinking": "", "signature": ""},
                  "tool_use": {**block, "input": {}},
                  "text": {"type": "text", "text": ""}}[kind]
        events.append({"type": "content_block_start", "index": index, "content_block": opened})
        if index == 0:
            events.append({"type": "ping"})
        if kind == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": THINKING_TEXT},
                      {"type": "signature_delta", "signature": block["signature"]}]
        elif kind == "tool_use":
            arguments = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                {"type": "input_json_delta", "partial_json": arguments[i:i + 5]}
                for i in range(0, len(arguments), 5)]
        else:
            words = text.split(" ")
            deltas = [{"type": "text_delta", "text": w if i == len(words) - 1 else w + " "}
                      for i, w in enumerate(words)]
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": "tool_use" if tool else "end_turn",
                             "stop_sequence": None},
                   "usage": {"output_tokens": USAGE["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events


def counted(body: dict) -> dict:
    """count_tokens' answer: a token per four bytes of the messages, roughly."""
    return {"input_tokens": max(1, len(json.dumps(body.get("messages") or [])) // 4)}


def answer(body: dict, key: str | None, name: str, text: str | None
           ) -> tuple[dict | None, list[dict] | None]:
    """(whole answer, stream events) for a Messages call: one of them, as
    the call asked."""
    model = body.get("model", "unknown")
    result = tool_result(body)
    said = text or (f"weather: {result}" if result is not None else f"hello from {name}")
    thinking = signed_for(key) if wants_thinking(body) else None
    tool = tool_name(body)
    if body.get("stream"):
        return None, message_events(model, said, thinking, tool)
    return message_object(model, said, thinking, tool), None
