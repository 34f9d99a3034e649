"""Errors in the client's own envelope when the upstream speaks the other API.

A Messages client reads `{"type": "error", "error": {"type", "message"}}`
(SDKs raise by HTTP status; Claude Code also reads the words: "prompt is too
long" makes it compact the conversation). An OpenAI client reads
`{"error": {"message", "type", "param", "code"}}` (Codex reads `code`, e.g.
`context_length_exceeded`). The HTTP status stays the upstream's. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from ..jsonsafe import loads
from .envelope import error_object

_MESSAGES_TYPE_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                            403: "permission_error", 404: "not_found_error",
                            413: "request_too_large", 429: "rate_limit_error",
                            503: "overloaded_error", 529: "overloaded_error"}
# Messages error type → OpenAI (type, code).
_OPENAI_OF_MESSAGES = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
}
TOO_LONG = "prompt is too long"  # Anthropic's words for it, which Claude Code acts on
_OPENAI_TOO_LONG = "context_length_exceeded"


def messages_error(message: str, kind: str = "api_error") -> dict[str, Any]:
    """The Messages error envelope."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def _openai_error(payload: Any) -> dict:
    """The error object inside an OpenAI body or stream event (also a
    Responses `response.failed`, an `error` event, a bare string)."""
    if isinstance(payload, dict):
        response = payload.get("response")
        if isinstance(response, dict) and isinstance(response.get("error"), dict):
            return response["error"]
        error = payload.get("error", payload)
        return error if isinstance(error, dict) else {"message": str(error)}
    return {"message": str(payload)} if payload else {}


def openai_to_messages_error(payload: Any, status: int | None = None) -> dict[str, Any]:
    """An OpenAI error (body or stream event) as a Messages error."""
    error = _openai_error(payload)
    message = str(error.get("message") or error.get("code") or "upstream error")
    if error.get("code") == _OPENAI_TOO_LONG and TOO_LONG not in message.lower():
        message = f"{TOO_LONG}: {message}"
    kind = _MESSAGES_TYPE_BY_STATUS.get(status or 0)
    if kind is None:
        kind = "rate_limit_error" if error.get("type") in ("rate_limit_error", "tokens") \
            or error.get("code") == "rate_limit_exceeded" else \
            "invalid_request_error" if (status or 0) in range(400, 500) else "api_error"
    return messages_error(message, kind)


def messages_to_openai_error(payload: Any) -> dict[str, Any]:
    """A Messages error (body or `event: error`) as an OpenAI error."""
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {"message": str(payload or "upstream error")}
    message = str(error.get("message") or error.get("type") or "upstream error")
    kind, code = _OPENAI_OF_MESSAGES.get(str(error.get("type")), ("server_error", None))
    if TOO_LONG in message.lower():
        code = _OPENAI_TOO_LONG
    return error_object(message, kind, code)


def _payload(body: bytes) -> Any:
    """An error body's JSON; a body that is not JSON is carried as the message."""
    payload = loads(body)
    return payload if payload is not None else {
        "error": {"message": body.decode("utf-8", "replace")[:2000]}}


def to_messages_error_body(body: bytes, status: int) -> bytes:
    """An OpenAI upstream's error body for a Messages client."""
    return json.dumps(openai_to_messages_error(_payload(body), status)).encode()


def to_openai_error_body(body: bytes) -> bytes:
    """A Messages upstream's error body for a chat or Responses client."""
    return json.dumps(messages_to_openai_error(_payload(body))).encode()
