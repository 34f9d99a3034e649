"""Request bodies between /responses and /chat/completions.

Pure functions: a body goes in, the other protocol's body comes out together
with the names of what had no equivalent, so the flow trail can say what the
provider never saw. Each item, part, tool and setting has its own small
converter, looked up by type in a table; an unknown type is dropped and named
rather than forwarded in a shape the provider would reject.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..jsonsafe import loads

OPENAI_HOST = "api.openai.com"
CUSTOM_INPUT = "input"  # the one string parameter a custom tool becomes

Drops = list[str]


@dataclass(frozen=True)
class Translated:
    """A translated body and the names of what could not be carried over."""

    body: dict
    dropped: tuple[str, ...]


def text_of(content: Any, sep: str = "\n") -> str:
    """The text of a content value: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    texts = [p.get("text", "") for p in content or [] if isinstance(p, dict) and "text" in p]
    return sep.join(texts)


def custom_arguments(text: str) -> str:
    """A custom tool's freeform input as the arguments of its function form."""
    return json.dumps({CUSTOM_INPUT: text})


def custom_input(arguments: str) -> str:
    """The freeform input back out of function arguments; raw text when the
    model did not wrap it as asked."""
    value = loads(arguments)
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return value[CUSTOM_INPUT]
    return arguments


Converter = Callable[[dict, Drops], dict | None]


def _each(values: Iterable[dict], table: dict[str, Converter], label: str,
          dropped: Drops) -> list[dict]:
    """Convert each value by its `type`; a type with no converter is named
    `label:type` in `dropped`, and a converter may drop a value itself."""
    out = []
    for value in values:
        convert = table.get(value.get("type", ""))
        if convert is None:
            dropped.append(f"{label}:{value.get('type')}")
        elif (converted := convert(value, dropped)) is not None:
            out.append(converted)
    return out


# ---------------------------------------------------------------- Responses → Chat
# Input content parts → chat content parts.


def _text_part(part: dict, dropped: Drops) -> dict | None:
    return {"type": "text", "text": part.get("text", "")}


def _image_part(part: dict, dropped: Drops) -> dict | None:
    if not part.get("image_url"):
        dropped.append("input_image(file_id)")
        return None
    image = {"url": part["image_url"]}
    if part.get("detail") in ("auto", "low", "high"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file_part(part: dict, dropped: Drops) -> dict | None:
    file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k)}
    if "file_data" not in file and "file_id" not in file:
        dropped.append("input_file(file_url)")
        return None
    return {"type": "file", "file": file}


_CHAT_PARTS: dict[str, Converter] = {
    "input_text": _text_part,
    "output_text": _text_part,
    "text": _text_part,
    "input_image": _image_part,
    "input_file": _file_part,
}


# Input items → chat messages. Each converter returns the messages the item
# becomes (none for reasoning).


def _message(item: dict, dropped: Drops) -> list[dict]:
    role, content = item.get("role", "user"), item.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    parts = content or []
    if role == "assistant":
        message: dict = {"role": role, "content": text_of(parts, "") or None}
        refusal = "".join(p.get("refusal", "") for p in parts if p.get("type") == "refusal")
        if refusal:
            message["refusal"] = refusal
        return [message]
    chat_parts = _each(parts, _CHAT_PARTS, "part", dropped)
    if len(chat_parts) == 1 and chat_parts[0]["type"] == "text":
        return [{"role": role, "content": chat_parts[0]["text"]}]  # widest support
    return [{"role": role, "content": chat_parts}]


def _tool_call_message(call_id: str, name: str, arguments: str) -> dict:
    call = {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _function_call(item: dict, dropped: Drops) -> list[dict]:
    return [_tool_call_message(item["call_id"], item["name"], item.get("arguments") or "{}")]


def _custom_tool_call(item: dict, dropped: Drops) -> list[dict]:
    return [_tool_call_message(item["call_id"], item["name"],
                               custom_arguments(item.get("input", "")))]


def _call_output(item: dict, dropped: Drops) -> list[dict]:
    output = item.get("output", "")
    if not isinstance(output, str):
        dropped.extend(f"{item['type']}({p.get('type')})" for p in output
                       if p.get("type") not in ("input_text", "output_text", "text"))
    return [{"role": "tool", "tool_call_id": item["call_id"], "content": text_of(output)}]


def _reasoning(item: dict, dropped: Drops) -> list[dict]:
    return []  # replaying reasoning breaks some servers; never sent upstream


_CHAT_ITEMS: dict[str, Callable[[dict, Drops], list[dict]]] = {
    "message": _message,
    "function_call": _function_call,
    "custom_tool_call": _custom_tool_call,
    "function_call_output": _call_output,
    "custom_tool_call_output": _call_output,
    "reasoning": _reasoning,
}


def _append(messages: list[dict], message: dict) -> None:
    """Tool calls join the assistant message right before them, so a run of
    call items becomes one assistant turn as chat servers expect."""
    previous = messages[-1] if messages else None
    if message.get("tool_calls") and previous and previous["role"] == "assistant":
        previous["tool_calls"] = [*previous.get("tool_calls", []), *message["tool_calls"]]
    else:
        messages.append(message)


def input_messages(items: str | list[dict], dropped: Drops) -> list[dict]:
    """Responses `input` (or output items being replayed) as chat messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict] = []
    for item in items:
        kind = item.get("type") or ("message" if "role" in item else "")
        convert = _CHAT_ITEMS.get(kind)
        if convert is None:
            dropped.append(f"item:{kind}")
            continue
        for message in convert(item, dropped):
            _append(messages, message)
    return messages


# Tools.


def _function_tool(tool: dict, dropped: Drops) -> dict | None:
    if isinstance(tool.get("function"), dict):
        return tool  # already chat-shaped
    keys = ("name", "description", "parameters", "strict")
    return {"type": "function", "function": {k: tool[k] for k in keys if tool.get(k) is not None}}


def custom_function_tool(tool: dict, dropped: Drops) -> dict | None:
    """A freeform tool becomes a function taking its whole input as one
    string; a grammar, which chat cannot enforce, is described instead."""
    fmt = tool.get("format") or {}
    about = "The raw tool input."
    if fmt.get("type") == "grammar":
        syntax, definition = fmt.get("syntax", ""), fmt.get("definition", "")
        about += f" It must match this {syntax} grammar:\n{definition}"
    function = {"name": tool["name"], "parameters": {
        "type": "object",
        "properties": {CUSTOM_INPUT: {"type": "string", "description": about}},
        "required": [CUSTOM_INPUT],
        "additionalProperties": False,
    }}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


_CHAT_TOOLS: dict[str, Converter] = {
    "function": _function_tool,
    "custom": custom_function_tool,
}


def _chat_named(choice: dict) -> dict:
    return {"type": "function", "function": {"name": choice["name"]}}


def _chat_tool_choice(choice: Any, dropped: Drops) -> Any:
    if isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind in ("function", "custom"):
        return _chat_named(choice)
    if kind == "allowed_tools":
        named = [_chat_named(t) for t in choice.get("tools", [])
                 if t.get("type") in ("function", "custom")]
        return {"type": "allowed_tools",
                "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": named}}
    dropped.append(f"tool_choice:{kind}")
    return None


def _chat_response_format(fmt: dict) -> dict | None:
    kind = fmt.get("type")
    if kind == "json_schema":
        keys = ("name", "description", "schema", "strict")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    if kind == "json_object":
        return {"type": "json_object"}
    return None  # plain text is the default


# Responses settings that have no chat form but change nothing the provider
# must know: dropped quietly, and echoed back in the response object.
_RESPONSES_ONLY = frozenset({
    "store", "include", "truncation", "background", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "safety_identifier",
    "metadata", "max_tool_calls", "stream_options", "previous_response_id",
    "context_management",
})
_SAME_IN_CHAT = ("model", "temperature", "top_p", "user", "service_tier")


def responses_to_chat(body: dict, *, upstream_host: str = "") -> Translated:
    """A /responses body as a /chat/completions body. A conversation behind
    `previous_response_id` arrives already replayed into `input`."""
    dropped: Drops = []
    messages: list[dict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": text_of(body["instructions"])})
    messages += input_messages(body.get("input") or [], dropped)
    chat: dict = {k: body[k] for k in _SAME_IN_CHAT if body.get(k) is not None}
    chat["messages"] = messages

    tools = _each(body.get("tools") or [], _CHAT_TOOLS, "tool", dropped)
    if tools:
        chat["tools"] = tools
        if body.get("tool_choice") is not None:
            choice = _chat_tool_choice(body["tool_choice"], dropped)
            if choice is not None:
                chat["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]

    text = body.get("text") or {}
    if text.get("format") and (fmt := _chat_response_format(text["format"])):
        chat["response_format"] = fmt
    if text.get("verbosity"):
        dropped.append("text.verbosity")
    if body.get("max_output_tokens") is not None:
        key = "max_completion_tokens" if upstream_host == OPENAI_HOST else "max_tokens"
        chat[key] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}

    handled = {*_SAME_IN_CHAT, *_RESPONSES_ONLY, "instructions", "input", "tools",
               "tool_choice", "parallel_tool_calls", "text", "max_output_tokens",
               "reasoning", "stream"}
    dropped += [k for k in body if k not in handled]
    return Translated(chat, tuple(dropped))


# ---------------------------------------------------------------- Chat → Responses
# Chat content parts → input content parts.


def _input_text(part: dict, dropped: Drops) -> dict | None:
    return {"type": "input_text", "text": part.get("text", "")}


def _input_image(part: dict, dropped: Drops) -> dict | None:
    image = part.get("image_url") or {}
    url = image if isinstance(image, str) else image.get("url")
    detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
    return {"type": "input_image", "image_url": url, "detail": detail}


def _input_file(part: dict, dropped: Drops) -> dict | None:
    file = part.get("file") or {}
    return {"type": "input_file",
            **{k: file[k] for k in ("file_data", "file_id", "filename") if file.get(k)}}


_INPUT_PARTS: dict[str, Converter] = {
    "text": _input_text,
    "image_url": _input_image,
    "file": _input_file,
}


def _input_parts(content: Any, dropped: Drops) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    return _each(content or [], _INPUT_PARTS, "part", dropped)


# Chat messages → input items. `custom_calls` collects the ids of custom tool
# calls so their results go back as custom outputs.


def _plain_item(message: dict, dropped: Drops, custom_calls: set[str]) -> list[dict]:
    return [{"type": "message", "role": message["role"],
             "content": _input_parts(message.get("content"), dropped)}]


def _function_call_item(call: dict) -> dict:
    function = call.get("function") or {}
    return {"type": "function_call", "call_id": call["id"], "name": function.get("name", ""),
            "arguments": function.get("arguments") or "{}"}


def _custom_call_item(call: dict) -> dict:
    custom = call.get("custom") or {}
    return {"type": "custom_tool_call", "call_id": call["id"], "name": custom.get("name", ""),
            "input": custom.get("input", "")}


_CALL_ITEMS: dict[str, Callable[[dict], dict]] = {
    "function": _function_call_item,
    "custom": _custom_call_item,
}


def _assistant_items(message: dict, dropped: Drops, custom_calls: set[str]) -> list[dict]:
    """Assistant text goes back as a plain string, the one assistant form
    Responses input takes without an item id; a refusal is kept as text."""
    content = message.get("content")
    texts = [content] if isinstance(content, str) else [
        p.get("text", p.get("refusal", "")) for p in content or []]
    text = "".join(texts) + (message.get("refusal") or "")
    items = [{"type": "message", "role": "assistant", "content": text}] if text else []
    for call in message.get("tool_calls") or []:
        kind = call.get("type", "function")
        convert = _CALL_ITEMS.get(kind)
        if convert is None:
            dropped.append(f"tool_call:{kind}")
            continue
        if kind == "custom":
            custom_calls.add(call["id"])
        items.append(convert(call))
    if message.get("function_call"):
        dropped.append("function_call")
    return items


def _tool_item(message: dict, dropped: Drops, custom_calls: set[str]) -> list[dict]:
    call_id = message.get("tool_call_id", "")
    kind = "custom_tool_call_output" if call_id in custom_calls else "function_call_output"
    return [{"type": kind, "call_id": call_id, "output": text_of(message.get("content"))}]


_INPUT_ITEMS: dict[str, Callable[[dict, Drops, set[str]], list[dict]]] = {
    "system": _plain_item,
    "developer": _plain_item,
    "user": _plain_item,
    "assistant": _assistant_items,
    "tool": _tool_item,
}


def _chat_function_tool(tool: dict, dropped: Drops) -> dict | None:
    """Flattened; `strict` made explicit because Responses defaults it on."""
    function = tool.get("function") or {}
    out = {"type": "function", "name": function.get("name", ""),
           "parameters": function.get("parameters") or {"type": "object", "properties": {}},
           "strict": bool(function.get("strict", False))}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _chat_custom_tool(tool: dict, dropped: Drops) -> dict | None:
    custom = tool.get("custom") or {}
    out = {"type": "custom", "name": custom.get("name", "")}
    if custom.get("description"):
        out["description"] = custom["description"]
    fmt = custom.get("format") or {}
    if fmt.get("type") == "grammar":
        out["format"] = {"type": "grammar", **(fmt.get("grammar") or {})}
    elif fmt:
        out["format"] = {"type": "text"}
    return out


_RESPONSES_TOOLS: dict[str, Converter] = {
    "function": _chat_function_tool,
    "custom": _chat_custom_tool,
}


def _flat_named(choice: dict) -> dict:
    kind = choice.get("type", "function")
    return {"type": kind, "name": (choice.get(kind) or {}).get("name", "")}


def _responses_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        return {"type": "allowed_tools", "mode": allowed.get("mode", "auto"),
                "tools": [_flat_named(t) for t in allowed.get("tools", [])]}
    if choice.get("type") in ("function", "custom"):
        return _flat_named(choice)
    return choice


def _responses_text_format(fmt: dict) -> dict:
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", **(fmt.get("json_schema") or {})}
    return {"type": fmt.get("type", "text")}


# Chat settings that Responses does not need: dropped quietly.
_CHAT_ONLY = frozenset({"store", "stream_options", "n", "logprobs"})
_SAME_IN_RESPONSES = ("model", "temperature", "top_p", "user", "metadata", "service_tier",
                      "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
                      "top_logprobs", "stream")


def chat_to_responses(body: dict) -> Translated:
    """A /chat/completions body as a /responses body (never stored upstream)."""
    dropped: Drops = []
    messages = list(body.get("messages") or [])
    instructions = []
    while messages and messages[0].get("role") in ("system", "developer"):
        instructions.append(text_of(messages.pop(0).get("content"), "\n\n"))
    items: list[dict] = []
    custom_calls: set[str] = set()
    for message in messages:
        convert = _INPUT_ITEMS.get(message.get("role", ""))
        if convert is None:
            dropped.append(f"message:{message.get('role')}")
        else:
            items += convert(message, dropped, custom_calls)

    out: dict = {k: body[k] for k in _SAME_IN_RESPONSES if body.get(k) is not None}
    if instructions:
        out["instructions"] = "\n\n".join(instructions)
    out["input"] = items
    tools = _each(body.get("tools") or [], _RESPONSES_TOOLS, "tool", dropped)
    if tools:
        out["tools"] = tools
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _responses_tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    text: dict = {}
    if body.get("response_format"):
        text["format"] = _responses_text_format(body["response_format"])
    if body.get("verbosity"):
        text["verbosity"] = body["verbosity"]
    if text:
        out["text"] = text
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        out["max_output_tokens"] = limit
    if body.get("reasoning_effort"):
        out["reasoning"] = {"effort": body["reasoning_effort"]}
    out["store"] = False
    if (body.get("n") or 1) > 1:
        dropped.append("n")
    if body.get("logprobs"):
        dropped.append("logprobs")

    handled = {*_SAME_IN_RESPONSES, *_CHAT_ONLY, "messages", "tools", "tool_choice",
               "parallel_tool_calls", "response_format", "verbosity", "max_tokens",
               "max_completion_tokens", "reasoning_effort"}
    dropped += [k for k in body if k not in handled]
    return Translated(out, tuple(dropped))
