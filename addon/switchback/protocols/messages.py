"""Anthropic's Messages API (`POST …/v1/messages`): what its parts mean.

How its stream's head reads (`message_start`, `ping` and a block opened
empty say nothing yet; the first delta or a stop reason is the answer), its
pass-through shaper (a break after commit ends the stream with an `event:
error` the SDKs raise on), its usage (input counted apart from the cache
reads and writes), its error envelope, how its keys travel, and its signed
thinking — readable only by the account that wrote it. `spec` wires these
into the protocol's one `Spec`. Pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .kinds import Signal, event_type
from .reasoning import Seals, Sifted, sift_items
from .splice import prefilled_messages
from .sse import Event, encode
from .usage import STRING, Usage, answer_usage, count

VERSION = "2023-06-01"  # anthropic-version: required; sent when the client did not say
OAUTH_PREFIX = "sk-ant-oat"  # a subscription login's token: sent as a Bearer token
# Anthropic's error types; OpenAI-style kinds Switchback words its own errors in map here.
ERROR_TYPES = frozenset({"invalid_request_error", "authentication_error", "permission_error",
                         "not_found_error", "request_too_large", "rate_limit_error", "api_error",
                         "overloaded_error", "billing_error"})
_KINDS = {"server_error": "api_error", "insufficient_quota": "billing_error"}
THINKING = ("thinking", "redacted_thinking")
# The answer's own text in an event, for an estimate: text, tool input, thinking.
TEXT = re.compile(rb'"(?:text|partial_json|thinking)"\s*:\s*' + STRING)
# Bytes of the events the pass-through shaper must read (the rest it forwards unread).
_TRACKED = (b"message_stop", b"stop_reason", b"error", b"signature_delta", b"redacted_thinking")


def credential(key: str) -> tuple[str, str]:
    """A configured key as Anthropic expects it: API keys in `x-api-key`,
    subscription tokens as `authorization: Bearer`."""
    if key.startswith(OAUTH_PREFIX):
        return "authorization", f"Bearer {key}"
    return "x-api-key", key


def error_object(message: str, kind: str) -> dict[str, Any]:
    kind = _KINDS.get(kind, kind)
    return {"type": "error",
            "error": {"type": kind if kind in ERROR_TYPES else "api_error", "message": message}}


def error_body(message: str, kind: str, code: str | None = None,
               param: str | None = None) -> bytes:
    """Messages' error envelope, `{"type": "error", "error": {type, message}}`,
    which the anthropic SDKs raise as their usual exceptions."""
    return json.dumps(error_object(message, kind)).encode()


def session(body: Mapping[str, Any]) -> str | None:
    """The session a call names: `metadata.user_id`, which Claude Code fills
    with its user and session ids (the same all session long)."""
    metadata = body.get("metadata")
    name = metadata.get("user_id") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def _empty(block: Any) -> bool:
    """A content block opened with nothing in it yet: `text: ""`, a tool
    call's `input: {}`, `thinking: ""` (its id, name and type are no answer)."""
    return isinstance(block, dict) and not any(
        value for name, value in block.items() if name not in ("type", "id", "name"))


def signal(event: Event) -> Signal:
    """One Messages event at the head of a stream."""
    payload = event.json()
    if not isinstance(payload, dict):
        return Signal.MALFORMED
    kind = event_type(event)
    if kind == "error" or payload.get("type") == "error":
        return Signal.ERROR
    if kind == "content_block_delta":
        return Signal.CONTENT
    if kind == "content_block_start":
        return Signal.HOLD if _empty(payload.get("content_block")) else Signal.CONTENT
    if kind == "message_delta":
        delta = payload.get("delta")
        return Signal.END if isinstance(delta, dict) and delta.get("stop_reason") else Signal.HOLD
    if kind == "message_stop":
        return Signal.END
    return Signal.HOLD  # message_start, ping, an empty block's stop, anything new


class MessagesPassthrough:
    """A Messages stream forwarded as is. The answer is complete at the
    `message_delta` with its stop reason; SDKs stop at `message_stop`, which
    a stream that lost it after the stop reason gets here, once. A break
    before the stop reason ends it with an `event: error`. It remembers the
    thinking signatures it passed, for `final`."""

    def __init__(self) -> None:
        self.complete = False  # the stop reason came
        self._ended = False  # the client has had message_stop or an error event
        self._signatures: dict[Any, str] = {}  # content block index → its signature so far
        self._redacted: list[str] = []

    def feed(self, event: Event) -> bytes:
        raw = event.raw
        if not self._ended and b"data:" in raw and any(marker in raw for marker in _TRACKED):
            self._track(event)
        return raw

    def _track(self, event: Event) -> None:
        payload = event.json()
        if not isinstance(payload, dict):
            return
        kind = event_type(event)
        if kind in ("message_stop", "error"):
            self.complete = self.complete or kind == "message_stop"
            self._ended = True
        elif kind == "message_delta":
            delta = payload.get("delta")
            self.complete = self.complete or bool(isinstance(delta, dict)
                                                  and delta.get("stop_reason"))
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "signature_delta" \
                    and isinstance(delta.get("signature"), str):
                index = payload.get("index")
                self._signatures[index] = self._signatures.get(index, "") + delta["signature"]
        elif kind == "content_block_start":
            block = payload.get("content_block")
            if isinstance(block, dict) and block.get("type") == "redacted_thinking" \
                    and isinstance(block.get("data"), str):
                self._redacted.append(block["data"])

    @property
    def final(self) -> dict | None:
        """The signed thinking of a completed answer, as a message's content."""
        if not self.complete:
            return None
        return {"content": [*({"type": "thinking", "signature": s}
                              for s in self._signatures.values()),
                            *({"type": "redacted_thinking", "data": d} for d in self._redacted)]}

    def finish(self) -> bytes:
        return self.fail("upstream stream ended before message_stop")

    def fail(self, message: str) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        if self.complete:
            return encode({"type": "message_stop"}, "message_stop")
        return encode(error_object(message, "api_error"), "error")


def usage(found: Any, model: Any = None) -> Usage | None:
    """A Messages `usage` object. Its `input_tokens` leaves out what was read
    from and written to the cache; here `input` counts all three."""
    if not isinstance(found, dict):
        return None
    plain, written = count(found.get("input_tokens")), count(found.get(
        "cache_creation_input_tokens"))
    read = count(found.get("cache_read_input_tokens"))
    return Usage(plain + written + read, count(found.get("output_tokens")), read,
                 model=model if isinstance(model, str) else None, cache_write=written)


def stream_usage(event: Event, payload: dict, known: Usage | None
                 ) -> tuple[Usage | None, bool]:
    """`message_start` brings the input's usage; each `message_delta` the
    output so far (and, from some providers, the input's counts again)."""
    return reported_usage(payload, known), False


def reported_usage(payload: dict, known: Usage | None) -> Usage | None:
    """The usage after one stream event (its JSON object), given `known`."""
    kind = payload.get("type")
    if kind == "message_start":
        return answer_usage(usage, payload.get("message")) or known
    reported = payload.get("usage")
    if kind != "message_delta" or not isinstance(reported, dict):
        return known
    base = known or Usage()
    merged = {"input_tokens": base.input - base.cached - base.cache_write,
              "cache_creation_input_tokens": base.cache_write,
              "cache_read_input_tokens": base.cached, "output_tokens": base.output}
    merged.update({name: value for name, value in reported.items()
                   if name in merged and isinstance(value, int)})
    return usage(merged, base.model)


# --- signed thinking: bound to the account that wrote it -----------------------------------


def mark(block: Any) -> str | None:
    """A thinking block's mark: a digest of its signature (or a redacted
    block's data); None for any other block."""
    if not isinstance(block, dict) or block.get("type") not in THINKING:
        return None
    sealed = block.get("signature" if block["type"] == "thinking" else "data")
    if not isinstance(sealed, str) or not sealed:
        return None
    return hashlib.sha256(sealed.encode()).hexdigest()[:32]


def _blocks(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    return [block for message in messages if isinstance(message, dict)
            and isinstance(message.get("content"), list) for block in message["content"]] \
        if isinstance(messages, list) else []


def request_marks(body: Mapping[str, Any]) -> list[str]:
    """The marks of the signed thinking a request carries back."""
    return [found for block in _blocks(body) if (found := mark(block)) is not None]


def answer_marks(answer: Any) -> list[str]:
    """The marks of the signed thinking an answer (or a stream's `final`) wrote."""
    content = answer.get("content") if isinstance(answer, dict) else None
    return [found for block in content or () if (found := mark(block)) is not None] \
        if isinstance(content, list) else []


def thinking_blocks(body: Mapping[str, Any]) -> int:
    return sum(1 for block in _blocks(body)
               if isinstance(block, dict) and block.get("type") in THINKING)


def sift(body: Mapping[str, Any], producers: Mapping[str, str], to: str,
         keep_unknown: bool = True) -> Sifted:
    """`body` for candidate `to`: thinking another account signed is left
    out of its turns; thinking of unknown producer goes as sent
    (`keep_unknown`), or is left out too (after a refusal). A turn left with
    no content is left out whole."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return Sifted(dict(body), 0, 0)
    kept_messages: list[Any] = []
    left_out = unknown = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            kept_messages.append(message)
            continue
        kept, out, kept_unknown = sift_items(content, producers, to, keep_unknown, mark)
        left_out, unknown = left_out + out, unknown + kept_unknown
        if not out:
            kept_messages.append(message)
        elif kept:
            kept_messages.append({**message, "content": kept})
    if not left_out:
        return Sifted(dict(body), 0, unknown)
    sifted = {**body, "messages": kept_messages}
    if thinking_on(body) and _opens_with_thinking(messages) \
            and not _opens_with_thinking(kept_messages):
        # With thinking on, the API wants the final assistant turn (the one
        # before the latest tool results) to open with its thinking; that
        # thinking is another account's, so this attempt thinks no more.
        return Sifted(without_thinking(sifted), left_out, unknown,
                      "thinking turned off: the last turn's thinking is another account's")
    return Sifted(sifted, left_out, unknown)


def prefilled(body: dict, text: str) -> dict | None:
    """A Messages request asking for the rest of a started answer; None with
    thinking on: Anthropic wants the final assistant turn to open with its
    thinking block, and a started text has none (a restart serves instead)."""
    return None if thinking_on(body) else prefilled_messages(body, text)


def thinking_on(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _opens_with_thinking(messages: list[Any]) -> bool:
    """Whether the final assistant turn opens with a thinking block."""
    final = next((m for m in reversed(messages)
                  if isinstance(m, dict) and m.get("role") == "assistant"), None)
    content = final.get("content") if final is not None else None
    return isinstance(content, list) and bool(content) and isinstance(content[0], dict) \
        and content[0].get("type") in THINKING


def without_thinking(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with thinking off, and with the context edits that need it on
    (Claude Code's `clear_thinking_…`) left out."""
    out = {k: v for k, v in body.items() if k != "thinking"}
    management = body.get("context_management")
    edits = management.get("edits") if isinstance(management, dict) else None
    if isinstance(edits, list):
        kept = [e for e in edits if not (isinstance(e, dict) and str(e.get("type", ""))
                                         .startswith("clear_thinking"))]
        if kept:
            out["context_management"] = {**management, "edits": kept}
        elif len(management) == 1:
            del out["context_management"]
        else:
            out["context_management"] = {k: v for k, v in management.items() if k != "edits"}
    return out


def refused_as_unreadable(text: str) -> bool:
    """An error's words saying signed thinking was not this account's:
    "Invalid `signature` in `thinking` block", and the like for redacted data."""
    lowered = text.lower()
    return ("signature" in lowered or "redacted_thinking" in lowered) and any(
        word in lowered for word in ("invalid", "could not be verified", "not verified"))


SEALS = Seals(request_marks, sift, answer_marks, thinking_blocks, refused_as_unreadable,
              "thinking block")
