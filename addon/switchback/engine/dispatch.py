"""The attempt loop.

For one recognised call: try each planned candidate in turn, judge every
outcome with one judge — a whole answer, an error, or the held head of a
stream — record what it teaches and move on, all before any byte reaches
the client. Three layers, each one concern: this loop (which candidate,
what to send, what the verdict means for the call), `exchange` (one
request behind a `Transport`) and `bookkeeping` (the trail, the attempt's
record, the learned state). The result is a whole answer (`Answer`) or a
committed stream (`Committed`) for the relay, plus the record of every
attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from ..config import Config, Target
from ..health.cooldown import Cooling
from ..health.exhaustion import Failure, exhausted_answer
from ..health.retry import again
from ..health.verdict import Action, Outcome, Verdict, answer_shaped, judge
from ..jsonsafe import loads
from ..plan import Candidate, Plan, ahead, plan
from ..protocols.bridge import Bridge
from ..protocols.envelope import JSON_TYPE
from ..protocols.spec import spec
from ..protocols.splice import Diverged
from ..protocols.translators import UnknownResponseId
from ..providers import Provider, ProviderTable
from ..recognise import LlmCall, fingerprint
from ..redact import Redactor
from ..state.cooldowns import Scopes, key_scope
from ..state.learned import Learned
from ..state.sessions import UNREADABLE, session_key
from ..trail import seconds_text
from ..vocabulary import Break, CallOutcome, FailureKind, ProbeResult, Quirk, Reason, Retry
from .bookkeeping import Bookkeeper, CallContext, Continuation, caller
from .delivery import Committed
from .exchange import Exchanged, Sending, exchange
from .headers import masked, own_call, response_headers, upstream_headers
from .rescue import Rescuer
from .results import Answer, AttemptRecord, Result
from .transport import Transport

logger = logging.getLogger(__name__)


class Dispatcher:
    """Runs the attempt loop for recognised calls."""

    def __init__(self, transport: Transport, config: Config, table: ProviderTable,
                 learned: Learned, redactor: Redactor | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.transport, self.config, self.table, self.learned = transport, config, table, learned
        self.health, self.protocols = learned.health, learned.protocols
        self.redactor = redactor or Redactor(k for p in config.providers.values() for k in p.keys)
        self.clock, self.sleep = clock, sleep  # the loop's own waits: a test may fake both
        self.books = Bookkeeper(learned, config, clock)

    async def run(self, call: LlmCall) -> Result:
        ctx = CallContext(call, self.redactor.including(call.credential),
                          await self._continuation(call))
        planned = self._plan(call)
        for note in planned.skipped:
            ctx.trail.note(note)
        name = spec(call.protocol).session(call.body)
        if name is not None:
            # A session goes back to the account that served its last turn.
            ctx.session = session_key(caller(call), name)
            ctx.pinned = self.learned.sessions.owner(ctx.session)
        candidates = ahead(planned.candidates, ctx.pinned)
        if ctx.continuation is not None:
            candidates = ctx.continuation.order(candidates)
        ctx.candidates = candidates
        delivery = await self._through(ctx, candidates)
        if delivery is None and ctx.refusal is not None:
            # Too long for the model: a larger-context one may serve it.
            delivery = await self._longer_context(ctx)
            if delivery is None:  # none did: the refusal, as the provider said it
                return self._result(ctx, ctx.refusal, CallOutcome.PASSED_THROUGH)
            candidates = ()
        if delivery is not None:
            return self._result(ctx, delivery, CallOutcome.OK if ctx.served_by
                                else CallOutcome.PASSED_THROUGH)
        coolings = [c for c in map(self._cooling, candidates) if c is not None]
        pages = [f for f in ctx.failures if f.verdict.reason is Reason.NOT_AN_ANSWER]
        if pages and len(pages) == len(ctx.failures):
            # Every candidate answered with a page (HTML, a redirect): it is
            # all there is to show, so the client sees it as it came.
            page = pages[-1]
            answer = Answer(page.outcome.status or 502, list(page.headers), page.outcome.body)
            return self._result(ctx, answer, CallOutcome.EXHAUSTED)
        status, headers, body = exhausted_answer(ctx.failures, coolings, self.clock(), call.model,
                                                 spec(call.protocol).error_body)
        return self._result(ctx, Answer(status, headers, body), CallOutcome.EXHAUSTED)

    def _plan(self, call: LlmCall, targets: tuple[Target, ...] | None = None) -> Plan:
        return plan(call, self.config, self.table, self._rotation,
                    lambda provider, model: self.protocols.get(provider.name, model,
                                                               call.protocol), targets)

    async def _through(self, ctx: CallContext, candidates: tuple[Candidate, ...]
                       ) -> Answer | Committed | None:
        """Try `candidates` in turn until one delivers; None when none did,
        or when one refused the prompt as too long (`ctx.refusal`) on the
        first pass."""
        pending = candidates
        for round_ in range(2):
            for index, planned_candidate in enumerate(pending):
                candidate = ctx.in_call_protocol(planned_candidate)
                if candidate.provider.name in ctx.dead_providers \
                        or candidate.model in ctx.too_long:
                    continue
                probe = False
                cooling = self._cooling(candidate)
                if cooling is not None:
                    probe = await self._claim_probe(candidate)
                    if not probe:
                        if round_ == 0:
                            ctx.trail.skip(ctx.label(candidate), cooling.until - self.clock())
                        continue
                delivery = await self._try(ctx, candidate, probe, pending[index + 1:])
                if delivery is not None or (ctx.refusal is not None and not ctx.longer):
                    return delivery
            # Everything failed or is cooling: if a candidate comes back soon
            # enough, wait for it rather than fail the call.
            returning = self._returning(ctx, candidates)
            if not returning or min(returning.values()) > self.config.max_wait:
                break
            wait = min(returning.values())
            ctx.trail.note(f"waited {seconds_text(wait)}")
            await self.sleep(wait + 0.02)  # cooldowns use the wall clock; sleep may not
            pending = tuple(c for c, left in returning.items() if left <= wait)
        return None

    async def _longer_context(self, ctx: CallContext) -> Answer | Committed | None:
        """The call again on the context fallbacks, never on a model that
        refused it as too long."""
        planned = self._plan(ctx.call, self.config.context_fallbacks_for(ctx.call.model))
        for note in planned.skipped:
            ctx.trail.note(note)
        ctx.longer = True
        ctx.dead_providers.clear()  # what failed before was asked for another model
        return await self._through(ctx, tuple(c for c in planned.candidates
                                              if c.model not in ctx.too_long))

    async def _try(self, ctx: CallContext, candidate: Candidate, probe: bool,
                   rest: tuple[Candidate, ...]) -> Answer | Committed | None:
        """One candidate: its attempt, the other protocol when its endpoint is
        missing, and at most one retry of it per call when the failure says
        that is worth it (health.retry)."""
        failures = len(ctx.failures)
        delivery = await self._attempt(ctx, candidate, probe)
        tried = candidate
        if delivery is None and ctx.switch is not None:
            tried, ctx.switch = ctx.switch, None
            delivery = await self._attempt(ctx, tried, probe)
        if probe:  # it served (the scopes are clear) or set when the next probe is due
            self.health.release_probe(list(Scopes.of(candidate.provider.name,
                                                     candidate.fingerprint, candidate.model)))
        if delivery is not None or len(ctx.failures) == failures:
            return delivery
        failure = ctx.failures[-1]
        verdict = failure.verdict
        scopes = Scopes.of(tried.provider.name, tried.fingerprint, tried.model)
        cooling = self._cooling(tried)
        decided = again(
            verdict, failure.outcome, retried=ctx.retried, probe=probe,
            failed_before=self.health.failed_recently(
                scopes.named(verdict.cooldown.scope) if verdict.cooldown else scopes.model),
            cooling_left=None if cooling is None else max(0.0, cooling.until - self.clock()),
            addressed=(tried.provider.name, tried.model) == (ctx.call.provider.name,
                                                             ctx.call.model),
            next_moves=self._next_moves(ctx, tried, rest),
            max_wait=self.config.max_wait, rand=self.health.rand())
        if decided is None:
            return None
        ctx.retried = True
        if decided.kind is Retry.HINTED:
            await self.sleep(decided.wait + 0.02)  # never before the hint: the clock may lag
            ctx.trail.steps.append(f"waited {decided.wait:.1f}s")
        else:
            await self.sleep(decided.wait)
            ctx.trail.steps.append("retried")
        if self._cooling(tried) is not None:  # cooled meanwhile (another call): an outage
            return None
        ctx.dead_providers.discard(tried.provider.name)
        return await self._attempt(ctx, tried, retry=decided.kind)

    def _next_moves(self, ctx: CallContext, tried: Candidate,
                    rest: tuple[Candidate, ...]) -> bool:
        """Whether the next candidate that could be tried changes the provider
        or the model (False when there is none: the end of the round waits)."""
        for planned_candidate in rest:
            candidate = ctx.in_call_protocol(planned_candidate)
            if candidate.provider.name in ctx.dead_providers or candidate.model in ctx.too_long \
                    or self._cooling(candidate) is not None:
                continue
            return (candidate.provider.name, candidate.model) != (tried.provider.name,
                                                                  tried.model)
        return False

    async def _claim_probe(self, candidate: Candidate) -> bool:
        """Whether this call may probe a cooling candidate: every scope that
        cools it is on Switchback's own backoff and due, and no other call
        probes it now."""
        now = self.clock()
        cooling = self.health.cooling_of(candidate.provider.name, candidate.fingerprint,
                                         candidate.model)
        if not cooling or not all(c.probe_due(now) for _, c in cooling):
            return False
        return await self.health.claim_probe([scope for scope, _ in cooling])

    async def _continuation(self, call: LlmCall) -> Continuation | None:
        """What Switchback knows of the conversation a call continues (Responses)."""
        previous = call.body.get("previous_response_id")
        if not spec(call.protocol).conversations or not isinstance(previous, str):
            return None
        conversations = self.learned.conversations
        # Both at once: with shared state each may be a (bounded) trip to Redis.
        turn, producer = await asyncio.gather(conversations.turn(previous),
                                              conversations.producer(previous))
        if turn is not None and turn.caller != caller(call):
            turn = None  # another client's conversation is not ours to hand on
        return Continuation(previous, turn, producer or (turn.by if turn else None),
                            call.protocol)

    def _result(self, ctx: CallContext, delivery: Answer | Committed,
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
                      outcome, ctx.usage, ctx.streamed)

    def _rotation(self, provider: Provider, keys: tuple[str, ...]) -> tuple[str, ...]:
        """A provider's keys, least recently used first."""
        by_scope = {key_scope(provider.name, fingerprint(k)): k for k in keys}
        return tuple(by_scope[s] for s in self.health.least_recently_used(list(by_scope)))

    def _returning(self, ctx: CallContext, candidates: tuple[Candidate, ...]
                   ) -> dict[Candidate, float]:
        """Cooling candidates of providers still in play, with seconds left."""
        now = self.clock()
        left = {c: cooling.until - now for c in candidates
                if c.provider.name not in ctx.dead_providers
                and (cooling := self._cooling(c)) is not None}
        return {c: max(0.0, s) for c, s in left.items()}

    def _cooling(self, candidate: Candidate) -> Cooling | None:
        found = self.health.cooling_of(candidate.provider.name, candidate.fingerprint,
                                       candidate.model)
        return max((c for _, c in found), key=lambda c: c.until) if found else None

    async def _attempt(self, ctx: CallContext, candidate: Candidate, probe: bool = False,
                       retry: Retry | None = None, unsealed: bool = False
                       ) -> Answer | Committed | None:
        """One try. Returns what to deliver, or None to move on. `unsealed`:
        without the sealed reasoning whose producer is unknown (after this
        candidate refused it)."""
        call, books = ctx.call, self.books
        request, raw = call.body, call.raw
        resuming = ctx.resuming
        if resuming is not None and resuming.body is not call.body:
            request, raw = resuming.body, json.dumps(resuming.body).encode()
        seals = spec(call.protocol).seals
        noun = seals.noun if seals is not None else ""
        replayed = ctx.continuation.request_for(candidate, request) if ctx.continuation else None
        left_out = 0
        ctx.sent_unknown = ()
        if replayed is not None:
            request, left_out = replayed
            raw = json.dumps(request).encode()
            ctx.trail.note("replayed history")
        elif seals is not None:
            request, left_out = self._sifted(ctx, candidate, request, unsealed)
            if left_out:
                raw = json.dumps(request).encode()
        if left_out:
            ctx.trail.note(f"left out {left_out} {noun}(s) only their producer can read")
            self.learned.sessions.left_out += left_out
        quirks = self.learned.quirks
        bridge = Bridge(call.protocol, candidate.protocol, request, raw,
                        ask_usage=not quirks.has(candidate.provider.name,
                                                 Quirk.NO_STREAM_OPTIONS))
        try:
            body = bridge.body(candidate.model, candidate.provider.origin[1])
        except UnknownResponseId as exc:
            # This candidate cannot continue that conversation; another might.
            ctx.trail.attempt(ctx.label(candidate), "unknown previous_response_id")
            ctx.failures.append(Failure(Verdict(Action.NEXT_PROVIDER, Reason.UNKNOWN_RESPONSE),
                                        Outcome(404, body=exc.body()), (JSON_TYPE,)))
            ctx.dead_providers.add(candidate.provider.name)
            return None
        mark = spec(candidate.protocol).mark_prefix
        if resuming is not None and resuming.flagged(candidate) and mark is not None:
            body = json.dumps(mark(loads(body))).encode()
        if bridge.dropped:
            ctx.trail.note(f"dropped {', '.join(bridge.dropped)}")
        headers = upstream_headers(call, candidate)
        record = AttemptRecord(candidate.provider.name, candidate.fingerprint, candidate.url,
                               masked(headers), body, self.clock(), retry=retry,
                               probe=ProbeResult.FAILED if probe else None, left_out=left_out)
        ctx.attempts.append(record)
        books.used(ctx, candidate)
        own = own_call(call, candidate)
        exchanged = await exchange(
            self.transport, Sending(candidate.url, headers, body, call.stream,
                                    candidate.protocol, own, candidate.key is None),
            self.config.timeouts, record, ctx.redact, self.clock)
        try:
            return await self._judged(ctx, candidate, record, bridge, exchanged)
        finally:
            exchanged.release()  # a held stream not committed goes back

    def _sifted(self, ctx: CallContext, candidate: Candidate, request: dict,
                unsealed: bool) -> tuple[dict, int]:
        """A client's own input for `candidate`: sealed content (reasoning,
        signed thinking) another account produced is left out; a candidate of
        another protocol gets none (the translation drops it), and the trail
        says so."""
        seals = spec(ctx.call.protocol).seals
        assert seals is not None, "only a protocol with sealed content is sifted"
        if candidate.protocol is not ctx.call.protocol:
            dropped = seals.count(request)
            if dropped:
                ctx.trail.note(f"dropped {dropped} {seals.noun}(s) (translated to "
                               f"{candidate.protocol})")
            return request, 0
        found = seals.marks(request)
        if not found:
            return request, 0
        producers = self.learned.sessions.producers_of(found)
        sifted = seals.sift(request, producers, candidate.owner, not unsealed)
        if not unsealed:
            ctx.sent_unknown = tuple(m for m in found if m not in producers)
        if sifted.also:
            ctx.trail.note(sifted.also)
        return sifted.body, sifted.left_out

    async def _judged(self, ctx: CallContext, candidate: Candidate, record: AttemptRecord,
                      bridge: Bridge, exchanged: Exchanged) -> Answer | Committed | None:
        """What one exchange's verdict means for the call."""
        call, books = ctx.call, self.books
        outcome = exchanged.outcome
        if exchanged.held is None and outcome.failure is None and outcome.status is not None \
                and 200 <= outcome.status < 300 and not answer_shaped(outcome.body):
            # A whole 2xx that is an HTML page, empty or not JSON: no answer.
            outcome = replace(outcome, failure=FailureKind.NOT_AN_ANSWER)
        verdict = judge(outcome, self.clock())
        own = own_call(call, candidate)
        if verdict.action is Action.DELIVER and exchanged.held is not None:
            meter = bridge.shaper()
            shaper = meter if ctx.resuming is None else ctx.resuming.wrap(meter)
            rescuer = ctx.rescuer or self._rescuer(ctx)
            try:
                committed = exchanged.held.commit(
                    shaper, ctx.redact.bytes, record.response_headers,
                    lambda: books.streamed(ctx, candidate, shaper.final, meter.dropped),
                    candidate.protocol, meter, rescuer, ctx.resuming is not None)
            except Diverged as exc:  # a restart that answers otherwise: not this one's fault
                books.finish(ctx, candidate, record, f"{Break.REPHRASED} ({exc})")
                return None
            except Exception:  # a head the shaper cannot read: move on, say why
                logger.exception("switchback: could not shape a stream's head")
                outcome = Outcome(outcome.status, outcome.headers,
                                  failure=FailureKind.MALFORMED, client_key=outcome.client_key)
                books.failed(ctx, candidate, judge(outcome, self.clock()), outcome, record)
                return None
            exchanged.held = None  # the relay owns it now
            books.served(ctx, candidate, record, verdict.hints)
            committed.priced = (candidate.provider.base_url, candidate.model)
            if ctx.resuming is None:
                ctx.streamed = len(ctx.attempts) - 1
            if rescuer is not None and ctx.resuming is None:
                ctx.rescuer = rescuer
                rescuer.serves(committed, candidate, ctx.label(candidate))
            return committed
        if verdict.action is Action.DELIVER:
            books.served(ctx, candidate, record, verdict.hints)
            answered = len(bridge.dropped)
            answer = self._whole_answer(bridge, outcome, own)
            if bridge.dropped[answered:]:
                ctx.trail.note(f"dropped {', '.join(bridge.dropped[answered:])}")
            ctx.usage = spec(candidate.protocol).body_usage(outcome.body)
            if spec(call.protocol).seals is not None or spec(call.protocol).conversations:
                books.conversation(ctx, candidate, loads(answer.body))
            return answer
        if verdict.action is Action.PASS_THROUGH:
            seals = spec(call.protocol).seals
            if ctx.sent_unknown and candidate.owner not in ctx.unsealed and seals is not None \
                    and candidate.protocol is call.protocol and seals.refused(outcome.error.text):
                # Sealed reasoning of a producer Switchback does not know, and
                # not this account's: once more, without it.
                ctx.unsealed.add(candidate.owner)
                self.learned.sessions.produced(ctx.sent_unknown, UNREADABLE)
                books.finish(ctx, candidate, record, f"{outcome.status} (cannot read "
                                                     f"{len(ctx.sent_unknown)} {seals.noun}"
                                                     "(s); again without)")
                return await self._attempt(ctx, candidate, record.probe is not None,
                                           unsealed=True)
            if bridge.hides_usage and outcome.status in (400, 422) \
                    and b"stream_options" in outcome.body:
                # The option Switchback added is refused, not the client's call.
                self.learned.quirks.learn(candidate.provider.name, Quirk.NO_STREAM_OPTIONS)
                books.finish(ctx, candidate, record, f"{outcome.status} (refuses "
                                                     "stream_options; again without)")
                return await self._attempt(ctx, candidate, record.probe is not None)
            if outcome.failure is not None:  # a client error at the head of a stream
                info = outcome.error
                answer = Answer(400, [JSON_TYPE], spec(call.protocol).error_body(
                    info.message, info.type or "invalid_request_error", info.code or None,
                    info.param or None))
            else:
                answer = Answer(outcome.status or 502,
                                response_headers(outcome.headers.items(), own),
                                bridge.error(outcome.body, outcome.status or 502))
            if verdict.reason is Reason.CONTEXT_LENGTH \
                    and self.config.context_fallbacks_for(call.model):
                # Never this model again; the call goes to the context fallbacks.
                ctx.too_long.add(candidate.model)
                ctx.refusal = ctx.refusal or answer
                books.finish(ctx, candidate, record, f"{answer.status} context too long")
                return None
            books.finish(ctx, candidate, record, str(outcome.status))
            return answer
        books.failed(ctx, candidate, verdict, outcome, record)
        return None

    def _rescuer(self, ctx: CallContext) -> Rescuer | None:
        """The rescue of a stream this call may commit; None when a break
        of it is the client's to see (resume off, n > 1, a protocol without
        a splice)."""
        call = ctx.call
        n = call.body.get("n")
        splice = spec(call.protocol).splice
        if not self.config.resume or splice is None or (isinstance(n, int) and n > 1):
            return None
        return Rescuer(ctx, splice, ctx.candidates, self._attempt,
                       lambda c: self._cooling(c) is not None, self.learned.quirks,
                       self.config.budget_output_tokens)

    def _whole_answer(self, bridge: Bridge, outcome: Outcome, own: bool) -> Answer:
        headers = response_headers(outcome.headers.items(), own)
        try:
            body = bridge.answer(outcome.body)
        except ValueError:  # not JSON: nothing to translate, deliver what came
            body = outcome.body
        return Answer(outcome.status or 200, headers, body)
