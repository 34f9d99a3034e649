"""What the Messages API's settings and outcomes are in OpenAI's terms, and back:
stop reasons, usage, thinking budgets, the output limit Messages requires.

Shared by the request, whole-answer and stream translators so that all of
them say the same thing. The mappings (also in the README):

| Messages | chat | Responses |
|---|---|---|
| `end_turn`, `stop_sequence`, `pause_turn` | `stop` | `completed` |
| `tool_use` (or any answer with a tool call) | `tool_calls` | `completed` + function calls |
| `max_tokens`, `model_context_window_exceeded` | `length` | `incomplete` / `max_output_tokens` |
| `refusal` | `content_filter` | `incomplete` / `content_filter` |

Thinking budget → effort: below 4096 `low`, below 16384 `medium`, else
`high`; effort → budget: minimal 1024, low 2048, medium 8192, high 16384,
xhigh 24576 (low/medium/high survive the round trip). An OpenAI request
with no output limit gets `DEFAULT_MAX_TOKENS`, plus the thinking budget
when it thinks (Messages counts thinking inside `max_tokens`). Pure.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_TOKENS = 8192  # every current Claude model can write this much
MIN_BUDGET = 1024  # the smallest thinking budget Messages accepts
EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576}
_EFFORT_STEPS = ((4096, "low"), (16384, "medium"))

# ----------------------------------------------------------------- stop reasons

_STOP_TO_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                   "max_tokens": "length", "model_context_window_exceeded": "length",
                   "tool_use": "tool_calls", "refusal": "content_filter"}
_FINISH_TO_STOP = {"length": "max_tokens", "content_filter": "refusal"}


def finish_of_stop(stop_reason: str | None, has_tool_calls: bool) -> str:
    """A Messages `stop_reason` as a chat `finish_reason`; an answer with a
    tool call that ended normally ends as a tool call."""
    finish = _STOP_TO_FINISH.get(stop_reason or "", "stop")
    return "tool_calls" if has_tool_calls and finish == "stop" else finish


def stop_of_finish(finish_reason: str | None, has_tool_calls: bool) -> str:
    """A chat `finish_reason` as a Messages `stop_reason`. Chat does not say
    whether a stop sequence ended the answer, so `stop` is `end_turn`."""
    if finish_reason in _FINISH_TO_STOP:
        return _FINISH_TO_STOP[finish_reason]
    return "tool_use" if has_tool_calls or finish_reason in ("tool_calls", "function_call") \
        else "end_turn"


# ------------------------------------------------------------------------ usage


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_to_chat(usage: dict | None) -> dict | None:
    """Messages usage as chat usage: chat's prompt tokens count the cached
    ones too (Messages' `input_tokens` does not); cache writes ride along as
    `cache_write_tokens`, which the Responses usage keeps."""
    if not isinstance(usage, dict):
        return None
    read, written = _int(usage.get("cache_read_input_tokens")), \
        _int(usage.get("cache_creation_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + read + written
    output = _int(usage.get("output_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
            "completion_tokens_details": {"reasoning_tokens": 0}}


def usage_to_messages(usage: dict | None) -> dict:
    """Chat usage as Messages usage (zeros when there was none)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    read, written = _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))
    return {"input_tokens": max(_int(usage.get("prompt_tokens")) - read - written, 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": read,
            "output_tokens": _int(usage.get("completion_tokens"))}


# -------------------------------------------------------------------- thinking


def effort_of_thinking(thinking: Any) -> str | None:
    """A Messages `thinking` setting as a reasoning effort; None when it does
    not think or leaves the effort to the model (`adaptive`)."""
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = _int(thinking.get("budget_tokens"))
    return next((effort for limit, effort in _EFFORT_STEPS if budget < limit), "high")


def thinking_of_effort(effort: Any, max_tokens: int | None) -> dict | None:
    """A reasoning effort as a Messages `thinking` setting within
    `max_tokens` (None: the default limit will make room); None when the
    effort asks for no thinking or the limit leaves no room for it."""
    budget = EFFORT_BUDGET.get(effort) if isinstance(effort, str) else None
    if budget is None:
        return None
    if max_tokens is not None:
        budget = min(budget, max_tokens - 1)
    return {"type": "enabled", "budget_tokens": budget} if budget >= MIN_BUDGET else None


def max_tokens_for(limit: Any, thinking: dict | None) -> int:
    """The `max_tokens` a translated request carries: the client's, or the default."""
    if _int(limit):
        return limit
    return DEFAULT_MAX_TOKENS + (thinking or {}).get("budget_tokens", 0)
