"""What one call used, read from the provider's answer in its own protocol.

Token counts follow OpenAI's convention in every protocol: `input` counts
every input token, `cached` the part of it read from the provider's cache
and `cache_write` the part written to it (Messages bills those apart);
`output` counts every output token and `reasoning` the part of it spent
thinking. Each protocol's reader is named in its `spec`. Pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from ..jsonsafe import loads
from .kinds import RESPONSES_TERMINAL, event_type
from .sse import Event

BYTES_PER_TOKEN = 4  # of English answer text, roughly


@dataclass(frozen=True)
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0  # of input
    reasoning: int = 0  # of output
    estimated: bool = False  # counted by Switchback, not reported by the provider
    model: str | None = None  # as the provider named it in its answer
    cache_write: int = 0  # of input: written to the provider's cache

    @property
    def total(self) -> int:
        return self.input + self.output

    def plus(self, other: Usage) -> Usage:
        """Both together: a call that took two attempts used what each did."""
        return Usage(self.input + other.input, self.output + other.output,
                     self.cached + other.cached, self.reasoning + other.reasoning,
                     self.estimated or other.estimated, self.model or other.model,
                     self.cache_write + other.cache_write)

    def kinds(self) -> tuple[tuple[str, int], ...]:
        """(kind, tokens) for the tokens metric."""
        return (("input", self.input), ("output", self.output), ("cached", self.cached),
                ("reasoning", self.reasoning), ("cache_write", self.cache_write))

    def text(self) -> str:
        """How a log line or a flow comment shows it."""
        extra = [f"{n} {k}" for k, n in (("cached", self.cached), ("cache write", self.cache_write),
                                         ("reasoning", self.reasoning)) if n]
        shown = f"{self.input} in, {self.output} out" + (f" ({', '.join(extra)})" if extra else "")
        return f"~{shown}" if self.estimated else shown


def count(value: Any) -> int:
    """A token count as a provider reports it: a positive int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _detail(usage: dict, name: str, field: str) -> int:
    details = usage.get(name)
    return count(details.get(field)) if isinstance(details, dict) else 0


def chat_usage(usage: Any, model: Any = None) -> Usage | None:
    """A chat completion's `usage` object; None when there is none."""
    if not isinstance(usage, dict):
        return None
    return Usage(count(usage.get("prompt_tokens")), count(usage.get("completion_tokens")),
                 _detail(usage, "prompt_tokens_details", "cached_tokens"),
                 _detail(usage, "completion_tokens_details", "reasoning_tokens"),
                 model=model if isinstance(model, str) else None)


def responses_usage(usage: Any, model: Any = None) -> Usage | None:
    """A Responses answer's `usage` object; None when there is none."""
    if not isinstance(usage, dict):
        return None
    return Usage(count(usage.get("input_tokens")), count(usage.get("output_tokens")),
                 _detail(usage, "input_tokens_details", "cached_tokens"),
                 _detail(usage, "output_tokens_details", "reasoning_tokens"),
                 model=model if isinstance(model, str) else None)


UsageReader = Callable[[Any, Any], "Usage | None"]  # (a usage object, the model named) → Usage


USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')  # raw: inside a string quotes are escaped
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]*)"')  # an answer names its model first
_DECODER = json.JSONDecoder()


def body_usage(read: UsageReader, body: bytes) -> Usage | None:
    """The usage in a whole answer's bytes, read by its protocol's `read`,
    parsing only its usage object (a raw `"usage": {` is structure: inside a
    string its quotes are escaped)."""
    # The last one: the answer's own usage comes after its content.
    found = USAGE_OBJECT.match(body, max(body.rfind(b'"usage"'), 0))
    if found is None:
        return None
    try:
        usage, _ = _DECODER.raw_decode(body[found.end() - 1:].decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    model = _MODEL.search(body)
    return read(usage, model.group(1).decode("utf-8", "replace") if model else None)


def answer_usage(read: UsageReader, answer: Any) -> Usage | None:
    """The usage of a whole answer (a chat completion, a response object, a
    message), or of a stream's usage chunk or terminal `response`."""
    if not isinstance(answer, dict):
        return None
    return read(answer.get("usage"), answer.get("model"))


# Reading a stream's usage as it passes: (an event, its JSON object, the usage
# read so far) → (the usage now, whether the event is a chat usage-only chunk).
StreamUsage = Callable[[Event, dict, "Usage | None"], "tuple[Usage | None, bool]"]


def chat_stream_usage(event: Event, payload: dict, known: Usage | None
                      ) -> tuple[Usage | None, bool]:
    """A chat stream reports usage in a chunk of its own (when asked)."""
    usage = chat_usage(payload.get("usage"), payload.get("model"))
    return usage or known, usage is not None and not payload.get("choices")


def responses_stream_usage(event: Event, payload: dict, known: Usage | None
                           ) -> tuple[Usage | None, bool]:
    """A Responses stream reports usage in its terminal event's response."""
    if event_type(event) in RESPONSES_TERMINAL:
        return answer_usage(responses_usage, payload.get("response")) or known, False
    return known, False


# A JSON string's body, unrolled and possessive: one tight loop per run of
# plain bytes, a step per escape, and no backtracking state kept per byte (an
# alternation per byte kept ~140 bytes of it per byte: seconds and a GB for a
# 10 MB event).
STRING = rb'"([^"\\]*+(?:\\.[^"\\]*+)*+)"'
# The answer's own text in an upstream event, for an estimate when usage never comes.
CHAT_TEXT = re.compile(rb'"(?:content|arguments|refusal|reasoning_content|reasoning)"'
                       rb'\s*:\s*' + STRING)  # deltas, tool arguments, refusals, reasoning
RESPONSES_TEXT = re.compile(rb'"delta"\s*:\s*' + STRING)


def tokens_of_bytes(size: int) -> int:
    """Output tokens in `size` bytes of answer text: for an answer whose
    usage never came."""
    return -(-size // BYTES_PER_TOKEN)


@dataclass(frozen=True)
class UsageAsk:
    """How a protocol whose streams report usage only when asked is asked for
    it on the client's behalf (the usage is then kept from the client)."""

    asked: Callable[[dict], bool]  # whether the client's request already gets usage back
    raw: Callable[[bytes], bytes]  # the client's bytes, asking
    body: Callable[[dict], dict]  # a rewritten body, asking


def chat_usage_asked(request: dict) -> bool:
    """A chat stream reports usage only when asked (`stream_options.include_usage`)."""
    if request.get("stream") is not True:
        return True
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return True
    return options is not None and not isinstance(options, dict)  # not ours to fix


_ASK_USAGE = b'"stream_options":{"include_usage":true},'


def with_chat_usage(raw: bytes) -> bytes:
    """A chat stream request asking for usage: the client's bytes with one
    member added at the front when it has no stream_options, else rewritten."""
    if b'"stream_options"' not in raw and raw.lstrip()[:1] == b"{":  # UTF-8, not UTF-16/32
        start = raw.index(b"{") + 1
        return raw[:start] + _ASK_USAGE + raw[start:]
    return json.dumps(asking_chat_usage(loads(raw))).encode()


def asking_chat_usage(body: dict) -> dict:
    """`body` with `stream_options.include_usage` set, its other options kept."""
    return {**body, "stream_options": {**(body.get("stream_options") or {}),
                                       "include_usage": True}}


CHAT_USAGE_ASK = UsageAsk(chat_usage_asked, with_chat_usage, asking_chat_usage)
