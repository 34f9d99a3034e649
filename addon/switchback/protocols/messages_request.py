"""Request bodies between the Messages API and OpenAI's chat and Responses.

Four directions, each direct: going through chat would lose what chat has
no form for and the other two do (a document by URL, an image inside a tool
result). Blocks, parts, items and tools convert one by one by their type;
whatever has no form on the other side is dropped and named, so the flow
trail can say what the provider never saw. Tool-call ids cross in the other
side's shape (`tool_ids`).

Conventions (also in the README): the system prompt joins its text blocks
with blank lines; system and developer messages anywhere in an OpenAI
conversation join the Messages `system`; a tool result that `is_error`
reaches an OpenAI model as its text prefixed `Error: ` (OpenAI has no such
flag); thinking in the history is dropped (its signature only verifies for
the account that made it, and reasoning items are sealed the same way) —
so an OpenAI conversation that continues a tool loop goes to Messages
without thinking, which would want the loop's signed thinking replayed.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .messages_response import arguments_of_input, assistant_of_blocks, tool_use_block
from .messages_terms import effort_of_thinking, max_tokens_for, thinking_of_effort
from .tool_ids import to_messages_id, to_openai_id
from .translate_request import (OPENAI_HOST, Drops, Translated, custom_arguments,
                                custom_function_tool, text_of)

ERROR_PREFIX = "Error: "  # how an `is_error` tool result reads to an OpenAI model
CACHE_CONTROL = "cache_control"
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.S)


def _done(body: dict, dropped: Drops) -> Translated:
    return Translated(body, tuple(dict.fromkeys(dropped)))  # each name once, in order


def _blocks(content: Any) -> list[dict]:
    """A Messages content value as blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [b for b in content or [] if isinstance(b, dict)]


def _cached(body: dict) -> bool:
    """Whether `cache_control` sits anywhere a Messages request puts it."""
    places: list[Any] = [*_blocks(body.get("system")), *(body.get("tools") or [])]
    for message in body.get("messages") or []:
        for block in _blocks(message.get("content") if isinstance(message, dict) else None):
            places.append(block)
            if block.get("type") == "tool_result":
                places += _blocks(block.get("content"))
    return any(isinstance(p, dict) and CACHE_CONTROL in p for p in places)


# ======================================================== Messages → OpenAI
# Content blocks → the target's parts. `_Chat` and `_Responses` hold what
# differs between the two targets; the walk over the messages is shared.


def _data_url(source: dict) -> str:
    return f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"


def _image_url(block: dict, dropped: Drops) -> str | None:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return _data_url(source)
    if source.get("type") == "url" and source.get("url"):
        return source["url"]
    dropped.append(f"image({source.get('type')})")
    return None


def _document_text(block: dict) -> str | None:
    """A document whose source is text (plain, or content blocks), as text."""
    source = block.get("source") or {}
    text = source.get("data") if source.get("type") == "text" else \
        text_of(_blocks(source.get("content"))) if source.get("type") == "content" else None
    if text is None:
        return None
    return f"{block['title']}\n\n{text}" if block.get("title") else text


def _filename(block: dict) -> str:
    return str(block.get("title") or "document.pdf")


def _chat_part(block: dict, dropped: Drops) -> dict | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        url = _image_url(block, dropped)
        return {"type": "image_url", "image_url": {"url": url}} if url else None
    if kind == "document":
        if (text := _document_text(block)) is not None:
            return {"type": "text", "text": text}
        source = block.get("source") or {}
        if source.get("type") == "base64":
            return {"type": "file", "file": {"file_data": _data_url(source),
                                             "filename": _filename(block)}}
        dropped.append(f"document({source.get('type')})")
        return None
    dropped.append(f"block:{kind}")
    return None


def _responses_part(block: dict, dropped: Drops) -> dict | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "input_text", "text": block.get("text", "")}
    if kind == "image":
        url = _image_url(block, dropped)
        return {"type": "input_image", "image_url": url, "detail": "auto"} if url else None
    if kind == "document":
        if (text := _document_text(block)) is not None:
            return {"type": "input_text", "text": text}
        source = block.get("source") or {}
        if source.get("type") == "base64":
            return {"type": "input_file", "file_data": _data_url(source),
                    "filename": _filename(block)}
        if source.get("type") == "url" and source.get("url"):
            return {"type": "input_file", "file_url": source["url"]}
        dropped.append(f"document({source.get('type')})")
        return None
    dropped.append(f"block:{kind}")
    return None


def _parts(blocks: Iterable[dict], convert: Callable[[dict, Drops], dict | None],
           dropped: Drops) -> list[dict]:
    return [part for block in blocks if (part := convert(block, dropped)) is not None]


def _result_text(block: dict) -> str:
    prefix = ERROR_PREFIX if block.get("is_error") else ""
    return prefix + text_of(_blocks(block.get("content")))


class _Chat:
    """Messages turns as chat messages."""

    part = staticmethod(_chat_part)

    @staticmethod
    def system(text: str) -> dict:
        return {"role": "system", "content": text}

    @staticmethod
    def user(parts: list[dict]) -> dict:
        if len(parts) == 1 and parts[0]["type"] == "text":
            return {"role": "user", "content": parts[0]["text"]}  # widest support
        return {"role": "user", "content": parts}

    @staticmethod
    def result(block: dict, dropped: Drops) -> dict:
        if any(b.get("type") != "text" for b in _blocks(block.get("content"))):
            dropped.append("tool_result(image)")
        return {"role": "tool", "tool_call_id": to_openai_id(str(block.get("tool_use_id", ""))),
                "content": _result_text(block)}

    @staticmethod
    def assistant(blocks: list[dict]) -> list[dict]:
        """Text and tool calls as an answer carries them; thinking left out."""
        message = assistant_of_blocks([b for b in blocks if b.get("type") != "thinking"])
        return [message] if message["content"] or message.get("tool_calls") else []


class _Responses:
    """Messages turns as Responses input items."""

    part = staticmethod(_responses_part)

    @staticmethod
    def system(text: str) -> dict:
        return {"type": "message", "role": "system", "content": text}

    @staticmethod
    def user(parts: list[dict]) -> dict:
        return {"type": "message", "role": "user", "content": parts}

    @staticmethod
    def result(block: dict, dropped: Drops) -> dict:
        blocks = _blocks(block.get("content"))
        call_id = to_openai_id(str(block.get("tool_use_id", "")))
        if all(b.get("type") == "text" for b in blocks):
            return {"type": "function_call_output", "call_id": call_id,
                    "output": _result_text(block)}
        parts = _parts(blocks, _responses_part, dropped)
        if block.get("is_error"):
            parts.insert(0, {"type": "input_text", "text": ERROR_PREFIX.strip()})
        return {"type": "function_call_output", "call_id": call_id, "output": parts}

    @staticmethod
    def assistant(blocks: list[dict]) -> list[dict]:
        """Text as a plain string (the one assistant form Responses input
        takes without an item id), each tool call its own item, in order."""
        items: list[dict] = []
        text = ""
        for block in blocks:
            if block.get("type") == "text":
                text += block.get("text", "")
            elif block.get("type") == "tool_use":
                if text:
                    items.append({"type": "message", "role": "assistant", "content": text})
                    text = ""
                items.append({"type": "function_call",
                              "call_id": to_openai_id(str(block.get("id", ""))),
                              "name": block.get("name", ""),
                              "arguments": arguments_of_input(block.get("input"))})
        if text:
            items.append({"type": "message", "role": "assistant", "content": text})
        return items


_ASSISTANT_BLOCKS = {"text", "tool_use"}  # thinking, signed for one account, stays behind


def _turns(body: dict, target: type[_Chat] | type[_Responses], dropped: Drops) -> list[dict]:
    """The conversation of a Messages body in the target's shape; tool
    results go first, as their own messages, right after the calls."""
    out: list[dict] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role, blocks = message.get("role"), _blocks(message.get("content"))
        if role == "system":
            out.append(target.system(text_of(blocks, "\n\n")))
        elif role == "assistant":
            dropped += [f"block:{b.get('type')}" for b in blocks
                        if b.get("type") not in _ASSISTANT_BLOCKS]
            out += target.assistant(blocks)
        else:
            out += [target.result(b, dropped) for b in blocks if b.get("type") == "tool_result"]
            parts = _parts((b for b in blocks if b.get("type") != "tool_result"), target.part,
                           dropped)
            if parts:
                out.append(target.user(parts))
    return out


def _system(body: dict) -> str:
    return text_of(_blocks(body.get("system")), "\n\n")


def _messages_function(tool: dict, dropped: Drops) -> dict | None:
    """A Messages client tool as a function (name, description, schema);
    server tools (`web_search_…`, `bash_…`, …) have no form elsewhere."""
    if tool.get("type") not in (None, "custom"):
        dropped.append(f"tool:{tool.get('type')}")
        return None
    function = {"name": tool.get("name", ""),
                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return function


def _functions(body: dict, dropped: Drops) -> list[dict]:
    return [f for tool in body.get("tools") or []
            if isinstance(tool, dict) and (f := _messages_function(tool, dropped))]


_CHOICE_WORD = {"auto": "auto", "any": "required", "none": "none"}


def _choice(body: dict) -> tuple[str | None, str | None, bool]:
    """(the OpenAI tool_choice word or None, a named tool, parallel calls allowed)."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return None, None, True
    parallel = not choice.get("disable_parallel_tool_use")
    if choice.get("type") == "tool":
        return None, str(choice.get("name", "")), parallel
    return _CHOICE_WORD.get(str(choice.get("type"))), None, parallel


def _user_id(body: dict) -> str | None:
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) and user else None


_SAME_SAMPLING = ("temperature", "top_p")
_MESSAGES_HANDLED = {"model", "max_tokens", "messages", "system", "tools", "tool_choice",
                     "thinking", "stream", "metadata", "stop_sequences", *_SAME_SAMPLING}


def _common(body: dict, dropped: Drops) -> dict:
    """Settings both OpenAI protocols name alike; dropped: the rest."""
    out = {k: body[k] for k in ("model", *_SAME_SAMPLING) if body.get(k) is not None}
    if user := _user_id(body):
        out["user"] = user
    if _cached(body):
        dropped.append(CACHE_CONTROL)
    dropped += [k for k in body if k not in _MESSAGES_HANDLED]
    return out


def messages_to_chat(body: dict, *, upstream_host: str = "") -> Translated:
    """A Messages body as a /chat/completions body."""
    dropped: Drops = []
    chat = _common(body, dropped)
    system = _system(body)
    chat["messages"] = ([_Chat.system(system)] if system else []) + _turns(body, _Chat, dropped)
    if functions := _functions(body, dropped):
        chat["tools"] = [{"type": "function", "function": f} for f in functions]
        word, name, parallel = _choice(body)
        if name is not None:
            chat["tool_choice"] = {"type": "function", "function": {"name": name}}
        elif word:
            chat["tool_choice"] = word
        if not parallel:
            chat["parallel_tool_calls"] = False
    if body.get("max_tokens") is not None:
        chat["max_completion_tokens" if upstream_host == OPENAI_HOST else "max_tokens"] = \
            body["max_tokens"]
    if effort := effort_of_thinking(body.get("thinking")):
        chat["reasoning_effort"] = effort
    if stops := body.get("stop_sequences"):
        chat["stop"] = stops
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return _done(chat, dropped)


def messages_to_responses(body: dict) -> Translated:
    """A Messages body as a /responses body (never stored upstream)."""
    dropped: Drops = []
    out = _common(body, dropped)
    if system := _system(body):
        out["instructions"] = system
    out["input"] = _turns(body, _Responses, dropped)
    if functions := _functions(body, dropped):
        out["tools"] = [{"type": "function", **f, "strict": False} for f in functions]
        word, name, parallel = _choice(body)
        if name is not None:
            out["tool_choice"] = {"type": "function", "name": name}
        elif word:
            out["tool_choice"] = word
        if not parallel:
            out["parallel_tool_calls"] = False
    if body.get("max_tokens") is not None:
        out["max_output_tokens"] = body["max_tokens"]
    if effort := effort_of_thinking(body.get("thinking")):
        out["reasoning"] = {"effort": effort}
    if body.get("stop_sequences"):
        dropped.append("stop_sequences")  # Responses has no stop sequences
    if body.get("stream"):
        out["stream"] = True
    out["store"] = False
    return _done(out, dropped)


# ======================================================== OpenAI → Messages


class _Conversation:
    """Messages being built: the system text apart, consecutive turns of one
    role merged (a tool call's results and the next user words are one user
    turn), blank text and empty turns left out (Messages refuses them)."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.messages: list[dict] = []

    def add(self, role: str, blocks: list[dict]) -> None:
        blocks = [b for b in blocks if b.get("type") != "text" or str(b.get("text")).strip()]
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"] += blocks
        else:
            self.messages.append({"role": role, "content": blocks})

    def replays_unsigned_turn(self) -> bool:
        """Whether it continues a tool loop (or an assistant prefix): there
        Messages, when thinking, wants the last assistant turn to start with
        its signed thinking, which a conversation from OpenAI never has."""
        last = self.messages[-1] if self.messages else None
        if last is None:
            return False
        if last["role"] == "assistant":
            return True
        before = self.messages[-2] if len(self.messages) > 1 else None
        return before is not None and last["content"][0].get("type") == "tool_result" and any(
            b.get("type") == "tool_use" for b in before["content"])

    def body(self) -> dict:
        out: dict = {"messages": self.messages}
        if self.system:
            out["system"] = "\n\n".join(self.system)
        return out


def _image_block(url: str) -> dict:
    if found := _DATA_URL.fullmatch(url):
        return {"type": "image", "source": {"type": "base64", "media_type": found[1],
                                            "data": found[2]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _document_block(file_data: str | None, url: str | None, name: str | None,
                    dropped: Drops) -> dict | None:
    """A file as a document block: a PDF inline or by URL (what Messages takes)."""
    found = _DATA_URL.fullmatch(file_data or "")
    if found and found[1] == "application/pdf":
        block = {"type": "document", "source": {"type": "base64",
                                                "media_type": found[1], "data": found[2]}}
    elif url:
        block = {"type": "document", "source": {"type": "url", "url": url}}
    else:
        dropped.append(f"file({found[1] if found else 'file_id'})")
        return None
    if name:
        block["title"] = name
    return block


def _tool_result(call_id: str, content: list[dict] | str) -> dict:
    return {"type": "tool_result", "tool_use_id": to_messages_id(call_id), "content": content}


def _settings(conversation: _Conversation, body: dict, limit: Any, effort: Any,
              dropped: Drops) -> dict:
    """The Messages body around a conversation: model, limit, thinking,
    sampling (within what thinking allows), user."""
    out: dict = {"model": body.get("model", "")}
    out |= conversation.body()
    thinking = thinking_of_effort(effort, limit if isinstance(limit, int) else None)
    if effort and effort != "none" and thinking is None:
        dropped.append("reasoning effort (max tokens leave no room to think)")
    elif thinking and conversation.replays_unsigned_turn():
        thinking = None
        dropped.append("reasoning effort (inside a tool loop, no signed thinking to replay)")
    out["max_tokens"] = max_tokens_for(limit, thinking)
    if thinking:
        out["thinking"] = thinking
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if isinstance(temperature, (int, float)):
        if thinking and temperature != 1:
            dropped.append("temperature (thinking needs 1)")
        else:
            out["temperature"] = min(temperature, 1)
            if temperature > 1:
                dropped.append("temperature above 1 (clamped)")
    if isinstance(top_p, (int, float)) and top_p != 1:  # 1 is everyone's default
        if "temperature" in out or (thinking and top_p < 0.95):
            dropped.append("top_p")  # newer Claude models take one of the two; thinking ≥ 0.95
        else:
            out["top_p"] = top_p
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


def _tool_choice(out: dict, word: Any, name: str | None, parallel: Any) -> None:
    """Set a Messages tool_choice from an OpenAI word or a named function."""
    kinds = {"auto": "auto", "required": "any", "none": "none"}
    choice: dict | None = {"type": "tool", "name": name} if name is not None else \
        {"type": kinds[word]} if word in kinds else None
    if parallel is False:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice


def _function_tool(function: dict) -> dict:
    tool = {"name": function.get("name", ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        tool["description"] = function["description"]
    return tool


# chat → Messages

def _chat_blocks(content: Any, dropped: Drops) -> list[dict]:
    if isinstance(content, str) or content is None:
        return _blocks(content)
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image if isinstance(image, str) else (image or {}).get("url")
            if url:
                blocks.append(_image_block(url))
        elif kind == "file":
            file = part.get("file") or {}
            block = _document_block(file.get("file_data"), None, file.get("filename"), dropped)
            if block:
                blocks.append(block)
        else:
            dropped.append(f"part:{kind}")
    return blocks


def _chat_message(message: dict, into: _Conversation, dropped: Drops) -> None:
    role = message.get("role")
    if role in ("system", "developer"):
        into.system.append(text_of(message.get("content"), "\n\n"))
    elif role == "user":
        into.add("user", _chat_blocks(message.get("content"), dropped))
    elif role == "assistant":
        content = message.get("content")
        text = content if isinstance(content, str) else "".join(
            p.get("text", p.get("refusal", "")) for p in content or [] if isinstance(p, dict))
        blocks = [{"type": "text", "text": text + (message.get("refusal") or "")}]
        if message.get("reasoning_content") or message.get("reasoning"):
            dropped.append("reasoning")
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            if call.get("type", "function") != "function":
                dropped.append(f"tool_call:{call.get('type')}")
                continue
            blocks.append(tool_use_block(str(call.get("id", "")), function.get("name", ""),
                                         function.get("arguments") or "", dropped))
        if message.get("function_call"):
            dropped.append("function_call")
        into.add("assistant", blocks)
    elif role == "tool":
        into.add("user", [_tool_result(str(message.get("tool_call_id", "")),
                                       text_of(message.get("content")))])
    else:
        dropped.append(f"message:{role}")


_CHAT_QUIET = {"store", "stream_options", "metadata", "prompt_cache_key", "safety_identifier",
               "service_tier", "parallel_tool_calls", "n"}
_CHAT_HANDLED = {"model", "messages", "tools", "tool_choice", "max_tokens",
                 "max_completion_tokens", "reasoning_effort", "temperature", "top_p", "stop",
                 "user", "stream", *_CHAT_QUIET}


def chat_to_messages(body: dict) -> Translated:
    """A /chat/completions body as a Messages body."""
    dropped: Drops = []
    conversation = _Conversation()
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            _chat_message(message, conversation, dropped)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    out = _settings(conversation, body, limit, body.get("reasoning_effort"), dropped)
    tools = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            tools.append(_function_tool(tool.get("function") or {}))
        elif isinstance(tool, dict) and tool.get("type") == "custom":
            custom = tool.get("custom") or {}
            tools.append(_function_tool(custom_function_tool(custom, dropped)["function"]))
        else:
            dropped.append(f"tool:{tool.get('type') if isinstance(tool, dict) else tool}")
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        named = (choice.get("function") or choice.get("custom") or {}).get("name") \
            if isinstance(choice, dict) else None
        if isinstance(choice, dict) and named is None:
            dropped.append(f"tool_choice:{choice.get('type')}")
        _tool_choice(out, choice, named, body.get("parallel_tool_calls"))
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if (body.get("n") or 1) > 1:
        dropped.append("n")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") != "text":
        dropped.append("response_format")
    dropped += [k for k in body if k not in _CHAT_HANDLED and k != "response_format"]
    return _done(out, dropped)


# Responses → Messages

def _input_blocks(parts: Any, dropped: Drops) -> list[dict]:
    if isinstance(parts, str):
        return _blocks(parts)
    blocks = []
    for part in parts or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            blocks.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            if part.get("image_url"):
                blocks.append(_image_block(part["image_url"]))
            else:
                dropped.append("input_image(file_id)")
        elif kind == "input_file":
            block = _document_block(part.get("file_data"), part.get("file_url"),
                                    part.get("filename"), dropped)
            if block:
                blocks.append(block)
        else:
            dropped.append(f"part:{kind}")
    return blocks


def _item(item: dict, into: _Conversation, dropped: Drops) -> None:
    kind = item.get("type") or ("message" if "role" in item else "")
    if kind == "message":
        role = item.get("role", "user")
        if role in ("system", "developer"):
            into.system.append(text_of(item.get("content"), "\n\n"))
        else:
            into.add("assistant" if role == "assistant" else "user",
                     _input_blocks(item.get("content"), dropped))
    elif kind == "function_call":
        into.add("assistant", [tool_use_block(str(item.get("call_id", "")),
                                              item.get("name", ""),
                                              item.get("arguments") or "", dropped)])
    elif kind == "custom_tool_call":
        into.add("assistant", [tool_use_block(str(item.get("call_id", "")),
                                              item.get("name", ""),
                                              custom_arguments(item.get("input", "")), dropped)])
    elif kind in ("function_call_output", "custom_tool_call_output"):
        output = item.get("output", "")
        content = output if isinstance(output, str) else _input_blocks(output, dropped)
        into.add("user", [_tool_result(str(item.get("call_id", "")), content)])
    elif kind == "reasoning":
        dropped.append("reasoning")
    else:
        dropped.append(f"item:{kind}")


_RESPONSES_QUIET = {"store", "include", "truncation", "background", "prompt_cache_key",
                    "prompt_cache_retention", "safety_identifier", "metadata", "stream_options",
                    "previous_response_id", "context_management", "service_tier",
                    "parallel_tool_calls"}
_RESPONSES_HANDLED = {"model", "instructions", "input", "tools", "tool_choice",
                      "max_output_tokens", "reasoning", "temperature", "top_p", "user",
                      "stream", "text", *_RESPONSES_QUIET}


def responses_to_messages(body: dict) -> Translated:
    """A /responses body as a Messages body. A conversation behind
    `previous_response_id` must arrive already replayed into `input`."""
    dropped: Drops = []
    conversation = _Conversation()
    if body.get("instructions"):
        conversation.system.append(text_of(body["instructions"], "\n\n"))
    items = body.get("input") or []
    if isinstance(items, str):
        conversation.add("user", _blocks(items))
        items = []
    for item in items:
        if isinstance(item, dict):
            _item(item, conversation, dropped)
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    out = _settings(conversation, body, body.get("max_output_tokens"), effort, dropped)
    tools = []
    for tool in body.get("tools") or []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            tools.append(_function_tool(tool))
        elif kind == "custom":
            tools.append(_function_tool(custom_function_tool(tool, dropped)["function"]))
        else:
            dropped.append(f"tool:{kind}")
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        named = choice.get("name") if isinstance(choice, dict) and choice.get("type") in (
            "function", "custom") else None
        if isinstance(choice, dict) and named is None:
            dropped.append(f"tool_choice:{choice.get('type')}")
        _tool_choice(out, choice, named, body.get("parallel_tool_calls"))
    text = body.get("text")
    if isinstance(text, dict):
        if (text.get("format") or {}).get("type", "text") != "text":
            dropped.append("text.format")
        if text.get("verbosity"):
            dropped.append("text.verbosity")
    dropped += [k for k in body if k not in _RESPONSES_HANDLED]
    return _done(out, dropped)
