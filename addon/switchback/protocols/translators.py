"""Translators, keyed by (client protocol, upstream protocol).

A pair with an entry here can be served across protocols: the request is
translated before it goes out and the answer — whole or streamed — on its
way back. A pair without one cannot: the plan skips such a candidate, and
the trail says why. Teaching a new pair is one entry. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..vocabulary import Protocol
from .envelope import error_body
from .shapers import StreamShaper
from .translate_request import Translated, chat_to_responses, responses_to_chat
from .translate_response import chat_to_responses_response, responses_to_chat_response
from .translate_stream import ChatToResponsesStream, ResponsesToChatStream


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


@dataclass(frozen=True)
class Translator:
    """One direction of translation: the client speaks one protocol, the
    upstream another."""

    request: Callable[[dict[str, Any], str], Translated]  # client body, upstream host
    answer: Callable[[dict[str, Any], dict[str, Any], str], dict[str, Any]]
    # (upstream answer, client request, response id) → the client's answer
    stream: Callable[[dict[str, Any], str], StreamShaper]  # (client request, response id)
    response_id: bool = False  # the client's answer carries an id Switchback makes


def _responses_to_chat(request: dict[str, Any], upstream_host: str) -> Translated:
    """A conversation behind `previous_response_id` reaches here already
    replayed into the input (see `history`); one that could not be replayed
    has no chat form."""
    if previous := request.get("previous_response_id"):
        raise UnknownResponseId(previous)
    return responses_to_chat(request, upstream_host=upstream_host)


TRANSLATORS: dict[tuple[Protocol, Protocol], Translator] = {
    (Protocol.RESPONSES, Protocol.CHAT): Translator(
        _responses_to_chat, chat_to_responses_response, ChatToResponsesStream,
        response_id=True),
    (Protocol.CHAT, Protocol.RESPONSES): Translator(
        lambda request, host: chat_to_responses(request),
        lambda answer, request, response_id: responses_to_chat_response(answer, request),
        lambda request, response_id: ResponsesToChatStream(request)),
}


def translator(client: Protocol, upstream: Protocol) -> Translator | None:
    """How a `client` call is served by an `upstream` speaking another
    protocol; None when it cannot be."""
    return TRANSLATORS.get((client, upstream))
