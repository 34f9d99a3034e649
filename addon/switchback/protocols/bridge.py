"""One attempt's protocol bridge: what the client speaks vs what the upstream
speaks, and the translators between them.

When both speak the same protocol everything passes through byte for byte
(only the model may be rewritten). Otherwise the request is translated before
it goes out and the answer — whole or streamed — on its way back. For a
Responses client on a chat upstream the bridge also keeps the conversation
history Switchback itself produced, so `previous_response_id` keeps working.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..jsonsafe import loads
from ..vocabulary import Protocol
from .shapers import StreamShaper
from .translate_request import chat_to_responses, responses_to_chat
from .translate_response import (chat_to_responses_response, reply_message,
                                 responses_to_chat_response)
from .translate_stream import shaper as stream_shaper

History = Callable[[str], list[dict] | None]


class UnknownResponseId(Exception):
    """The client continues a response Switchback does not know."""

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id

    def body(self) -> bytes:
        return json.dumps({"error": {
            "message": f"Response with id '{self.response_id}' not found. Switchback translated "
                       "this conversation and no longer has (or never had) that response.",
            "type": "invalid_request_error", "param": "previous_response_id",
            "code": "previous_response_not_found"}}).encode()


@dataclass
class Bridge:
    client: Protocol  # the protocol the client speaks
    upstream: Protocol  # the protocol this attempt sends
    request: dict[str, Any]  # the client's own body
    raw: bytes  # ... and its bytes
    response_id: str = ""  # the id a translated Responses answer carries; made when needed
    sent_messages: list[dict] = field(default_factory=list)
    dropped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.translating and not self.response_id:
            self.response_id = "resp_" + secrets.token_hex(16)

    @property
    def translating(self) -> bool:
        return self.client != self.upstream

    def body(self, model: str, upstream_host: str, history: History) -> bytes:
        """The upstream request body for `model`."""
        if not self.translating:
            if model == self.request.get("model"):
                return self.raw
            return json.dumps({**self.request, "model": model}).encode()
        if self.client is Protocol.RESPONSES:
            previous = self.request.get("previous_response_id")
            earlier = history(previous) if previous else None
            if previous and earlier is None:
                raise UnknownResponseId(previous)
            translated = responses_to_chat(self.request, earlier, upstream_host=upstream_host)
            self.sent_messages = translated.body.get("messages", [])
        else:
            translated = chat_to_responses(self.request)
        self.dropped = translated.dropped
        return json.dumps({**translated.body, "model": model}).encode()

    def answer(self, body: bytes) -> tuple[bytes, list[dict] | None]:
        """A successful whole answer in the client's protocol, and the history
        to remember under `response_id` (None when there is none). ValueError
        when the answer is not JSON to translate."""
        if not self.translating:
            return body, None
        upstream = loads(body)
        if not isinstance(upstream, dict):
            raise ValueError("the upstream answer is not a JSON object")
        if self.client is Protocol.RESPONSES:
            translated = chat_to_responses_response(upstream, self.request, self.response_id)
            return (json.dumps(translated).encode(),
                    self.history(reply_message(upstream, Protocol.CHAT)))
        return json.dumps(responses_to_chat_response(upstream, self.request)).encode(), None

    def shaper(self) -> StreamShaper:
        return stream_shaper(self.upstream, self.client, self.request, self.response_id)

    def history(self, reply: dict | None) -> list[dict] | None:
        """What a later `previous_response_id` must replay: the messages sent
        and the reply produced (only for Responses clients on chat upstreams)."""
        if self.client is not Protocol.RESPONSES or self.upstream is not Protocol.CHAT \
                or reply is None:
            return None
        return [*self.sent_messages, reply]
