"""One attempt's protocol bridge: what the client speaks vs what the upstream
speaks, and the translators between them.

When both speak the same protocol everything passes through byte for byte
(only the model may be rewritten). Otherwise the request is translated before
it goes out and the answer — whole or streamed — on its way back. A
conversation behind `previous_response_id` reaches the bridge already
replayed into the input (see `history`); one that could not be replayed has
no chat form.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..jsonsafe import loads
from ..vocabulary import Protocol
from .envelope import error_body
from .metered import Metered
from .translate_request import chat_to_responses, responses_to_chat
from .translate_response import chat_to_responses_response, responses_to_chat_response
from .translate_stream import shaper as stream_shaper


class UnknownResponseId(Exception):
    """The client continues a response Switchback does not know."""

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id

    def body(self) -> bytes:
        return error_body(
            f"Response with id '{self.response_id}' not found. Switchback does not have (or "
            "no longer has) that conversation to carry it over to this provider.",
            "invalid_request_error", "previous_response_not_found", "previous_response_id")


@dataclass
class Bridge:
    client: Protocol  # the protocol the client speaks
    upstream: Protocol  # the protocol this attempt sends
    request: dict[str, Any]  # the body to send, in the client's protocol
    raw: bytes  # ... and its bytes
    response_id: str = ""  # the id a translated Responses answer carries; made when needed
    dropped: tuple[str, ...] = ()
    ask_usage: bool = True  # ask for a chat stream's usage when the client did not
    hides_usage: bool = False  # usage was asked for on the client's behalf: keep it from it

    def __post_init__(self) -> None:
        if self.translating and not self.response_id:
            self.response_id = "resp_" + secrets.token_hex(16)

    @property
    def translating(self) -> bool:
        return self.client != self.upstream

    def body(self, model: str, upstream_host: str) -> bytes:
        """The upstream request body for `model`."""
        if not self.translating:
            asked = self._asks_usage()
            if model == self.request.get("model"):
                return self.raw if asked else _with_usage(self.raw)
            body = {**self.request, "model": model}
            return json.dumps(body if asked else _asking_usage(body)).encode()
        if self.client is Protocol.RESPONSES:
            if previous := self.request.get("previous_response_id"):
                raise UnknownResponseId(previous)
            translated = responses_to_chat(self.request, upstream_host=upstream_host)
        else:
            translated = chat_to_responses(self.request)
        self.dropped = translated.dropped
        return json.dumps({**translated.body, "model": model}).encode()

    def answer(self, body: bytes) -> bytes:
        """A successful whole answer in the client's protocol. ValueError when
        it is not JSON to translate."""
        if not self.translating:
            return body
        upstream = loads(body)
        if not isinstance(upstream, dict):
            raise ValueError("the upstream answer is not a JSON object")
        if self.client is Protocol.RESPONSES:
            return json.dumps(chat_to_responses_response(upstream, self.request,
                                                         self.response_id)).encode()
        return json.dumps(responses_to_chat_response(upstream, self.request)).encode()

    def shaper(self) -> Metered:
        return Metered(stream_shaper(self.upstream, self.client, self.request, self.response_id),
                       self.upstream, self.hides_usage)

    def _asks_usage(self) -> bool:
        """Whether a passed-through request already gets usage back: a chat
        stream reports it only when asked (`stream_options.include_usage`);
        Switchback asks for it when the client did not, and notes to hide it."""
        request = self.request
        if self.client is not Protocol.CHAT or request.get("stream") is not True \
                or not self.ask_usage:
            return True
        options = request.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return True
        if options is not None and not isinstance(options, dict):
            return True  # a body the provider will judge as it is; not ours to fix
        self.hides_usage = True
        return False


_ASK_USAGE = b'"stream_options":{"include_usage":true},'


def _with_usage(raw: bytes) -> bytes:
    """A chat stream request asking for usage: the client's bytes with one
    member added at the front when it has no stream_options, else rewritten."""
    if b'"stream_options"' not in raw and raw.lstrip()[:1] == b"{":  # UTF-8, not UTF-16/32
        start = raw.index(b"{") + 1
        return raw[:start] + _ASK_USAGE + raw[start:]
    return json.dumps(_asking_usage(loads(raw))).encode()


def _asking_usage(body: dict) -> dict:
    """`body` with `stream_options.include_usage` set, its other options kept."""
    return {**body, "stream_options": {**(body.get("stream_options") or {}),
                                       "include_usage": True}}
