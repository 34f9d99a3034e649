"""The attempt loop.

For one recognised call: try each planned candidate in turn, judge every
failure, record its cooldown and move on — all before any byte reaches the
client. A streaming answer is held by the first-chunk gate until its head
shows success. The result is either a whole answer (`Answer`) or a
committed stream (`Committed`) for the relay to deliver, plus the record of
every attempt for the trail, mitmweb and metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocols.usage import Usage, body_usage
from ..config import Config
from ..health.exhaustion import JSON, Failure, exhausted_answer
from ..health.hints import Hints, parse_hints
from ..state.conversations import Conversations
from ..health.cooldown import Cooling
from ..state.cooldowns import Health, key_scope, model_scope
from ..state.protocol_memory import ProtocolMemory
from ..health.verdict import Action, Outcome, Scope, Verdict, error_info, judge
from ..plan import Candidate, plan
from ..jsonsafe import loads
from ..protocols.bridge import Bridge, UnknownResponseId
from ..protocols.history import Turn, answered, extend, replay
from ..protocols.sse import EventTooLarge, SseParser
from ..providers import Provider, ProviderTable
from ..recognise import LlmCall, fingerprint
from ..redact import Redactor
from ..trail import Trail, seconds_text
from ..vocabulary import CallOutcome, FailureKind, Protocol, Reason
from .delivery import Committed, deliver, first_bytes
from .gate import Head, read_head
from .headers import masked, own_call, response_headers, upstream_headers
from .upstream import (TRANSPORT_ERRORS, Upstream, is_event_stream, keep_waiting, read_body,
                       transport_detail, transport_failure)

MAX_ERROR_BODY = 1 << 20
logger = logging.getLogger(__name__)


def caller(call: LlmCall) -> str:
    """Whose conversation a call's is: its own credential's fingerprint."""
    return fingerprint(call.credential) if call.credential else ""


@dataclass
class Answer:
    """A whole answer for `Response.make`."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class AttemptRecord:
    """One upstream attempt as it happened: the request as sent (credentials
    masked), what came back, and what was made of it."""

    provider: str
    key: str  # the fingerprint of the credential sent ("" when none)
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    started: float
    status: int | None = None
    first_byte: float | None = None  # seconds until the answer's head
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""  # as the client could see it (secrets masked)
    result: str = ""  # the trail's words for it
    kind: str = ""  # the status code, or why there was none
    reason: Reason | None = None  # the verdict's, for a failure
    cooldown: float | None = None
    scope: Scope | None = None  # of the cooldown
    switched_to: Protocol | None = None  # the protocol retried on a missing endpoint
    ended: float = 0.0


@dataclass
class Result:
    delivery: Answer | Committed
    trail: Trail
    served_by: Candidate | None = None
    failures: int = 0  # failed attempts before the answer
    switched: bool = False  # the answer was translated from the other protocol
    attempts: list[AttemptRecord] = field(default_factory=list)
    outcome: CallOutcome = CallOutcome.OK
    usage: Usage | None = None  # of a whole answer, as the provider reported it


@dataclass(frozen=True)
class Continuation:
    """A Responses call that continues `previous`, and what Switchback knows
    of that conversation."""

    previous: str
    turn: Turn | None  # the conversation up to it, when Switchback carried it
    producer: str | None  # the candidate that produced it (`Candidate.owner`)

    def order(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        """The producer first, ahead of key rotation. With no history to hand
        anybody else, only the producer (or, unknown, the first candidate)."""
        ordered = tuple(sorted(candidates, key=lambda c: c.owner != self.producer))
        return ordered if self.turn is not None else ordered[:1]

    def request_for(self, candidate: Candidate, body: dict) -> tuple[dict, int] | None:
        """What to send `candidate` in place of the client's body: the history
        replayed, and how many reasoning items were left out; None when
        the client's body serves (the producer continues it on Responses) or
        there is no history to replay."""
        if self.turn is None or (candidate.owner == self.producer
                                 and candidate.protocol is Protocol.RESPONSES):
            return None
        return replay(body, self.turn.items, candidate.owner)


@dataclass
class _Context:
    """What the loop learns about one call as it goes."""

    call: LlmCall
    redact: Redactor
    continuation: Continuation | None = None
    trail: Trail = field(default_factory=Trail)
    failures: list[Failure] = field(default_factory=list)
    dead_providers: set[str] = field(default_factory=set)
    # Where this call found an endpoint missing: (provider, model) → the protocol to speak.
    protocol_for: dict[tuple[str, str], Protocol] = field(default_factory=dict)
    switch: Candidate | None = None  # the same candidate in the other protocol, to try next
    served_by: Candidate | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    usage: Usage | None = None

    def in_call_protocol(self, candidate: Candidate) -> Candidate:
        """A provider switched earlier in this call stays switched for its other keys."""
        protocol = self.protocol_for.get((candidate.provider.name, candidate.model),
                                         candidate.protocol)
        return candidate if protocol is candidate.protocol else candidate.switched()

    def label(self, candidate: Candidate) -> str:
        """The trail's name for an attempt; the protocol is shown when translated."""
        if candidate.protocol is self.call.protocol:
            return candidate.label
        return f"{candidate.label}[{candidate.protocol}]"


class Dispatcher:
    """Runs the attempt loop for recognised calls."""

    def __init__(self, upstream: Upstream, config: Config, table: ProviderTable,
                 health: Health, protocols: ProtocolMemory, conversations: Conversations,
                 redactor: Redactor | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.upstream, self.config, self.table = upstream, config, table
        self.health, self.protocols, self.conversations = health, protocols, conversations
        self.redactor = redactor or Redactor(k for p in config.providers.values() for k in p.keys)
        self.clock = clock
        # Providers that refuse `stream_options` (Mistral answers 422): their
        # chat streams go without the usage Switchback would ask for.
        self.refuse_usage_option: set[str] = set()

    async def run(self, call: LlmCall) -> Result:
        ctx = _Context(call, self.redactor.including(call.credential),
                       await self._continuation(call))
        planned = plan(call, self.config, self.table, self._rotation,
                       lambda provider, model: self.protocols.get(provider.name, model,
                                                                  call.protocol))
        for note in planned.skipped:
            ctx.trail.note(note)
        candidates = planned.candidates
        if ctx.continuation is not None:
            candidates = ctx.continuation.order(candidates)
        pending = candidates
        for round_ in range(2):
            for planned_candidate in pending:
                candidate = ctx.in_call_protocol(planned_candidate)
                if candidate.provider.name in ctx.dead_providers:
                    continue
                cooling = self._cooling(candidate)
                if cooling is not None:
                    if round_ == 0:
                        ctx.trail.skip(candidate.label, cooling.until - self.clock())
                    continue
                delivery = await self._attempt(ctx, candidate)
                if delivery is None and ctx.switch is not None:
                    switched, ctx.switch = ctx.switch, None
                    delivery = await self._attempt(ctx, switched)
                if delivery is not None:
                    return self._result(ctx, delivery, CallOutcome.OK if ctx.served_by
                                        else CallOutcome.PASSED_THROUGH)
            # Everything failed or is cooling: if a candidate comes back soon
            # enough, wait for it rather than fail the call.
            returning = self._returning(ctx, candidates)
            if not returning or min(returning.values()) > self.config.max_wait:
                break
            wait = min(returning.values())
            ctx.trail.note(f"waited {seconds_text(wait)}")
            await asyncio.sleep(wait + 0.02)  # cooldowns use the wall clock; sleep may not
            pending = tuple(c for c, left in returning.items() if left <= wait)
        coolings = [c for c in map(self._cooling, candidates) if c is not None]
        status, headers, body = exhausted_answer(ctx.failures, coolings, self.clock(), call.model)
        return self._result(ctx, Answer(status, headers, body), CallOutcome.EXHAUSTED)

    async def _continuation(self, call: LlmCall) -> Continuation | None:
        """What Switchback knows of the conversation a Responses call continues."""
        previous = call.body.get("previous_response_id")
        if call.protocol is not Protocol.RESPONSES or not isinstance(previous, str):
            return None
        # Both at once: with shared state each may be a (bounded) trip to Redis.
        turn, producer = await asyncio.gather(self.conversations.turn(previous),
                                              self.conversations.producer(previous))
        if turn is not None and turn.caller != caller(call):
            turn = None  # another client's conversation is not ours to hand on
        return Continuation(previous, turn, producer or (turn.by if turn else None))

    def _record(self, ctx: _Context, candidate: Candidate, response: Any) -> None:
        """Keep the conversation a Responses answer ends, for its follow-ups."""
        body = ctx.call.body
        if ctx.call.protocol is not Protocol.RESPONSES or body.get("store") is False:
            return
        found = answered(response)
        if found is None:
            return
        response_id, output = found
        continuation = ctx.continuation
        if (continuation is not None and continuation.turn is None) or \
                response.get("status") not in ("completed", "incomplete"):
            # Its earlier turns are unknown here: handing on half a conversation
            # would be worse than none. Remember only who can continue it.
            self.conversations.affinity.put(response_id, candidate.owner,
                                            self.conversations.ttl)
            return
        earlier = continuation.turn.items if continuation and continuation.turn else ()
        self.conversations.record(response_id, extend(earlier, body, output, candidate.owner,
                                                      caller(ctx.call)))

    def _result(self, ctx: _Context, delivery: Answer | Committed,
                outcome: CallOutcome) -> Result:
        """The call's result; whatever reaches the client is cleared of secrets here."""
        if isinstance(delivery, Answer):
            delivery = Answer(delivery.status, ctx.redact.headers(delivery.headers),
                              ctx.redact.bytes(delivery.body))
        else:
            delivery.headers = ctx.redact.headers(delivery.headers)
        served = ctx.served_by
        switched = served is not None and served.protocol is not ctx.call.protocol
        return Result(delivery, ctx.trail, served, len(ctx.failures), switched, ctx.attempts,
                      outcome, ctx.usage)

    def _rotation(self, provider: Provider, keys: tuple[str, ...]) -> tuple[str, ...]:
        """A provider's keys, least recently used first."""
        by_scope = {key_scope(provider.name, fingerprint(k)): k for k in keys}
        return tuple(by_scope[s] for s in self.health.least_recently_used(list(by_scope)))

    def _returning(self, ctx: _Context, candidates: tuple[Candidate, ...]
                   ) -> dict[Candidate, float]:
        """Cooling candidates of providers still in play, with seconds left."""
        now = self.clock()
        left = {c: cooling.until - now for c in candidates
                if c.provider.name not in ctx.dead_providers
                and (cooling := self._cooling(c)) is not None}
        return {c: max(0.0, s) for c, s in left.items()}

    def _cooling(self, candidate: Candidate) -> Cooling | None:
        scopes = (key_scope(candidate.provider.name, candidate.fingerprint),
                  model_scope(candidate.provider.name, candidate.model))
        found = [c for c in map(self.health.cooling, scopes) if c is not None]
        return max(found, key=lambda c: c.until) if found else None

    async def _attempt(self, ctx: _Context, candidate: Candidate) -> Answer | Committed | None:
        """One try. Returns what to deliver, or None to move on."""
        call = ctx.call
        request, raw = call.body, call.raw
        replayed = ctx.continuation.request_for(candidate, request) if ctx.continuation else None
        if replayed is not None:
            request, left_out = replayed
            raw = json.dumps(request).encode()
            ctx.trail.note("replayed history")
            if left_out:
                ctx.trail.note(f"left out {left_out} reasoning item(s) only their producer "
                               "can read")
        bridge = Bridge(call.protocol, candidate.protocol, request, raw,
                        ask_usage=candidate.provider.name not in self.refuse_usage_option)
        try:
            body = bridge.body(candidate.model, candidate.provider.origin[1])
        except UnknownResponseId as exc:
            # This candidate cannot continue that conversation; another might.
            ctx.trail.attempt(ctx.label(candidate), "unknown previous_response_id")
            ctx.failures.append(Failure(Verdict(Action.NEXT_PROVIDER, Reason.UNKNOWN_RESPONSE),
                                        Outcome(404, body=exc.body()), (JSON,)))
            ctx.dead_providers.add(candidate.provider.name)
            return None
        if bridge.dropped:
            ctx.trail.note(f"dropped {', '.join(bridge.dropped)}")
        headers = upstream_headers(call, candidate)
        record = AttemptRecord(candidate.provider.name, candidate.fingerprint, candidate.url,
                               masked(headers), body, self.clock())
        ctx.attempts.append(record)
        if len(candidate.provider.keys) > 1:  # only a provider's own keys rotate
            self.health.used(key_scope(candidate.provider.name, candidate.fingerprint))
        exchanged = await self._exchange(ctx, candidate, headers, body, record, bridge)
        if isinstance(exchanged, Committed):
            self._served(ctx, candidate, record)
            return exchanged
        outcome = exchanged
        verdict = judge(outcome, self.clock())
        if verdict.action is Action.DELIVER:
            self._served(ctx, candidate, record, verdict.hints)
            answer = self._whole_answer(bridge, outcome, own_call(call, candidate))
            ctx.usage = body_usage(candidate.protocol, outcome.body)
            if call.protocol is Protocol.RESPONSES:
                self._record(ctx, candidate, loads(answer.body))
            return answer
        if verdict.action is Action.PASS_THROUGH:
            if bridge.hides_usage and outcome.status in (400, 422) \
                    and b"stream_options" in outcome.body:
                # The option Switchback added is refused, not the client's call.
                self.refuse_usage_option.add(candidate.provider.name)
                self._finish(ctx, candidate, record, f"{outcome.status} (refuses "
                                                     "stream_options; again without)")
                return await self._attempt(ctx, candidate)
            self._finish(ctx, candidate, record, str(outcome.status))
            if outcome.failure is not None:  # a client error at the head of a stream
                info = error_info(outcome.body)
                return Answer(400, [JSON], json.dumps({"error": {
                    "message": info.message, "type": info.type or "invalid_request_error",
                    "param": info.param or None, "code": info.code or None}}).encode())
            return Answer(outcome.status or 502, response_headers(
                outcome.headers.items(), own_call(call, candidate)), outcome.body)
        self._failed(ctx, candidate, verdict, outcome, record)
        return None

    async def _exchange(self, ctx: _Context, candidate: Candidate,
                        headers: list[tuple[str, str]], body: bytes, record: AttemptRecord,
                        bridge: Bridge) -> Committed | Outcome:
        """Send and read until there is something to judge, or a committed
        stream. The upstream answer is closed here unless a stream owns it."""
        call, timeouts = ctx.call, self.config.timeouts
        own = own_call(call, candidate)
        client_key = candidate.key is None
        try:
            response = await self.upstream.send(
                candidate.url, headers, body,
                read_timeout=timeouts.first_byte if call.stream else timeouts.response)
        except TRANSPORT_ERRORS as exc:
            return Outcome(None, failure=transport_failure(exc),
                           detail=transport_detail(exc, candidate.url))
        committed = False
        try:
            record.status = response.status
            record.first_byte = self.clock() - record.started
            record.response_headers = ctx.redact.headers(response_headers(response.headers.items(),
                                                                         own))
            ok = 200 <= response.status < 300
            if call.stream and ok:
                if not is_event_stream(response):
                    record.response_body = ctx.redact.bytes(
                        await read_body(response, MAX_ERROR_BODY))
                    return Outcome(response.status, response.headers, record.response_body,
                                   FailureKind.NOT_A_STREAM, client_key)
                chunks = aiter(response.content.iter_any())
                parser, head = SseParser(), Head(candidate.protocol)
                await read_head(chunks, parser, head,
                                lambda: keep_waiting(response, timeouts.idle))
                if head.failure is None:
                    shaper = bridge.shaper()
                    try:
                        first = first_bytes(head, shaper, ctx.redact.bytes)
                    except Exception:  # a head the shaper cannot read: move on, say why
                        logger.exception("switchback: could not shape a stream's head")
                        return Outcome(response.status, response.headers,
                                       failure=FailureKind.MALFORMED, client_key=client_key)
                    committed = True  # the stream owns the upstream answer now
                    return Committed(200, record.response_headers, first,
                                     deliver(chunks, parser, shaper, ctx.redact.bytes,
                                             lambda: self._record(ctx, candidate,
                                                                  shaper.final)),
                                     response.close, shaper)
                record.response_body = ctx.redact.bytes(head.raw())
                culprit = head.culprit.data if head.culprit and head.culprit.data else ""
                return Outcome(response.status, response.headers, culprit.encode(),
                               head.failure, client_key)
            record.response_body = ctx.redact.bytes(
                await read_body(response, None if ok else MAX_ERROR_BODY))
            return Outcome(response.status, response.headers, record.response_body,
                           client_key=client_key)
        except EventTooLarge:
            return Outcome(response.status, response.headers, failure=FailureKind.TOO_LARGE,
                           client_key=client_key)
        except TRANSPORT_ERRORS as exc:
            return Outcome(None, failure=transport_failure(exc),
                           detail=transport_detail(exc, candidate.url))
        finally:
            if not committed:
                response.close()

    def _finish(self, ctx: _Context, candidate: Candidate, record: AttemptRecord, result: str,
                cooldown: float | None = None) -> None:
        """Close one attempt: its trail step and its record."""
        record.ended = self.clock()
        ctx.trail.attempt(ctx.label(candidate), ctx.redact.text(result), cooldown)
        record.result = ctx.trail.steps[-1]
        record.kind = record.kind or str(record.status)
        record.cooldown = cooldown

    def _whole_answer(self, bridge: Bridge, outcome: Outcome, own: bool) -> Answer:
        headers = response_headers(outcome.headers.items(), own)
        try:
            body = bridge.answer(outcome.body)
        except ValueError:  # not JSON: nothing to translate, deliver what came
            body = outcome.body
        return Answer(outcome.status or 200, headers, body)

    def _served(self, ctx: _Context, candidate: Candidate, record: AttemptRecord,
                hints: Hints | None = None) -> None:
        """Success: remember a protocol this call had to switch to, reset
        backoff, and put aside a key whose bucket is now empty, before it
        ever sees a 429."""
        self._finish(ctx, candidate, record, str(record.status))
        ctx.served_by = candidate
        provider = candidate.provider.name
        if ctx.protocol_for.get((provider, candidate.model)) is candidate.protocol:
            self.protocols.put(provider, candidate.model, ctx.call.protocol, candidate.protocol)
        key = key_scope(provider, candidate.fingerprint)
        self.health.succeeded(key, model_scope(provider, candidate.model))
        hints = hints or parse_hints(dict(record.response_headers), None, self.clock())
        empty_for = hints.exhausted_reset
        if empty_for:
            self.health.cool(key, min(empty_for, self.config.cooldown.ceiling),
                             Reason.REMAINING_ZERO)

    def _failed(self, ctx: _Context, candidate: Candidate, verdict: Verdict,
                outcome: Outcome, record: AttemptRecord) -> None:
        provider = candidate.provider.name
        seconds = self.health.record(verdict, key_scope(provider, candidate.fingerprint),
                                     model_scope(provider, candidate.model), record.started)
        result = str(outcome.status) if outcome.status is not None else verdict.reason.value
        if outcome.failure is FailureKind.ERROR_EVENT:
            info = error_info(outcome.body)
            result = f"error event ({(info.message or info.code or 'error')[:120]})"
        elif outcome.failure is FailureKind.TLS:
            result = f"{outcome.failure} ({outcome.detail})"
        elif outcome.failure is not None and not outcome.failure.transport:
            result = f"{outcome.status} {outcome.failure}"
        record.kind = outcome.failure.value if outcome.failure is not None else str(
            outcome.status)
        record.reason = verdict.reason
        if seconds and verdict.cooldown is not None:
            record.scope = verdict.cooldown.scope
        if verdict.action is Action.SWITCH_PROTOCOL and candidate.can_switch \
                and (provider, candidate.model) not in ctx.protocol_for:
            # The endpoint does not exist here: the same candidate, other protocol.
            ctx.switch = candidate.switched()
            ctx.protocol_for[provider, candidate.model] = ctx.switch.protocol
            record.switched_to = ctx.switch.protocol
            result += f" (switch to {ctx.switch.protocol})"
        elif verdict.action in (Action.SWITCH_PROTOCOL, Action.NEXT_PROVIDER):
            ctx.dead_providers.add(provider)
        self._finish(ctx, candidate, record, result, seconds)
        ctx.failures.append(Failure(verdict, outcome, tuple(response_headers(
            outcome.headers.items(), own_call(ctx.call, candidate)))))
