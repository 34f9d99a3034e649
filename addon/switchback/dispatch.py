"""The attempt loop and the first-chunk gate.

For one recognised call: try each planned candidate in turn with the shared
httpx client, hold a streaming answer until its first meaningful SSE event
shows success, judge every failure, record its cooldown and move on — all
before any byte reaches the client. The result is either a whole answer
(`Answer`) or a committed stream (`Committed`) for the relay to deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import httpx

from .bridge import Bridge, UnknownResponseId, other
from .config import Config
from .exhaustion import JSON, Failure, exhausted_answer
from .hints import parse_hints
from .metrics import Metrics
from .plan import Candidate, endpoint, plan
from .providers import Provider, ProviderTable
from .recognise import CREDENTIAL_HEADERS, LlmCall, client_credential, fingerprint
from .sse import Event, SseParser
from .state import Conversations, Cooling, Health, ProtocolMemory, key_scope, model_scope
from .streams import GateClass, StreamShaper, gate_class
from .trail import Trail, seconds_text
from .verdict import Action, Outcome, Verdict, error_info, judge

# Not forwarded either way: connection-level, or describing bytes we re-frame.
HOP_BY_HOP = {"host", "content-length", "content-encoding", "connection", "keep-alive",
              "proxy-authorization", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "accept-encoding"}
# What may go to a host the client did not address, or with a key it did not send:
# describing the request, never identifying the client.
PORTABLE = {"content-type", "accept", "user-agent", "openai-beta"}
# What a provider says about the account that served: only for the client's own calls.
ACCOUNT_HEADERS = {"set-cookie", "openai-organization", "openai-project"}
MAX_ERROR_BODY = 1 << 20


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
    body: AsyncGenerator[bytes, None]
    close_upstream: Callable[[], Awaitable[None]]

    async def aclose(self) -> None:
        """Close the body and the upstream, whether or not the body was started."""
        with contextlib.suppress(Exception):
            await self.body.aclose()
        with contextlib.suppress(Exception):
            await self.close_upstream()


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
class _Context:
    """What the loop learns about one call as it goes."""

    call: LlmCall
    trail: Trail = field(default_factory=Trail)
    failures: list[Failure] = field(default_factory=list)
    dead_providers: set[str] = field(default_factory=set)
    protocol_for: dict[str, str] = field(default_factory=dict)  # switched in this call
    switch: Candidate | None = None  # the same candidate in the other protocol, to try next
    served_by: Candidate | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)


def own_call(call: LlmCall, candidate: Candidate) -> bool:
    """The client's own credentials to the origin it addressed."""
    return candidate.key is None and candidate.provider.origin == call.provider.origin


def upstream_headers(call: LlmCall, candidate: Candidate) -> list[tuple[str, str]]:
    """The client's headers for its own call; otherwise only those that
    describe the request, plus the configured key."""
    own = own_call(call, candidate)
    out = [(name, value) for name, value in call.headers
           if name.lower() not in HOP_BY_HOP and not name.startswith(":")
           and (own or name.lower() in PORTABLE or name.lower().startswith("x-stainless-"))]
    if candidate.key is not None:
        out.append(("authorization", f"Bearer {candidate.key}"))
    return out


def masked(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers fit to show: credentials replaced by their fingerprint."""
    return [(k, f"<key {fingerprint(client_credential([(k, v)]) or v)}>")
            if k.lower() in CREDENTIAL_HEADERS else (k, v) for k, v in headers]


def response_headers(headers: httpx.Headers, own: bool) -> list[tuple[str, str]]:
    """An upstream answer's headers as the client may see them."""
    drop = HOP_BY_HOP if own else HOP_BY_HOP | ACCOUNT_HEADERS
    return [(k, v) for k, v in headers.multi_items() if k.lower() not in drop]


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


async def read_body(response: httpx.Response, limit: int | None) -> bytes:
    """The whole body, or its first `limit` bytes (error bodies need no more)."""
    if limit is None:
        return await response.aread()
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


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
            for planned_candidate in pending:
                candidate = self._in_call_protocol(ctx, planned_candidate)
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
            await asyncio.sleep(wait + 0.02)  # cooldowns use the wall clock; sleep may not
            pending = tuple(c for c, left in returning.items() if left <= wait)
        coolings = [c for c in map(self._cooling, planned.candidates) if c is not None]
        status, headers, body = exhausted_answer(ctx.failures, coolings, self.clock(), call.model)
        return self._result(ctx, Answer(status, headers, body), "exhausted")

    def _result(self, ctx: _Context, delivery: Answer | Committed, outcome: str) -> Result:
        served = ctx.served_by
        switched = served is not None and served.protocol != ctx.call.protocol
        result = Result(delivery, ctx.trail, served, len(ctx.failures), switched,
                        ctx.attempts, outcome)
        self.metrics.calls.labels(served.provider.name if served else "none", outcome).inc()
        if served is not None and ctx.failures:
            self.metrics.failovers.inc()
        return result

    def _rotation(self, provider: Provider, keys: tuple[str, ...]) -> tuple[str, ...]:
        """A provider's keys, least recently used first."""
        by_scope = {key_scope(provider.name, fingerprint(k)): k for k in keys}
        return tuple(by_scope[s] for s in self.health.least_recently_used(list(by_scope)))

    def _remembered(self, provider: Provider, model: str) -> str | None:
        return self.protocols.get(provider.name, model)

    def _in_call_protocol(self, ctx: _Context, candidate: Candidate) -> Candidate:
        """A provider switched earlier in this call stays switched for its other keys."""
        protocol = ctx.protocol_for.get(candidate.provider.name, candidate.protocol)
        if protocol == candidate.protocol:
            return candidate
        return replace(candidate, protocol=protocol,
                       url=endpoint(ctx.call, candidate.provider, protocol))

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
            # This candidate cannot continue that conversation; another might.
            ctx.trail.attempt(self._label(ctx, candidate), "unknown previous_response_id")
            ctx.failures.append(Failure(Verdict(Action.NEXT_PROVIDER, "unknown response"),
                                        Outcome(404, body=exc.body()), (JSON,)))
            ctx.dead_providers.add(candidate.provider.name)
            return None
        if bridge.dropped:
            ctx.trail.note(f"dropped {', '.join(bridge.dropped)}")
        headers = upstream_headers(call, candidate)
        request = self.client.build_request(
            "POST", candidate.url, headers=headers, content=body,
            timeout=httpx.Timeout(connect=timeouts.connect, read=timeouts.idle,
                                  write=60.0, pool=30.0))
        record = AttemptRecord(candidate.url, masked(headers), body, self.clock())
        ctx.attempts.append(record)
        self.health.used(key_scope(candidate.provider.name, candidate.fingerprint))
        exchanged = await self._exchange(ctx, candidate, request, record, bridge)
        if isinstance(exchanged, Committed):
            self._served(ctx, candidate, record)
            return exchanged
        outcome = exchanged
        verdict = judge(outcome, self.clock())
        if verdict.action is Action.DELIVER:
            self._served(ctx, candidate, record)
            return self._whole_answer(bridge, outcome, own_call(call, candidate))
        if verdict.action is Action.PASS_THROUGH:
            self._finish(ctx, candidate, record, str(outcome.status))
            if outcome.failure == "first-event":  # a client error at the head of a stream
                info = error_info(outcome.body)
                return Answer(400, [JSON], json.dumps({"error": {
                    "message": info.message, "type": info.type or "invalid_request_error",
                    "param": info.param or None, "code": info.code or None}}).encode())
            return Answer(outcome.status or 502, response_headers(
                httpx.Headers(outcome.headers), own_call(call, candidate)), outcome.body)
        self._failed(ctx, candidate, verdict, outcome, record)
        return None

    async def _exchange(self, ctx: _Context, candidate: Candidate, request: httpx.Request,
                        record: AttemptRecord, bridge: Bridge) -> Committed | Outcome:
        """Send and read until there is something to judge, or a committed
        stream. The upstream response is closed here unless a stream owns it."""
        call, timeouts = ctx.call, self.config.timeouts
        own = own_call(call, candidate)
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(timeouts.first_byte if call.stream else timeouts.response) \
                    as deadline:
                response = await self.client.send(request, stream=True)
                record.status = response.status_code
                record.response_headers = response_headers(response.headers, own)
                self.metrics.first_byte_seconds.labels(candidate.provider.name).observe(
                    self.clock() - record.started)
                if call.stream and response.status_code == 200 and \
                        "text/event-stream" in response.headers.get("content-type", ""):
                    chunks = aiter(response.aiter_bytes())
                    parser, held = SseParser(), []
                    failed = await self._gate(chunks, parser, held, candidate.protocol,
                                              deadline, timeouts.idle)
                    if failed is None:
                        shaper = bridge.shaper()
                        committed = Committed(
                            200, record.response_headers,
                            self._deliver(response, chunks, parser, held, shaper,
                                          lambda: self._remember(bridge, shaper)),
                            response.aclose)
                        response = None  # the stream owns it now
                        return committed
                    record.response_body = b"".join(event.raw for event in held)
                    return Outcome(200, response.headers, failed.data.encode(),
                                   failure="first-event", client_key=candidate.key is None)
                deadline.reschedule(None)
                ok = 200 <= response.status_code < 300
                record.response_body = await read_body(response, None if ok else MAX_ERROR_BODY)
                return Outcome(response.status_code, response.headers, record.response_body,
                               client_key=candidate.key is None)
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            return Outcome(None, failure=transport_failure(exc))
        finally:
            if response is not None:
                await response.aclose()

    def _finish(self, ctx: _Context, candidate: Candidate, record: AttemptRecord, result: str,
                cooldown: float | None = None, kind: str | None = None) -> None:
        """Close one attempt: its trail step, its record, its metrics."""
        record.ended = self.clock()
        ctx.trail.attempt(self._label(ctx, candidate), result, cooldown)
        record.result = ctx.trail.steps[-1]
        provider = candidate.provider.name
        self.metrics.attempts.labels(provider, kind or result).inc()
        self.metrics.upstream_seconds.labels(provider).observe(record.ended - record.started)

    def _whole_answer(self, bridge: Bridge, outcome: Outcome, own: bool) -> Answer:
        headers = response_headers(httpx.Headers(outcome.headers), own)
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

    async def _gate(self, chunks: AsyncGenerator[bytes, None], parser: SseParser,
                    held: list[Event], protocol: str, deadline: asyncio.Timeout,
                    idle: float) -> Event | None:
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

    async def _deliver(self, response: httpx.Response, chunks: AsyncGenerator[bytes, None],
                       parser: SseParser, held: list[Event], shaper: StreamShaper,
                       completed: Callable[[], None]) -> AsyncGenerator[bytes, None]:
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

    def _served(self, ctx: _Context, candidate: Candidate, record: AttemptRecord) -> None:
        """Success: remember the protocol that served, reset backoff, and put
        aside a key whose bucket is now empty, before it ever sees a 429."""
        self._finish(ctx, candidate, record, "200")
        ctx.served_by = candidate
        if candidate.provider.protocol == "auto":
            self.protocols.put(candidate.provider.name, candidate.model, candidate.protocol)
        key = key_scope(candidate.provider.name, candidate.fingerprint)
        self.health.succeeded(key, model_scope(candidate.provider.name, candidate.model))
        empty_for = parse_hints(dict(record.response_headers), None, self.clock()).exhausted_reset
        if empty_for:
            self.health.cool(key, min(empty_for, self.config.cooldown.ceiling), "remaining 0")

    def _failed(self, ctx: _Context, candidate: Candidate, verdict: Verdict,
                outcome: Outcome, record: AttemptRecord) -> None:
        provider = candidate.provider.name
        seconds = self.health.record(verdict, key_scope(provider, candidate.fingerprint),
                                     model_scope(provider, candidate.model))
        result = str(outcome.status) if outcome.status is not None else verdict.reason
        if outcome.failure == "first-event":
            info = error_info(outcome.body)
            result = f"error event ({(info.message or info.code or 'error')[:120]})"
        if verdict.action is Action.SWITCH_PROTOCOL and candidate.provider.protocol == "auto" \
                and provider not in ctx.protocol_for:
            # The endpoint does not exist here: the same candidate, other protocol.
            ctx.protocol_for[provider] = other(candidate.protocol)
            ctx.switch = self._in_call_protocol(ctx, candidate)
            result += f" (switch to {ctx.protocol_for[provider]})"
            self.metrics.protocol_switches.labels(provider, ctx.protocol_for[provider]).inc()
        elif verdict.action in (Action.SWITCH_PROTOCOL, Action.NEXT_PROVIDER):
            ctx.dead_providers.add(provider)
        if seconds and verdict.cooldown is not None:
            self.metrics.cooldowns.labels(provider, verdict.cooldown.scope.value,
                                          verdict.reason).inc()
        self._finish(ctx, candidate, record, result, seconds,
                     str(outcome.status) if outcome.status is not None else verdict.reason)
        ctx.failures.append(Failure(verdict, outcome, tuple(response_headers(
            httpx.Headers(outcome.headers), own_call(ctx.call, candidate)))))
