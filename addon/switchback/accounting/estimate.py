"""A call's worst case, before it is made: what a budget holds for it.

Input tokens are estimated from the request's text — generously, since a
hold that is too small lets a budget overrun — and output tokens are the
most the request allows (`max_output_tokens`, `max_completion_tokens`,
`max_tokens`), else a configured default. Pure.
"""

from __future__ import annotations

from typing import Any

from ..protocols.usage import Usage

IMAGE_TOKENS = 1_500  # an inline image or file (a data: URL): a high-detail image's worth
MESSAGE_TOKENS = 4  # each message's framing
OUTPUT_LIMITS = ("max_output_tokens", "max_completion_tokens", "max_tokens")
MAX_OUTPUT = 10_000_000  # no model writes more in one answer; a larger limit is no limit
DEFAULT_OUTPUT_TOKENS = 4096  # held for a call that sets no output limit


def text_tokens(text: str) -> int:
    """At most about one token per three ASCII characters, and one per other
    character (CJK scripts are about a token each)."""
    chars = len(text)
    wide = (len(text.encode("utf-8", "replace")) - chars) // 2
    return -(-(chars - wide) // 3) + wide


def input_tokens(body: Any) -> int:
    """Every string in the request counted as text, inline media as media."""
    tokens, stack = 0, [body]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            tokens += IMAGE_TOKENS if value.startswith("data:") else text_tokens(value)
        elif isinstance(value, dict):
            tokens += MESSAGE_TOKENS
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return tokens


def output_tokens(body: dict, default: int) -> int:
    """The most one answer may write, times the answers asked for (`n`)."""
    most = default
    for name in OUTPUT_LIMITS:
        limit = body.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            most = min(limit, MAX_OUTPUT)
            break
    n = body.get("n")
    return most * (min(n, 128) if isinstance(n, int) and not isinstance(n, bool) and n > 1
                   else 1)


def worst_case(body: dict, default_output: int) -> Usage:
    return Usage(input_tokens(body), output_tokens(body, default_output), estimated=True)
