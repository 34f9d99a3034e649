"""The OpenAI error envelope, built in one place: every error Switchback
itself answers (refusals, exhaustion, a broken stream's error chunk) has
the shape clients' SDKs already parse — `{"error": {message, type, param,
code}}` — so an SDK raises its usual exception with Switchback's words."""

from __future__ import annotations

import json
from typing import Any, Protocol as Interface

JSON_TYPE = ("content-type", "application/json")


class Envelope(Interface):
    """An error answer's bytes in one protocol's envelope; `kind` is said in
    OpenAI's words, which every envelope maps to its own."""

    def __call__(self, message: str, kind: str, code: str | None = None,
                 param: str | None = None) -> bytes: ...


def error_object(message: str, kind: str, code: str | None = None,
                 param: str | None = None) -> dict[str, Any]:
    """`{"error": …}` for `message`; `kind` is OpenAI's `type` (server_error,
    invalid_request_error, rate_limit_error, insufficient_quota, …)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_body(message: str, kind: str, code: str | None = None,
               param: str | None = None) -> bytes:
    """The envelope's bytes, for a whole answer."""
    return json.dumps(error_object(message, kind, code, param)).encode()
