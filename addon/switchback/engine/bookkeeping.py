"""What an attempt's end teaches, written down: the trail step, the attempt's
record, and the learned state — cooldowns and their strikes, a protocol that
had to be switched to, a key whose bucket is empty, the conversation a
Responses answer ends.

`CallContext` is what one call learns as it goes; `Bookkeeper` writes each
attempt's end into it and into the learned state. Neither sends anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..health.exhaustion import Failure
from ..health.hints import Hints
from ..health.verdict import Action, Outcome, Verdict
from ..plan import Candidate
from ..protocols.history import Turn, answered, extend, replay
from ..protocols.spec import spec
from ..protocols.usage import Usage
from ..recognise import LlmCall, fingerprint
from ..redact import Redactor
from ..state.cooldowns import Scopes, key_scope
from ..state.learned import Learned
from ..trail import Trail
from ..vocabulary import FailureKind, ProbeResult, Protocol, Reason
from .headers import own_call, response_headers
from .results import Answer, AttemptRecord


# Who produced an answer spliced from several attempts: no candidate is, so
# none is handed its follow-up as its own (each gets the history replayed).
SPLICED = "(spliced)"


def caller(call: LlmCall) -> str:
    """Whose conversation a call's is: its own credential's fingerprint."""
    return fingerprint(call.credential) if call.credential else ""


@dataclass(frozen=True)
class Continuation:
    """A call that continues `previous` (Responses), and what Switchback
    knows of that conversation."""

    previous: str
    turn: Turn | None  # the conversation up to it, when Switchback carried it
    producer: str | None  # the candidate that produced it (`Candidate.owner`)
    protocol: Protocol  # the client's: the producer continues it only in that

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
                                 and candidate.protocol is self.protocol):
            return None
        return replay(body, self.turn.items, candidate.owner)


@dataclass
class CallContext:
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
    retried: bool = False  # a call retries the candidate that just failed once at most
    # A refusal of the prompt as too long, kept while the context fallbacks are
    # tried (the client gets it when none serves), and the models that refused it.
    refusal: Answer | None = None
    too_long: set[str] = field(default_factory=set)
    longer: bool = False  # trying the context fallbacks
    session: str | None = None  # the session the call names (`session_key`)
    pinned: str | None = None  # who served that session's last turn (`Candidate.owner`)
    sent_unknown: tuple[str, ...] = ()  # marks of sealed items of unknown producer sent
    unsealed: set[str] = field(default_factory=set)  # owners retried without those
    candidates: tuple[Candidate, ...] = ()  # as planned: a rescue goes down the same list
    rescuer: Any = None  # the rescue of the stream this call committed (`engine.rescue`)
    resuming: Any = None  # what a rescue attempt sends (`engine.rescue.Resuming`)
    streamed: int = -1  # the attempt whose stream the client got first

    def in_call_protocol(self, candidate: Candidate) -> Candidate:
        """A provider switched earlier in this call stays switched for its other keys."""
        protocol = self.protocol_for.get((candidate.provider.name, candidate.model),
                                         candidate.protocol)
        return candidate if protocol is candidate.protocol else candidate.switched()

    def label(self, candidate: Candidate) -> str:
        """The trail's name for an attempt; the protocol is shown when translated."""
        label = f"{candidate.label}/{candidate.model}" if self.longer else candidate.label
        if candidate.protocol is self.call.protocol:
            return label
        return f"{label}[{candidate.protocol}]"


class Bookkeeper:
    def __init__(self, learned: Learned, config: Config, clock: Callable[[], float]) -> None:
        self.learned, self.config, self.clock = learned, config, clock

    def used(self, ctx: CallContext, candidate: Candidate) -> None:
        """Rotation: only a provider's own keys take turns, by session: a
        session's later turns on its own key do not count."""
        if len(candidate.provider.keys) > 1 and candidate.owner != ctx.pinned:
            self.learned.health.used(key_scope(candidate.provider.name, candidate.fingerprint))

    def finish(self, ctx: CallContext, candidate: Candidate, record: AttemptRecord,
               result: str, cooldown: float | None = None) -> None:
        """Close one attempt: its trail step and its record."""
        record.ended = self.clock()
        if record.probe is not None:
            result += " (probe)"
        ctx.trail.attempt(ctx.label(candidate), ctx.redact.text(result), cooldown)
        record.result = ctx.trail.steps[-1]
        record.kind = record.kind or str(record.status)
        record.cooldown = cooldown

    def served(self, ctx: CallContext, candidate: Candidate, record: AttemptRecord,
               hints: Hints) -> None:
        """Success: remember a protocol this call had to switch to, reset
        backoff, and put aside a key whose bucket is now empty, before it
        ever sees a 429."""
        self.finish(ctx, candidate, record, str(record.status))
        ctx.served_by = candidate
        if ctx.session is not None:
            self.learned.sessions.pin(ctx.session, candidate.owner)
        provider, health = candidate.provider.name, self.learned.health
        if ctx.protocol_for.get((provider, candidate.model)) is candidate.protocol:
            self.learned.protocols.put(provider, candidate.model, ctx.call.protocol,
                                       candidate.protocol)
        scopes = Scopes.of(provider, candidate.fingerprint, candidate.model)
        key = scopes.key
        if record.probe is not None:  # it recovered: back in use at once
            record.probe = ProbeResult.RECOVERED
            health.recovered(list(scopes))
        health.succeeded(*scopes)
        if hints.exhausted_reset:
            health.cool(key, min(hints.exhausted_reset, self.config.cooldown.ceiling),
                        Reason.REMAINING_ZERO)

    def failed(self, ctx: CallContext, candidate: Candidate, verdict: Verdict,
               outcome: Outcome, record: AttemptRecord) -> None:
        """A failure: its cooldown, the trail's words for it, and where the
        call may go next (the other protocol, or not this provider again)."""
        provider = candidate.provider.name
        scopes = Scopes.of(provider, candidate.fingerprint, candidate.model)
        seconds = self.learned.health.record(verdict, scopes.key, scopes.model, record.started,
                                             scopes.key_model)
        result = str(outcome.status) if outcome.status is not None else verdict.reason.value
        if outcome.failure is FailureKind.ERROR_EVENT:
            info = outcome.error
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
        self.finish(ctx, candidate, record, result, seconds)
        ctx.failures.append(Failure(verdict, outcome, tuple(response_headers(
            outcome.headers.items(), own_call(ctx.call, candidate)))))

    def streamed(self, ctx: CallContext, candidate: Candidate, final: Any,
                 dropped: tuple[str, ...]) -> None:
        """A stream delivered whole: the conversation it ends, and what its
        translation had no form for. An answer spliced from several attempts
        is no one provider's: its follow-ups get the history replayed."""
        if dropped:
            ctx.trail.note(f"dropped {', '.join(dropped)}")
        rescued = ctx.rescuer is not None and ctx.rescuer.rescues > 0
        self.conversation(ctx, candidate, final, SPLICED if rescued else None)

    def conversation(self, ctx: CallContext, candidate: Candidate, response: Any,
                     producer: str | None = None) -> None:
        """What an answer leaves to remember: who produced the sealed content
        in it, and the conversation it ends (Responses), for its follow-ups.
        `producer`: whose the answer is, when not `candidate`'s alone."""
        body, conversations = ctx.call.body, self.learned.conversations
        client = spec(ctx.call.protocol)
        owner = producer or candidate.owner
        if client.seals is not None and candidate.protocol is ctx.call.protocol \
                and producer is None:
            # The content it sealed, and what it read of unknown producers: its own.
            produced = [*client.seals.produced(response), *ctx.sent_unknown]
            if produced:
                self.learned.sessions.produced(produced, candidate.owner)
        if not client.conversations or body.get("store") is False:
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
            conversations.affinity.put(response_id, owner, conversations.ttl)
            return
        earlier = continuation.turn.items if continuation and continuation.turn else ()
        conversations.record(response_id, extend(earlier, body, output, owner,
                                                 caller(ctx.call)))
