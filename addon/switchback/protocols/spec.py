"""A protocol is one thing: everything the engine asks about it, in one place.

Each protocol Switchback speaks has one `Spec`: the endpoint that names it,
where it is recognised, which protocol it is switched to when a provider
lacks its endpoint, how its configured keys travel and which request headers
describe a call of it, how its stream's head reads and when it commits, its
pass-through shaper, its usage readers, its error envelope, and the content
only the account that produced it can read. The engine looks a protocol up
here and never branches on which one it is; translation between two
protocols is `translators`. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..vocabulary import Protocol
from . import messages
from .envelope import Envelope, error_body
from .kinds import Signal, chat_signal, classify, responses_signal
from .reasoning import RESPONSES_SEALS, Seals, session_name
from .shapers import ChatPassthrough, ResponsesPassthrough, StreamShaper
from .splice import (ChatSplice, MessagesSplice, ResponsesSplice, Splice, flagged,
                     prefilled_input, prefilled_messages)
from .sse import Event
from .usage import (CHAT_TEXT, CHAT_USAGE_ASK, RESPONSES_TEXT, StreamUsage, Usage, UsageAsk,
                    UsageReader, answer_usage, body_usage, chat_stream_usage, chat_usage,
                    responses_stream_usage, responses_usage)


def bearer(key: str) -> tuple[str, str]:
    return "authorization", f"Bearer {key}"


@dataclass(frozen=True)
class Spec:
    """One protocol, as the engine asks about it."""

    protocol: Protocol
    path: str  # the endpoint under a provider's base URL
    head: Callable[[Event], Signal]  # one event with data at the head of a stream
    passthrough: Callable[[], StreamShaper]  # a stream forwarded to a client of the same protocol
    usage: UsageReader  # a usage object (and the model named) → Usage
    stream_usage: StreamUsage  # what an event passing by says of usage
    answer_text: re.Pattern[bytes]  # the answer's text in an event, for an estimate
    error_body: Envelope  # every error Switchback itself answers a client of it
    credential: Callable[[str], tuple[str, str]] = bearer  # how a configured key is sent
    describing: frozenset[str] = frozenset()  # request headers any upstream of it may get
    defaults: tuple[tuple[str, str], ...] = ()  # request headers it needs, when not sent
    switch: Protocol | None = None  # tried on the same provider when the endpoint is missing
    hosts: tuple[str, ...] | None = None  # recognised there or where configured (None: anywhere)
    ask_usage: UsageAsk | None = None  # streams report usage only when asked
    seals: Seals | None = None  # content only its producer's account can read
    conversations: bool = False  # answers have ids a later call continues
    session: Callable[[Mapping[str, Any]], str | None] = session_name  # the session a call names
    count_path: str | None = None  # an endpoint counting a call's input tokens, making none
    # The rescue of a stream cut mid-answer: how a client's stream is continued,
    # how a request asks for the rest of a started answer, and how that start
    # is marked for a provider that wants it marked (`prefix: true`).
    splice: Callable[[], Splice] | None = None
    prefill: Callable[[dict, str], dict | None] | None = None
    mark_prefix: Callable[[dict], dict] | None = None

    def classify(self, event: Event) -> Signal:
        """Read one event at the head of a stream of this protocol."""
        return classify(self.head, event)

    def body_usage(self, body: bytes) -> Usage | None:
        """The usage in a whole answer's bytes."""
        return body_usage(self.usage, body)

    def answer_usage(self, answer: Any) -> Usage | None:
        """The usage of a whole answer, parsed."""
        return answer_usage(self.usage, answer)


SPECS: Mapping[Protocol, Spec] = {spec.protocol: spec for spec in (
    Spec(Protocol.CHAT, "/chat/completions", chat_signal, ChatPassthrough, chat_usage,
         chat_stream_usage, CHAT_TEXT, error_body, describing=frozenset({"openai-beta"}),
         switch=Protocol.RESPONSES, ask_usage=CHAT_USAGE_ASK, splice=ChatSplice,
         prefill=prefilled_messages, mark_prefix=flagged),
    Spec(Protocol.RESPONSES, "/responses", responses_signal, ResponsesPassthrough,
         responses_usage, responses_stream_usage, RESPONSES_TEXT, error_body,
         describing=frozenset({"openai-beta"}), switch=Protocol.CHAT, seals=RESPONSES_SEALS,
         conversations=True, splice=ResponsesSplice, prefill=prefilled_input),
    Spec(Protocol.MESSAGES, "/messages", messages.signal, messages.MessagesPassthrough,
         messages.usage, messages.stream_usage, messages.TEXT, messages.error_body,
         credential=messages.credential,
         describing=frozenset({"anthropic-version", "anthropic-beta"}),
         defaults=(("anthropic-version", messages.VERSION),), hosts=("api.anthropic.com",),
         switch=Protocol.CHAT, seals=messages.SEALS, session=messages.session,
         count_path="/messages/count_tokens",
         splice=MessagesSplice, prefill=messages.prefilled),
)}


def spec(protocol: Protocol) -> Spec:
    return SPECS[protocol]


def by_path(rest: str) -> tuple[Protocol, bool] | None:
    """The protocol whose endpoint `rest` (a path under a base URL) is, and
    whether it is the one that only counts tokens."""
    return next(((p, rest == s.count_path) for p, s in SPECS.items()
                 if rest in (s.path, s.count_path)), None)
