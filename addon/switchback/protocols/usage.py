"""What one call used, read from the provider's answer in its own protocol.

Token counts follow OpenAI's convention in both protocols: `input` counts
every input token and `cached` the part of it read from the provider's
cache; `output` counts every output token and `reasoning` the part of it
spent thinking. Pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..vocabulary import Protocol

BYTES_PER_TOKEN = 4  # of English answer text, roughly


@dataclass(frozen=True)
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0  # of input
    reasoning: int = 0  # of output
    estimated: bool = False  # counted by Switchback, not reported by the provider
    model: str | None = None  # as the provider named it in its answer

    @property
    def total(self) -> int:
        return self.input + self.output

    def plus(self, other: Usage) -> Usage:
        """Both together: a call that took two attempts used what each did."""
        return Usage(self.input + other.input, self.output + other.output,
                     self.cached + other.cached, self.reasoning + other.reasoning,
                     self.estimated or other.estimated, self.model or other.model)

    def kinds(self) -> tuple[tuple[str, int], ...]:
        """(kind, tokens) for the tokens metric."""
        return (("input", self.input), ("output", self.output), ("cached", self.cached),
                ("reasoning", self.reasoning))

    def text(self) -> str:
        """How a log line or a flow comment shows it."""
        extra = [f"{n} {k}" for k, n in (("cached", self.cached), ("reasoning", self.reasoning))
                 if n]
        shown = f"{self.input} in, {self.output} out" + (f" ({', '.join(extra)})" if extra else "")
        return f"~{shown}" if self.estimated else shown


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _detail(usage: dict, name: str, field: str) -> int:
    details = usage.get(name)
    return _count(details.get(field)) if isinstance(details, dict) else 0


def parse_usage(protocol: Protocol, usage: Any, model: Any = None) -> Usage | None:
    """A `usage` object of `protocol`'s shape; None when there is none."""
    if not isinstance(usage, dict):
        return None
    model = model if isinstance(model, str) else None
    if protocol is Protocol.CHAT:
        return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")),
                     _detail(usage, "prompt_tokens_details", "cached_tokens"),
                     _detail(usage, "completion_tokens_details", "reasoning_tokens"), model=model)
    return Usage(_count(usage.get("input_tokens")), _count(usage.get("output_tokens")),
                 _detail(usage, "input_tokens_details", "cached_tokens"),
                 _detail(usage, "output_tokens_details", "reasoning_tokens"), model=model)


USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')  # raw: inside a string quotes are escaped
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]*)"')  # an answer names its model first
_DECODER = json.JSONDecoder()


def body_usage(protocol: Protocol, body: bytes) -> Usage | None:
    """The usage in a whole answer's bytes, parsing only its usage object
    (a raw `"usage": {` is structure: inside a string its quotes are escaped)."""
    # The last one: the answer's own usage comes after its content.
    found = USAGE_OBJECT.match(body, max(body.rfind(b'"usage"'), 0))
    if found is None:
        return None
    try:
        usage, _ = _DECODER.raw_decode(body[found.end() - 1:].decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    model = _MODEL.search(body)
    return parse_usage(protocol, usage, model.group(1).decode("utf-8", "replace") if model
                       else None)


def answer_usage(protocol: Protocol, answer: Any) -> Usage | None:
    """The usage of a whole answer (a chat completion or a response object),
    or of a stream's usage chunk or terminal `response`."""
    if not isinstance(answer, dict):
        return None
    return parse_usage(protocol, answer.get("usage"), answer.get("model"))


def tokens_of_bytes(size: int) -> int:
    """Output tokens in `size` bytes of answer text: for an answer whose
    usage never came."""
    return -(-size // BYTES_PER_TOKEN)
