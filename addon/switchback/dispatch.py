"""The attempt loop and the first-chunk gate.

For one recognised call: try each planned candidate in turn with the shared
httpx client, hold a streaming answer until its first meaningful SSE event
shows success, judge every failure, record its cooldown and move on — all
before any byte reaches the client. The result is either a whole answer
(`Answer`) or a committed stream (`Committed`) for the relay to deliver.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import httpx

from .bridge import Bridge, UnknownResponseId, other
from .config import Config
from .hints import parse_hints
from .metrics import Metrics
from .plan import Candidate, endpoint, plan
from .providers import Provider, ProviderTable
from .recognise import CREDENTIAL_HEADERS, LlmCall, client_credential, fingerprint
from .sse import Event, SseParser
from .state import Conversations, Cooling, Health, ProtocolMemory, key_scope, model_scope
from .streams import GateClass, StreamShaper, gate_class
from .trail import Trail, seconds_text
from .verdict import Action, Outcome, Verdict, error_info, judge, telling_rank

# Not forwarded either way: connection-level, or describing bytes we re-frame.
HOP_BY_HOP = {"host", "content-length", "content-encoding", "connection", "keep-alive",
              "proxy-authorization", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "accept-encoding"}
# Headers that identify the client to the host it addressed; never sent elsewhere.
ORIGIN_BOUND = {*CREDENTIAL_HEADERS, "openai-organization", "openai-project", "cookie"}
MAX_ERROR_BODY = 1 << 20
RETRY_AFTER_CAP = 60.0  # SDKs ignore longer retry-after values and guess instead


@dataclass
class Answer:
    """A whole answer for `Response.make`."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Committed:
    """A stream that passed the gate: status, headers and shaped body bytes."""

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]


@dataclass
class AttemptRecord:
    """One upstream attempt as it happened, for mitmweb: the request as sent
    (credentials masked) and what came back."""

    url: str
    headers: list[tuple[str, str]]
    body: bytes
    started: float
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    result: str = ""  # the trail's words for it
    ended: float = 0.0


@dataclass
class Result:
    delivery: Answer | Committed
    trail: Trail
    served_by: Candidate | None = None
    failures: int = 0  # failed attempts before the answer
    switched: bool = False  # the answer was translated from the other protocol
    attempts: list[AttemptRecord] = field(default_factory=list)
    outcome: str = "ok"  # "ok", "passed through" (a client error) or "exhausted"


@dataclass
class _Failure:
    verdict: Verdict
    outcome: Outcome
    candidate: Candidate


@dataclass
class _Context:
    """What the loop learns about one call as it goes."""

    call: LlmCall
    trail: Trail = field(default_factory=Trail)
    failures: list[_Failure] = field(default_factory=list)
    dead_providers: set[str] = field(default_factory=set)
    switched_providers: set[str] = field(default_factory=set)
    switch: Candidate | None = None  # the same candidate in the other protocol, to try next
    served_by: Candidate | None = None
    switched: bool = False  # the serving attempt spoke the other protocol
    attempts: list[AttemptRecord] = field(default_factory=list)


def upstream_headers(call: LlmCall, candidate: Candidate) -> list[tuple[str, str]]:
    """The client's headers, minus hop-by-hop ones and minus anything that
    identifies the client unless the candidate is the origin it addressed."""
    same_origin = candidate.provider.origin == call.provider.origin
    out = []
    for name, value in call.headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower.startswith(":"):
            continue
        if lower in ORIGIN_BOUND and (candidate.key is not None or not same_origin):
            continue
        out.append((name, value))
    if candidate.key is not None:
        out.append(("authorization", f"Bearer {candidate.key}"))
    return out


def masked(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers fit to show: credentials replaced by their fingerprint."""
    return [(k, f"<key {fingerprint(client_credential([(k, v)]) or v)}>")
            if k.lower() in CREDENTIAL_HEADERS else (k, v) for k, v in headers]


def response_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.multi_items() if k.lower() not in HOP_BY_HOP]


def transport_failure(exc: BaseException) -> str:
    """A short name for why an attempt never got an answer."""
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, httpx.ConnectError):
        if isinstance(cause, ssl.SSLError) or "SSL" in str(exc) or "certificate" in str(exc):
            return "tls error"
        return "refused"
    return "reset"


class Dispatcher:
    """Runs the attempt loop for recognised calls."""

    def __init__(self, client: httpx.AsyncClient, config: Config, table: ProviderTable,
                 health: Health, clock: Callable[[], float] = time.time,
                 protocols: ProtocolMemory | None = None,
                 conversations: Conversations | None = None,
                 metrics: Metrics | None = None) -> None:
        self.client, self.config, self.table = client, config, table
        self.health, self.clock = health, clock
        self.metrics = metrics or Metrics()
        self.protocols = protocols or ProtocolMemory(health.store, config.protocol_memory)
        self.conversations = conversations or Conversations(health.store)

    async def run(self, call: LlmCall) -> Result:
        ctx = _Context(call)
        planned = plan(call, self.config, self.table, self._rotation, self._remembered)
        for note in planned.skipped:
            ctx.trail.note(note)
        pending = planned.candidates
        for round_ in range(2):
            for candidate in pending:
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
                    return self._result(ctx, delivery,
                                        "ok" if ctx.served_by else "passed through")
            # Everything failed or is cooling: if a candidate comes back soon
            # enough, wait for it rather than fail the call.
            returning = self._returning(ctx, planned.candidates)
            if not returning or min(returning.values()) > self.config.max_wait:
                break
            wait = min(returning.values())
            ctx.trail.note(f"waited {seconds_text(wait)}")
            await asyncio.sleep(wait)
            pending = tuple(c for c, left in returning.items() if left <= wait)
        return self._result(ctx, self._exhausted(ctx, planned.candidates), "exhausted")

    def _result(self, ctx: _Context, delivery: Answer | Committed, outcome: str) -> Result:
        result = Result(delivery, ctx.trail, ctx.served_by, len(ctx.failures), ctx.switched,
                        ctx.attempts, outcome)
        provider = ctx.served_by.provider.name if ctx.served_by else "none"
        self.metrics.calls.labels(provider, outcome).inc()
        if ctx.served_by is not None and ctx.failures:
            self.metrics.failovers.inc()
        return result

    def _rotation(self, provider: Provider, keys: tuple[str, ...]) -> tuple[str, ...]:
        """A provider's keys, least recently used first."""
        by_scope = {key_scope(provider.name, fingerprint(k)): k for k in keys}
        return tuple(by_scope[s] for s in self.health.least_recently_used(list(by_scope)))

    def _remembered(self, provider: Provider, model: str) -> str | None:
        return self.protocols.get(provider.name, model)

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

    def _label(self, ctx: _Context, candidate: Candidate) -> str:
        """The trail's name for an attempt; the protocol is shown when translated."""
        if candidate.protocol == ctx.call.protocol:
            return candidate.label
        return f"{candidate.label}[{candidate.protocol}]"

    async def _attempt(self, ctx: _Context, candidate: Candidate) -> Answer | Committed | None:
        """One try. Returns what to deliver, or None to move on."""
        call, timeouts = ctx.call, self.config.timeouts
        bridge = Bridge(call.protocol, candidate.protocol, call.body, call.raw)
        try:
            body = bridge.body(candidate.model, urlsplit(candidate.url).hostname or "",
                               self.conversations.get)
        except UnknownResponseId as exc:
            ctx.trail.note("unknown previous_response_id")
            return Answer(404, [("content-type", "application/json")], exc.body())
        if bridge.dropped:
            ctx.trail.note(f"dropped {', '.join(bridge.dropped)}")
        headers = upstream_headers(call, candidate)
        request = self.client.build_request(
            "POST", candidate.url, headers=headers, content=body,
            timeout=httpx.Timeout(connect=timeouts.connect, read=timeouts.idle,
                                  write=60.0, pool=30.0))
        record = AttemptRecord(candidate.url, masked(headers), body, self.clock())
        ctx.attempts.append(record)
        response: httpx.Response | None = None
        held: list[Event] = []
        self.health.used(key_scope(candidate.provider.name, candidate.fingerprint))
        try:
            async with asyncio.timeout(timeouts.first_byte if call.stream else timeouts.response) \
                    as deadline:
                response = await self.client.send(request, stream=True)
                record.status = response.status_code
                record.response_headers = response_headers(response.headers)
                self.metrics.first_byte_seconds.labels(candidate.provider.name).observe(
                    self.clock() - record.started)
                if call.stream and response.status_code == 200 and \
                        "text/event-stream" in response.headers.get("content-type", ""):
                    chunks = response.aiter_bytes()
                    parser = SseParser()
                    verdict_event = await self._gate(chunks, parser, held, candidate.protocol,
                                                     deadline, timeouts.idle)
                    if verdict_event is None:
                        self._served(ctx, candidate, response.headers, record)
                        shaper = bridge.shaper()
                        return Committed(200, response_headers(response.headers),
                                         self._deliver(response, chunks, parser, held, shaper,
                                                       lambda: self._remember(bridge, shaper)))
                    outcome = Outcome(200, response.headers, verdict_event.data.encode(),
                                      failure="first-event", client_key=candidate.key is None)
                    record.response_body = b"".join(event.raw for event in held)
                else:
                    deadline.reschedule(None)
                    raw = await response.aread()
                    record.response_body = raw
                    outcome = Outcome(response.status_code, response.headers,
                                      raw[:MAX_ERROR_BODY], client_key=candidate.key is None)
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            if response is not None:
                await response.aclose()
            outcome = Outcome(None, failure=transport_failure(exc))
        verdict = judge(outcome, self.clock())
        if verdict.action is Action.DELIVER:
            self._served(ctx, candidate, outcome.headers, record)
            return self._whole_answer(ctx, bridge, outcome)
        if verdict.action is Action.PASS_THROUGH:
            self._finish(ctx, candidate, record, str(outcome.status))
            return Answer(outcome.status or 502,
                          response_headers(httpx.Headers(outcome.headers)), outcome.body)
        if response is not None:
            await response.aclose()
        self._failed(ctx, candidate, verdict, outcome, record)
        return None

    def _finish(self, ctx: _Context, candidate: Candidate, record: AttemptRecord, result: str,
                cooldown: float | None = None, kind: str | None = None) -> None:
        """Close one attempt: its trail step, its record, its metrics."""
        record.ended = self.clock()
        ctx.trail.attempt(self._label(ctx, candidate), result, cooldown)
        record.result = ctx.trail.steps[-1]
        provider = candidate.provider.name
        self.metrics.attempts.labels(provider, kind or result).inc()
        self.metrics.upstream_seconds.labels(provider).observe(record.ended - record.started)

    def _whole_answer(self, ctx: _Context, bridge: Bridge, outcome: Outcome) -> Answer:
        headers = response_headers(httpx.Headers(outcome.headers))
        try:
            body, history = bridge.answer(outcome.body)
        except ValueError:  # not JSON: nothing to translate, deliver what came
            return Answer(outcome.status or 200, headers, outcome.body)
        if history is not None:
            self.conversations.put(bridge.response_id, history)
        return Answer(outcome.status or 200, headers, body)

    def _remember(self, bridge: Bridge, shaper: StreamShaper) -> None:
        """After a translated stream completes, keep its conversation."""
        history = bridge.history(getattr(shaper, "reply", None))
        if history is not None:
            self.conversations.put(bridge.response_id, history)

    async def _gate(self, chunks: AsyncIterator[bytes], parser: SseParser, held: list[Event],
                    protocol: str, deadline: asyncio.Timeout, idle: float) -> Event | None:
        """Hold events until one shows the answer has started (None: commit)
        or failed (that event). The deadline covers the first event; after
        that the stream only has to keep talking."""
        loop = asyncio.get_running_loop()
        async for chunk in chunks:
            for event in parser.feed(chunk):
                held.append(event)
                kind = gate_class(protocol, event)
                if kind is GateClass.ERROR:
                    return event
                if kind in (GateClass.CONTENT, GateClass.END):
                    deadline.reschedule(None)
                    return None
            if held:
                deadline.reschedule(loop.time() + idle)
        tail = parser.close()
        if tail is not None:
            held.append(tail)
        if held and gate_class(protocol, held[-1]) is GateClass.ERROR:
            return held[-1]
        raise httpx.RemoteProtocolError("stream ended before its first answer event")

    async def _deliver(self, response: httpx.Response, chunks: AsyncIterator[bytes],
                       parser: SseParser, held: list[Event], shaper: StreamShaper,
                       completed: Callable[[], None]) -> AsyncIterator[bytes]:
        """The committed stream, event by event; a break after commit is
        closed in the client's protocol; the upstream is always closed."""
        try:
            yield b"".join(map(shaper.feed, held))
            try:
                async for chunk in chunks:
                    # Every complete event now, together: one write per network read.
                    yield b"".join(map(shaper.feed, parser.feed(chunk)))
                tail = parser.close()
                yield (shaper.feed(tail) if tail is not None else b"") + shaper.finish()
                completed()
            except (httpx.HTTPError, OSError) as exc:
                yield shaper.fail(f"upstream stream broke: {transport_failure(exc)}")
        finally:
            await response.aclose()

    def _served(self, ctx: _Context, candidate: Candidate, headers: Mapping[str, str],
                record: AttemptRecord) -> None:
        self._finish(ctx, candidate, record, "200")
        ctx.served_by = candidate
        ctx.switched = candidate.protocol != ctx.call.protocol
        if candidate.provider.protocol == "auto":
            self.protocols.put(candidate.provider.name, candidate.model, candidate.protocol)
        self._succeeded(candidate, headers)

    def _succeeded(self, candidate: Candidate, headers: Mapping[str, str]) -> None:
        """Reset backoff; and a key whose bucket is now empty is put aside until
        its reset, so the next call goes elsewhere before it ever sees a 429."""
        key = key_scope(candidate.provider.name, candidate.fingerprint)
        self.health.succeeded(key, model_scope(candidate.provider.name, candidate.model))
        empty_for = parse_hints(headers, None, self.clock()).exhausted_reset
        if empty_for:
            self.health.cool(key, min(empty_for, self.config.cooldown.ceiling), "remaining 0")

    def _failed(self, ctx: _Context, candidate: Candidate, verdict: Verdict,
                outcome: Outcome, record: AttemptRecord) -> None:
        seconds = self.health.record(
            verdict, key_scope(candidate.provider.name, candidate.fingerprint),
            model_scope(candidate.provider.name, candidate.model))
        result = str(outcome.status) if outcome.status is not None else verdict.reason
        if outcome.failure == "first-event":
            result = f"error event ({error_message_text(outcome)})"
        if verdict.action is Action.SWITCH_PROTOCOL:
            if candidate.provider.protocol == "auto" and \
                    candidate.provider.name not in ctx.switched_providers:
                # The endpoint does not exist here: the same candidate, other protocol.
                ctx.switched_providers.add(candidate.provider.name)
                protocol = other(candidate.protocol)
                ctx.switch = replace(candidate, protocol=protocol,
                                     url=endpoint(ctx.call, candidate.provider, protocol))
                result += f" (switch to {protocol})"
                self.metrics.protocol_switches.labels(candidate.provider.name, protocol).inc()
            else:
                ctx.dead_providers.add(candidate.provider.name)
        if seconds and verdict.cooldown is not None:
            self.metrics.cooldowns.labels(candidate.provider.name, verdict.cooldown.scope.value,
                                          verdict.reason).inc()
        self._finish(ctx, candidate, record, result, seconds,
                     str(outcome.status) if outcome.status is not None else verdict.reason)
        ctx.failures.append(_Failure(verdict, outcome, candidate))
        if verdict.action is Action.NEXT_PROVIDER:
            ctx.dead_providers.add(candidate.provider.name)

    def _exhausted(self, ctx: _Context, candidates: tuple[Candidate, ...]) -> Answer:
        """Every candidate failed or is cooling: the most telling upstream
        error, status class kept, with when to come back."""
        now = self.clock()
        coolings = [c for c in map(self._cooling, candidates) if c is not None]
        soonest = min(coolings, key=lambda c: c.until) if coolings else None
        no_retry = bool(coolings) and all(c.no_retry for c in coolings)
        if ctx.failures:
            best = min(ctx.failures, key=lambda f: telling_rank(f.verdict, f.outcome.status))
            no_retry = no_retry or best.verdict.no_retry
            if best.outcome.status is not None:
                status, body = best.outcome.status, best.outcome.body
                headers = response_headers(httpx.Headers(best.outcome.headers))
                if best.outcome.failure == "first-event":
                    status, body = _error_status(best.verdict), _error_body(
                        error_message_text(best.outcome), best.verdict)
                    headers = [("content-type", "application/json")]
            else:
                status = 504 if best.verdict.reason == "timeout" else 502
                body = _error_body(f"upstream {best.verdict.reason}: {ctx.trail}", best.verdict)
                headers = [("content-type", "application/json")]
        else:
            reasons = {c.reason for c in coolings}
            status = 429 if reasons & {"rate limit", "quota", "key refused"} or not coolings \
                else 503
            body = json.dumps({"error": {
                "message": f"Switchback: every candidate for {ctx.call.model} is cooling down "
                           f"({', '.join(sorted(reasons)) or 'no candidate'})",
                "type": "rate_limit_error" if status == 429 else "server_error",
                "code": "switchback_all_cooling"}}).encode()
            headers = [("content-type", "application/json")]
        headers = [(k, v) for k, v in headers
                   if k.lower() not in ("retry-after", "retry-after-ms", "x-should-retry")]
        if soonest is not None:
            wait = min(max(0.0, soonest.until - now), RETRY_AFTER_CAP)
            headers += [("retry-after", str(math.ceil(wait))),
                        ("retry-after-ms", str(math.ceil(wait * 1000)))]
        if no_retry:
            headers.append(("x-should-retry", "false"))
        return Answer(status, headers, body)


def error_message_text(outcome: Outcome) -> str:
    info = error_info(outcome.body)
    return (info.message or info.code or info.type or "error")[:120]


def _error_status(verdict: Verdict) -> int:
    return {"rate limit": 429, "quota": 429}.get(verdict.reason, 502)


def _error_body(message: str, verdict: Verdict) -> bytes:
    kind = "rate_limit_error" if verdict.reason in ("rate limit", "quota") else "server_error"
    return json.dumps({"error": {"message": message, "type": kind,
                                 "code": f"upstream_{verdict.reason.replace(' ', '_')}"}}).encode()
