"""Non-streaming answers between the protocols.

Also the pieces the stream translators share with the bodies here (item ids,
output items, usage, status), so a streamed answer and a buffered one carry
the same ids and shapes. Pure: timestamps come from the upstream answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .translate_request import custom_input, text_of

# ------------------------------------------------------------------ shared pieces


def item_id(prefix: str, response_id: str, n: int) -> str:
    """The n-th `msg_`/`fc_`/`rs_` id of a response, derived from its id so
    every rendering of one answer agrees."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{n}"


def chat_id(response_id: str) -> str:
    return f"chatcmpl-{response_id.removeprefix('resp_')}"


def custom_tool_names(request: dict) -> frozenset[str]:
    """Tools the Responses client declared as freeform `custom` tools; their
    calls must come back as `custom_tool_call` items."""
    return frozenset(t.get("name", "") for t in request.get("tools") or []
                     if t.get("type") == "custom")


def summary_part(text: str) -> dict:
    return {"type": "summary_text", "text": text}


def reasoning_item(rid: str, texts: list[str]) -> dict:
    return {"id": rid, "type": "reasoning", "summary": [summary_part(t) for t in texts]}


def output_text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": []}


def refusal_part(text: str) -> dict:
    return {"type": "refusal", "refusal": text}


def message_item(mid: str, parts: list[dict], status: str = "completed") -> dict:
    return {"id": mid, "type": "message", "role": "assistant", "status": status,
            "content": parts}


def call_item(fid: str, call_id: str, name: str, payload: str, custom: bool,
              status: str = "completed") -> dict:
    """A tool call item; `payload` is the arguments, or a custom tool's input."""
    if custom:
        return {"id": fid, "type": "custom_tool_call", "call_id": call_id, "name": name,
                "input": payload}
    return {"id": fid, "type": "function_call", "call_id": call_id, "name": name,
            "arguments": payload, "status": status}


def usage_to_responses(usage: dict | None) -> dict | None:
    if not usage:
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    cached = usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached.get("cached_tokens") or 0,
                                 "cache_write_tokens": cached.get("cache_write_tokens") or 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": (usage.get("completion_tokens_details")
                                                       or {}).get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def usage_to_chat(usage: dict | None) -> dict | None:
    if not usage:
        return None
    prompt, completion = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": usage.get("total_tokens") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": (usage.get("input_tokens_details")
                                                    or {}).get("cached_tokens") or 0},
        "completion_tokens_details": {"reasoning_tokens": (usage.get("output_tokens_details")
                                                           or {}).get("reasoning_tokens") or 0},
    }


_INCOMPLETE_REASON = {"length": "max_output_tokens", "content_filter": "content_filter"}
_FINISH_REASON = {"max_output_tokens": "length", "content_filter": "content_filter"}


def response_status(finish_reason: str | None) -> tuple[str, dict | None]:
    """Chat finish_reason → Responses status and incomplete_details."""
    reason = _INCOMPLETE_REASON.get(finish_reason or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def finish_reason(response: dict, has_tool_calls: bool) -> str:
    """Responses status/incomplete_details → chat finish_reason."""
    if response.get("status") == "incomplete":
        return _FINISH_REASON.get((response.get("incomplete_details") or {}).get("reason"),
                                  "length")
    return "tool_calls" if has_tool_calls else "stop"


# Request settings a Response object echoes back when the client sent them.
_ECHO = ("instructions", "metadata", "temperature", "top_p", "text", "reasoning", "store",
         "previous_response_id", "max_output_tokens", "max_tool_calls", "truncation",
         "background", "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
         "service_tier", "top_logprobs", "user")


def response_object(request: dict, response_id: str, *, model: str, created_at: int,
                    status: str, output: list[dict], usage: dict | None = None,
                    incomplete_details: dict | None = None,
                    error: dict | None = None) -> dict:
    """A Response object echoing the client's original request settings."""
    body = {
        "id": response_id, "object": "response", "created_at": created_at,
        "model": model or request.get("model", ""), "status": status, "output": output,
        "error": error, "incomplete_details": incomplete_details, "usage": usage,
        "tools": request.get("tools") or [], "tool_choice": request.get("tool_choice", "auto"),
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
    }
    body.update({k: request[k] for k in _ECHO if k in request})
    return body


def reasoning_of(message: dict) -> str:
    """Reasoning text as providers put it on a chat message or delta."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str) and message[key]:
            return message[key]
    return ""


# ------------------------------------------------------------ Chat → Responses


def _output_call(call: dict, fid: str, custom_names: frozenset[str]) -> dict:
    if call.get("type") == "custom":
        custom = call.get("custom") or {}
        return call_item(fid, call["id"], custom.get("name", ""), custom.get("input", ""), True)
    function = call.get("function") or {}
    name, arguments = function.get("name", ""), function.get("arguments") or ""
    if name in custom_names:
        return call_item(fid, call["id"], name, custom_input(arguments), True)
    return call_item(fid, call["id"], name, arguments, False)


def chat_to_responses_response(chat: dict, request: dict, response_id: str) -> dict:
    """A chat completion as the Response the Responses client asked for.
    Output order: reasoning, message, tool calls."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status, incomplete = response_status(choice.get("finish_reason"))
    output = []
    if reasoning := reasoning_of(message):
        output.append(reasoning_item(item_id("rs", response_id, 0), [reasoning]))
    parts = []
    if text := text_of(message.get("content"), ""):
        parts.append(output_text_part(text))
    if message.get("refusal"):
        parts.append(refusal_part(message["refusal"]))
    if parts:
        output.append(message_item(item_id("msg", response_id, 0), parts, status))
    custom_names = custom_tool_names(request)
    output += [_output_call(call, item_id("fc", response_id, n), custom_names)
               for n, call in enumerate(message.get("tool_calls") or [])]
    return response_object(
        request, response_id, model=chat.get("model", ""), created_at=chat.get("created") or 0,
        status=status, output=output, usage=usage_to_responses(chat.get("usage")),
        incomplete_details=incomplete)


# ------------------------------------------------------------ Responses → Chat


@dataclass
class _Reply:
    """The assistant message being gathered from output items."""

    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)

    def message(self) -> dict:
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(self.content) or None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.reasoning:
            message["reasoning_content"] = "\n\n".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message


def _from_message(item: dict, reply: _Reply) -> None:
    for part in item.get("content") or []:
        if part.get("type") == "refusal":
            reply.refusal.append(part.get("refusal", ""))
        else:
            reply.content.append(part.get("text", ""))


def _from_reasoning(item: dict, reply: _Reply) -> None:
    parts = item.get("summary") or item.get("content") or []
    reply.reasoning += [p.get("text", "") for p in parts]


def _from_function_call(item: dict, reply: _Reply) -> None:
    reply.tool_calls.append({"id": item["call_id"], "type": "function", "function": {
        "name": item["name"], "arguments": item.get("arguments", "")}})


def _from_custom_call(item: dict, reply: _Reply) -> None:
    reply.tool_calls.append({"id": item["call_id"], "type": "custom", "custom": {
        "name": item["name"], "input": item.get("input", "")}})


_FROM_ITEMS: dict[str, Callable[[dict, _Reply], None]] = {
    "message": _from_message,
    "reasoning": _from_reasoning,
    "function_call": _from_function_call,
    "custom_tool_call": _from_custom_call,
}


def assistant_message(items: list[dict]) -> dict:
    """The chat assistant message that Responses output items amount to."""
    reply = _Reply()
    for item in items:
        if convert := _FROM_ITEMS.get(item.get("type", "")):
            convert(item, reply)
    return reply.message()


def responses_to_chat_response(resp: dict, request: dict) -> dict:
    """A Response as the chat completion the chat client asked for."""
    message = assistant_message(resp.get("output") or [])
    body = {
        "id": chat_id(resp.get("id", "")), "object": "chat.completion",
        "created": int(resp.get("created_at") or 0),
        "model": resp.get("model") or request.get("model", ""),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(resp, "tool_calls" in message)}],
    }
    if usage := usage_to_chat(resp.get("usage")):
        body["usage"] = usage
    return body
