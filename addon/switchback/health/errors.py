"""One upstream error, read once.

An error body is parsed here, once per attempt, into an `ErrorRecord`; the
verdict, the hints, the exhaustion answer and the trail all read that
record instead of parsing the bytes again. It understands the shapes
providers use: `{"error": {...}}`, a list of those (Gemini), a Responses
`{"response": {"error": ...}}`, a bare string, or text that is not JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..jsonsafe import loads

SHOWN_TEXT = 500  # of a body that is not JSON, kept as its message


@dataclass(frozen=True)
class ErrorRecord:
    code: str = ""
    type: str = ""
    param: str = ""
    message: str = ""
    raw: Any = None  # the parsed body, for checks on its shape
    objects: tuple[dict[str, Any], ...] = ()  # every error object (Gemini sends a list)

    @property
    def text(self) -> str:
        return f"{self.code} {self.type} {self.message}".lower()

    @property
    def enveloped(self) -> bool:
        """The body is an error object, not the payload itself."""
        return first_error(self.raw) is not self.raw


NO_ERROR = ErrorRecord()


def first_error(payload: Any) -> Any:
    """The error object of a body: `{"error": …}`, a list of those (Gemini), or
    a Responses `{"response": {"error": …}}`; else the payload itself."""
    while isinstance(payload, list):
        payload = payload[0] if payload else None
    if not isinstance(payload, dict):
        return payload
    if "error" in payload and payload["error"] is not None:
        return payload["error"]
    if isinstance(payload.get("response"), dict) and payload["response"].get("error"):
        return payload["response"]["error"]
    return payload


def _objects(payload: Any) -> tuple[dict[str, Any], ...]:
    items = payload if isinstance(payload, list) else [payload]
    return tuple(e for item in items
                 if isinstance(item, dict) and isinstance(e := item.get("error"), dict))


def read_error(body: bytes) -> ErrorRecord:
    """The code, type, param and message of an error body, whatever its shape."""
    if not body.strip():
        return NO_ERROR
    payload = loads(body)
    if payload is None:
        return ErrorRecord(message=body[:SHOWN_TEXT].decode("utf-8", "replace"))
    err = first_error(payload)
    if isinstance(err, str):
        return ErrorRecord(message=err, raw=payload, objects=_objects(payload))
    if not isinstance(err, dict):
        return ErrorRecord(raw=payload)

    def text(name: str) -> str:
        value = err.get(name)
        return value if isinstance(value, str) else ("" if value is None else str(value))

    return ErrorRecord(text("code") or text("status"), text("type"), text("param"),
                       text("message") or text("detail"), payload, _objects(payload))
