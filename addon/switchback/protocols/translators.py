"""Translators, keyed by (client protocol, upstream protocol).

A pair with an entry here can be served across protocols: the request is
translated before it goes out and the answer — whole or streamed — on its
way back. A pair without one cannot: the plan skips such a candidate, and
the trail says why. Teaching a new pair is one entry. Pure, but for the
time a translated Messages answer is stamped with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..vocabulary import Protocol
from .envelope import error_body
from .messages_errors import to_messages_error_body, to_openai_error_body
from .messages_request import (chat_to_messages, messages_to_chat, messages_to_responses,
                               responses_to_messages)
from .messages_response import (chat_to_messages_response, messages_answer_dropped,
                                messages_to_chat_response, messages_to_responses_response,
                                responses_answer_dropped, responses_to_messages_response)
from .messages_stream import (ChatToMessagesStream, MessagesToChatStream,
                              messages_to_responses_stream, responses_to_messages_stream)
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
    # An upstream error the client gets as it came, in the client's envelope
    # (body, status → body); None when both share one.
    error: Callable[[bytes, int], bytes] | None = None
    # What a whole upstream answer loses on the way, for the trail.
    lost: Callable[[dict[str, Any]], tuple[str, ...]] = lambda answer: ()


def _replayed(request: dict[str, Any]) -> dict[str, Any]:
    """A conversation behind `previous_response_id` reaches a translator
    already replayed into the input (see `history`); one that could not be
    replayed has no form in another protocol."""
    if previous := request.get("previous_response_id"):
        raise UnknownResponseId(previous)
    return request


def _now() -> int:
    """When a translated answer was made: Messages answers carry no time."""
    return int(time.time())


def _to_openai_error(body: bytes, status: int) -> bytes:
    return to_openai_error_body(body)


TRANSLATORS: dict[tuple[Protocol, Protocol], Translator] = {
    (Protocol.RESPONSES, Protocol.CHAT): Translator(
        lambda request, host: responses_to_chat(_replayed(request), upstream_host=host),
        chat_to_responses_response, ChatToResponsesStream, response_id=True),
    (Protocol.CHAT, Protocol.RESPONSES): Translator(
        lambda request, host: chat_to_responses(request),
        lambda answer, request, response_id: responses_to_chat_response(answer, request),
        lambda request, response_id: ResponsesToChatStream(request)),
    (Protocol.MESSAGES, Protocol.CHAT): Translator(
        lambda request, host: messages_to_chat(request, upstream_host=host),
        lambda answer, request, response_id: chat_to_messages_response(answer, request),
        lambda request, response_id: ChatToMessagesStream(request),
        error=to_messages_error_body),
    (Protocol.MESSAGES, Protocol.RESPONSES): Translator(
        lambda request, host: messages_to_responses(request),
        lambda answer, request, response_id: responses_to_messages_response(answer, request),
        lambda request, response_id: responses_to_messages_stream(request),
        error=to_messages_error_body, lost=responses_answer_dropped),
    (Protocol.CHAT, Protocol.MESSAGES): Translator(
        lambda request, host: chat_to_messages(request),
        lambda answer, request, response_id: messages_to_chat_response(answer, request,
                                                                       created=_now()),
        lambda request, response_id: MessagesToChatStream(request, created=_now()),
        error=_to_openai_error, lost=messages_answer_dropped),
    (Protocol.RESPONSES, Protocol.MESSAGES): Translator(
        lambda request, host: responses_to_messages(_replayed(request)),
        lambda answer, request, response_id: messages_to_responses_response(
            answer, request, response_id, created=_now()),
        lambda request, response_id: messages_to_responses_stream(request, response_id,
                                                                   created=_now()),
        response_id=True, error=_to_openai_error, lost=messages_answer_dropped),
}


def translator(client: Protocol, upstream: Protocol) -> Translator | None:
    """How a `client` call is served by an `upstream` speaking another
    protocol; None when it cannot be."""
    return TRANSLATORS.get((client, upstream))
