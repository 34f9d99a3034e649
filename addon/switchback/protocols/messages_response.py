"""Whole (non-streamed) answers between the Messages API and OpenAI's protocols.

Messages ⇄ chat is direct; Messages ⇄ Responses goes through chat and the
chat ⇄ Responses translator, which loses nothing on the way: thinking rides
as `reasoning_content`, cache writes as `cache_write_tokens`, and every stop
reason has its chat finish reason (`messages_terms`). Thinking signatures
and sealed reasoning are not carried: only their producer can read them.
Pure: a Messages answer has no timestamp, so the caller may pass one.
"""

from __future__ import annotations

import json
from typing import Any

from ..jsonsafe import loads
from .messages_terms import finish_of_stop, stop_of_finish, usage_to_chat, usage_to_messages
from .tool_ids import to_messages_id, to_openai_id
from .translate_request import text_of
from .translate_response import (chat_to_responses_response, reasoning_of,
                                 responses_to_chat_response)

MESSAGE_PREFIX, CHAT_PREFIX = "msg_", "chatcmpl-"
THINKING_JOIN = "\n\n"  # between the texts of an answer's thinking blocks, as reasoning


def chat_id_of(message_id: str) -> str:
    """The chat id of a Messages answer, derived so both renderings agree."""
    return CHAT_PREFIX + message_id.removeprefix(MESSAGE_PREFIX)


def message_id_of(chat_id: str) -> str:
    """The Messages id of a chat answer."""
    return MESSAGE_PREFIX + chat_id.removeprefix(CHAT_PREFIX)


def thinking_block(text: str) -> dict:
    """Thinking shown to a Messages client; it has no signature, because
    no Anthropic account produced it."""
    return {"type": "thinking", "thinking": text, "signature": ""}


def tool_use_block(call_id: str, name: str, arguments: Any,
                   dropped: list[str] | None = None) -> dict:
    """A tool call as a Messages block; arguments that are not a JSON
    object become an empty input (Messages takes nothing else), named in
    `dropped` when given."""
    value = loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    if not isinstance(value, dict):
        if dropped is not None:
            dropped.append("tool_call arguments (not a JSON object)")
        value = {}
    return {"type": "tool_use", "id": to_messages_id(call_id), "name": name, "input": value}


def arguments_of_input(value: Any) -> str:
    """A tool_use block's input as OpenAI function arguments."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False)


# ------------------------------------------------------------ what an answer loses

_CARRIED_BLOCKS = frozenset({"text", "thinking", "tool_use"})
_CARRIED_ITEMS = frozenset({"message", "reasoning", "function_call", "custom_tool_call"})


def block_dropped(block: dict) -> list[str]:
    """What of one Messages answer block an OpenAI client never sees: a
    thinking signature (only the account that made it can verify it),
    citations, blocks with no OpenAI form (redacted thinking, server tools)."""
    kind = block.get("type")
    if kind not in _CARRIED_BLOCKS:
        return [f"block:{kind}"]
    if kind == "thinking" and block.get("signature"):
        return ["thinking signature"]
    return ["citations"] if kind == "text" and block.get("citations") else []


def item_dropped(item: dict) -> list[str]:
    """What of one Responses output item a Messages client never sees:
    sealed reasoning (only its producer can read it), built-in tool items."""
    kind = item.get("type")
    if kind not in _CARRIED_ITEMS:
        return [f"item:{kind}"]
    return ["reasoning.encrypted_content"] if kind == "reasoning" and item.get(
        "encrypted_content") else []


def _named(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def messages_answer_dropped(message: dict) -> tuple[str, ...]:
    """What a Messages answer loses on its way to an OpenAI client, for the trail."""
    return _named([name for block in message.get("content") or [] if isinstance(block, dict)
                   for name in block_dropped(block)])


def responses_answer_dropped(response: dict) -> tuple[str, ...]:
    """What a Response loses on its way to a Messages client, for the trail."""
    return _named([name for item in response.get("output") or [] if isinstance(item, dict)
                   for name in item_dropped(item)])


# ------------------------------------------------------------ Messages → OpenAI


def assistant_of_blocks(blocks: list[dict]) -> dict:
    """The chat assistant message a Messages answer's content amounts to."""
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    thinking = [b.get("thinking", "") for b in blocks if b.get("type") == "thinking"]
    calls = [{"id": to_openai_id(str(b.get("id", ""))), "type": "function",
              "function": {"name": b.get("name", ""),
                           "arguments": arguments_of_input(b.get("input"))}}
             for b in blocks if b.get("type") == "tool_use"]
    message: dict = {"role": "assistant", "content": text or None}
    if thinking:
        message["reasoning_content"] = THINKING_JOIN.join(thinking)
    if calls:
        message["tool_calls"] = calls
    return message


def messages_to_chat_response(message: dict, request: dict, *, created: int = 0) -> dict:
    """A Messages answer as the chat completion a chat client asked for."""
    blocks = [b for b in message.get("content") or [] if isinstance(b, dict)]
    assistant = assistant_of_blocks(blocks)
    body = {
        "id": chat_id_of(str(message.get("id", ""))), "object": "chat.completion",
        "created": created, "model": message.get("model") or request.get("model", ""),
        "choices": [{"index": 0, "message": assistant, "logprobs": None,
                     "finish_reason": finish_of_stop(message.get("stop_reason"),
                                                     "tool_calls" in assistant)}],
    }
    if usage := usage_to_chat(message.get("usage")):
        body["usage"] = usage
    return body


def messages_to_responses_response(message: dict, request: dict, response_id: str, *,
                                   created: int = 0) -> dict:
    """A Messages answer as the Response a Responses client asked for."""
    return chat_to_responses_response(messages_to_chat_response(message, request,
                                                                created=created),
                                      request, response_id)


# ------------------------------------------------------------ OpenAI → Messages


def blocks_of_assistant(message: dict) -> list[dict]:
    """A chat assistant message as Messages content: thinking, text, tool uses."""
    blocks = []
    if reasoning := reasoning_of(message):
        blocks.append(thinking_block(reasoning))
    content = message.get("content")
    text = (text_of(content, "") if content else "") + (message.get("refusal") or "")
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or call.get("custom") or {}
        payload = function.get("arguments", function.get("input", ""))
        blocks.append(tool_use_block(str(call.get("id", "")), function.get("name", ""),
                                     payload))
    return blocks


def messages_answer(message_id: str, model: str, content: list[dict], stop_reason: str,
                    usage: dict) -> dict:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage}


def chat_to_messages_response(chat: dict, request: dict) -> dict:
    """A chat completion as the Messages answer a Messages client asked for.
    A refusal ends as `refusal`; a tool call as `tool_use`."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = blocks_of_assistant(message)
    has_calls = any(b["type"] == "tool_use" for b in content)
    stop = "refusal" if message.get("refusal") and not has_calls else \
        stop_of_finish(choice.get("finish_reason"), has_calls)
    return messages_answer(message_id_of(str(chat.get("id", ""))),
                           chat.get("model") or request.get("model", ""), content, stop,
                           usage_to_messages(chat.get("usage")))


def responses_to_messages_response(response: dict, request: dict) -> dict:
    """A Response as the Messages answer a Messages client asked for."""
    return chat_to_messages_response(responses_to_chat_response(response, request), request)
