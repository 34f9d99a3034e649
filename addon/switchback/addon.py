"""The mitmproxy shell: options, hooks and glue; no decisions of its own.

The async `request` hook hands a recognised LLM call to the dispatcher, then
either sets the whole answer on the flow or points the flow at the loopback
relay for a committed stream. Everything else mitmproxy handles untouched —
and by default hosts that are not LLM providers are not even TLS-intercepted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Optional
from urllib.parse import urlsplit

from mitmproxy import command, connection, ctx, exceptions, flow, http, log, tls

from .engine.charge import Accounts, Bill, BudgetExceeded, principal_of
from .state.ledger import Ledger, MemoryLedger, RedisLedger
from .accounting.pricing import Pricing
from .config import Config, ConfigError, load_config
from .engine.delivery import Committed
from .engine.dispatch import Answer, AttemptRecord, Dispatcher, Result
from .engine.headers import masked
from .engine.relay import Relay
from .engine.upstream import UPSTREAM_OPTIONS, Upstream
from .state.conversations import Conversations
from .state.cooldowns import Health
from .state.protocol_memory import ProtocolMemory
from .state.link import Link, shared_stores
from .state.stores import MemoryStore, Stores
from .metrics import Metrics
from .providers import ProviderTable
from .recognise import CREDENTIAL_HEADERS, LlmCall, Unreadable, llm_endpoint, read_call
from .status import StatusServer, status_document
from .tracing import AttemptTrace, CallTrace, Tracing
from .trail import Trail
from .vocabulary import CallOutcome

logger = logging.getLogger(__name__)
# One line per call is ours to write; the HTTP client's debug tracing is
# pure cost when mitmproxy logs at debug level.
for _name in ("aiohttp",):
    logging.getLogger(_name).setLevel(logging.WARNING)
RELAYED = "switchback_relay_token"  # flow.metadata key: the token of a relayed flow
# mitmweb marks a flow with one emoji (by its shortcode); the comment shows them all.
MARKS = {"failed over": (":twisted_rightwards_arrows:", "🔀"),
         "translated": (":arrows_counterclockwise:", "🔄")}
SHOWN_BODY = 1 << 20  # of a streamed answer, kept for mitmweb or a saved flow
HANGUP_POLL = 0.25  # seconds between looks at whether the client is still there


WEBSOCKET_REFUSED = json.dumps({"error": {
    "message": "Switchback serves this endpoint over HTTPS, not WebSocket: use the HTTP API "
               "(Codex CLI: supports_websockets = false, or let it fall back).",
    "type": "invalid_request_error", "code": "websocket_not_supported"}}).encode()


OWN_PORT_REFUSED = json.dumps({"error": {
    "message": "Switchback's status server is not reachable through the proxy; "
               "query it on this machine without the proxy.",
    "type": "invalid_request_error", "code": "switchback_status_not_proxied"}}).encode()
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def websocket_path(rest: str) -> bool:
    """Endpoints clients may try over a WebSocket: /responses, /realtime…"""
    return rest.startswith(("/responses", "/realtime"))


def client_gone(client: connection.Client) -> bool:
    """The client closed (or lost) its connection: nobody waits for the answer.
    A client that only half-closes after its request counts as gone too;
    HTTP clients do not do that."""
    return not client.state & connection.ConnectionState.CAN_READ


@dataclasses.dataclass
class Relayed:
    """What the client sent, put back on its flow for display once the relay
    answers."""

    sent: tuple

    @classmethod
    def point(cls, request: http.Request, port: int, token: str) -> Relayed:
        """Point `request` at the relay — no body, no client headers: the relay
        needs neither — and keep what it was. Set on `request.data` directly:
        the URL setter would parse and check again what is known here."""
        data = request.data
        relayed = cls((data.scheme, data.host, data.port, data.path, data.authority,
                       data.headers, data.content))
        data.scheme, data.host, data.port = b"http", "127.0.0.1", port
        data.path, data.authority = f"/{token}".encode(), b""
        data.headers = http.Headers(host=f"127.0.0.1:{port}", content_length="0")
        data.content = b""
        return relayed

    def restore(self, request: http.Request) -> None:
        data = request.data
        (data.scheme, data.host, data.port, data.path, data.authority, data.headers,
         data.content) = self.sent


class Switchback:
    def __init__(self) -> None:
        self.config = Config()
        self.table = ProviderTable({})
        self.stores = Stores.memory()
        self.link: Link | None = None  # to the state replicas share, when configured
        self.started = False  # running: the state backend is chosen for good
        self.health = Health(self.stores.cooldowns, self.stores.strikes, self.stores.uses)
        self.metrics = Metrics()
        self.metrics.state_up.set_function(lambda: 0 if self.link and not self.link.healthy
                                           else 1)
        self.relay = Relay()
        self.ledger: Ledger = MemoryLedger()
        self.accounts = Accounts(self.ledger)
        self.tracing = Tracing.from_environment()
        self.status = StatusServer(self.status_document, self.metrics, self.reset_command,
                                   self.budget_rows, self.reset_budgets)
        self.dispatcher: Dispatcher | None = None
        self.retired: list[Upstream] = []  # clients replaced by a reconfigure
        # Relayed flows by token, until the relay answers them. Flow metadata
        # holds only the token: mitmproxy must be able to save every flow.
        self.relayed: dict[str, Relayed] = {}
        # Streams whose delivered bytes are kept for display, by flow id: only
        # when somebody can look (mitmweb, the console) or flows are saved.
        self.showing: dict[str, Committed] = {}
        self.keep_bodies = False
        self.announce = True  # write one log line per call
        # Options read on every request, parsed once here (an option lookup
        # costs more than the check it serves).
        self.status_port = 0
        self.pass_websockets = False

    def load(self, loader) -> None:
        loader.add_option(
            "switchback_config", Optional[str], None,
            "Switchback YAML config: providers, keys, fallbacks, timeouts. "
            "Without it, built-in provider hosts are recognised and nothing falls back.")
        loader.add_option(
            "switchback_intercept", str, "llm",
            "Which hosts to TLS-intercept: 'llm' (only LLM provider hosts, other HTTPS is "
            "tunnelled untouched) or 'all'.", choices=("llm", "all"))
        loader.add_option(
            "switchback_websocket", str, "refuse",
            "WebSocket upgrades to a provider's /responses or /realtime: 'refuse' answers "
            "426 so clients (Codex CLI) use HTTPS, where Switchback does its work; 'pass' "
            "lets them through untouched, without failover.", choices=("refuse", "pass"))
        loader.add_option(
            "switchback_status_port", int, 8089,
            "Loopback port for Switchback's /status (JSON) and /metrics (Prometheus); "
            "0 turns them off.")

    def configure(self, updated: set[str]) -> None:
        if "switchback_config" in updated:
            try:
                config = load_config(ctx.options.switchback_config)
            except ConfigError as exc:
                many = len(exc.problems) > 1
                raise exceptions.OptionsError(
                    f"Switchback config error{'s' if many else ''}:{chr(10) if many else ' '}"
                    f"{exc}") from None
            self._adopt_state(config)
            self.config, self.table = config, ProviderTable(config.providers)
            self.health.policy = config.cooldown
            self.accounts = Accounts(self.ledger, Pricing(config.pricing), config.budgets,
                                     config.budget_output_tokens,
                                     replacing=self.accounts)
        if updated & {"switchback_status_port", "switchback_websocket"}:
            self.status_port = ctx.options.switchback_status_port
            self.pass_websockets = ctx.options.switchback_websocket == "pass"
        if "connection_strategy" in updated and ctx.options.connection_strategy != "lazy":
            # Eager connections fail at CONNECT when an origin is down, before
            # Switchback could fall back. Set here, before the proxy listens.
            logger.info("switchback: setting connection_strategy=lazy")
            ctx.options.update(connection_strategy="lazy")
        if "termlog_verbosity" in updated:
            # A log line costs about a tenth of a proxied call in mitmproxy's logging
            # machinery: write the per-call line only where somebody reads it —
            # a terminal log at info or more (not mitmdump -q), or an event
            # log (mitmweb, the console).
            self.announce = (log.log_tier(ctx.options.termlog_verbosity) >= log.log_tier("info")
                             or ctx.master.addons.get("eventstore") is not None)
        if "save_stream_file" in updated or "switchback_config" in updated:
            self.keep_bodies = ctx.master.addons.get("view") is not None or bool(
                "save_stream_file" in ctx.options and ctx.options.save_stream_file)
        if "stream_large_bodies" in updated and ctx.options.stream_large_bodies:
            # mitmproxy streams a request body on to the origin as soon as it
            # outgrows the limit, before any hook could hold it back.
            raise exceptions.OptionsError(
                "Switchback cannot work with stream_large_bodies set: mitmproxy would send "
                "large LLM request bodies on to the provider unread, so Switchback could not "
                "replay them. Unset stream_large_bodies (Switchback streams SSE answers "
                "itself).")
        if self.dispatcher is None or updated & {"switchback_config", *UPSTREAM_OPTIONS}:
            upstream = Upstream(
                insecure=ctx.options.ssl_insecure,
                cafile=ctx.options.ssl_verify_upstream_trusted_ca,
                capath=ctx.options.ssl_verify_upstream_trusted_confdir,
                modes=ctx.options.mode,
                connect_timeout=self.config.timeouts.connect)
            if self.dispatcher is not None:
                # In-flight calls may still use it; it is closed at shutdown.
                self.retired.append(self.dispatcher.upstream)
            self.dispatcher = Dispatcher(
                upstream, self.config, self.table, self.health,
                ProtocolMemory(self.stores.protocols, self.config.protocol_memory),
                Conversations(self.stores.conversations, self.stores.affinity,
                              self.config.conversation_ttl))

    def _adopt_state(self, config: Config) -> None:
        """The stores for `config`: this process's memory, or near caches of the
        state replicas share. The backend is chosen once; a reload can only
        resize the memory conversation store."""
        if self.link is not None or config.state is None or self.started:
            if config.state != (self.config.state if self.link else None):
                logger.warning("switchback: the shared state setting changes only on restart")
            if self.link is None and config.conversation_bytes != self.config.conversation_bytes:
                self.stores = dataclasses.replace(self.stores, conversations=MemoryStore(
                    config.conversation_bytes, sizeof=len))
            return
        self.link = Link(config.state.url, config.state.prefix)
        link = self.link
        self.ledger = RedisLedger(config.state.url, config.state.prefix, fallback=self.ledger,
                                  available=lambda: link.healthy)
        memory = Stores.memory(conversation_bytes=config.conversation_bytes)
        self.stores = shared_stores(self.link, memory)
        self.health = Health(self.stores.cooldowns, self.stores.strikes, self.stores.uses,
                             config.cooldown)

    async def running(self) -> None:
        self.started = True
        if self.link is not None:
            await self.link.start()
        await self.relay.start()
        if ctx.options.switchback_status_port:
            await self.status.start(ctx.options.switchback_status_port)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Tunnel TLS to hosts that are not LLM providers, unless told to intercept all:
        git, pip or npm behind the same HTTPS_PROXY keep working without our CA."""
        if ctx.options.switchback_intercept == "all":
            return
        address = data.context.server.address
        if address and not self.table.is_provider_origin(*address):
            data.ignore_connection = True

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self.dispatcher is None:
            return
        if self._refuse_websocket(flow) or self._refuse_own_ports(flow):
            return
        call = self._recognise(flow)
        if call is None:
            return
        started = time.time()
        auth = flow.metadata.get("proxyauth")
        charge = self.accounts.charge(
            call, principal_of(str(auth[0]) if isinstance(auth, (tuple, list)) and auth
                               else None, call.credential),
            lambda bill: asyncio.get_running_loop().call_soon(
                self._report, flow, call, charge.result, bill, started))
        try:
            async with charge:
                charge.result = result = await self._dispatch(flow, call)
                if result is not None:
                    await self._deliver(flow, result)
        except BudgetExceeded as exceeded:
            self._refuse(flow, call, exceeded, started)
            return
        except Exception:
            # Attempts may already have reached a provider: answering beats
            # letting mitmproxy send the call once more behind our back.
            logger.exception("switchback: internal error while handling an LLM call")
            flow.response = http.Response.make(
                502, b'{"error":{"message":"Switchback internal error; see the proxy log",'
                     b'"type":"server_error","code":"switchback_internal_error"}}',
                {"content-type": "application/json"})
            return
        if result is None:  # the client hung up; nobody is left to answer
            flow.kill()

    async def _deliver(self, flow: http.HTTPFlow, result: Result) -> None:
        """Set a whole answer on the flow, or point the flow at the relay for a stream."""
        # Switchback made the upstream calls; what mitmproxy still sends goes to
        # our relay at most. So the flow can show fingerprints instead of keys.
        for name, value in masked(flow.request.headers.items(multi=True)):
            if name.lower() in CREDENTIAL_HEADERS:
                flow.request.headers[name] = value
        delivery = result.delivery
        if isinstance(delivery, Answer):
            flow.response = http.Response.make(delivery.status, delivery.body, http.Headers(
                [(k.encode(), v.encode()) for k, v in delivery.headers]))
            return
        if self.keep_bodies:
            delivery.shown, delivery.shown_limit = bytearray(), SHOWN_BODY
            self.showing[flow.id] = delivery
        if not self.relay.port:
            await self.relay.start()
        token = self.relay.park(delivery)
        flow.metadata[RELAYED] = token
        self.relayed[token] = Relayed.point(flow.request, self.relay.port, token)
        flow.server_conn.via = None  # the relay is local even in upstream-proxy mode

    def _refuse(self, flow: http.HTTPFlow, call: LlmCall, exceeded: BudgetExceeded,
                started: float) -> None:
        """Over budget: OpenAI's own "out of money" answer, which SDKs do not retry."""
        refusal = exceeded.refusal
        flow.response = http.Response.make(429, json.dumps({"error": {
            "message": refusal.message(), "type": "insufficient_quota", "param": None,
            "code": "budget_exceeded"}}).encode(),
            {"content-type": "application/json", "x-should-retry": "false"})
        trail = Trail()
        trail.note(f"budget exceeded ({refusal.principal}, {refusal.budget.label})")
        result = Result(Answer(429, [], b""), trail, outcome=CallOutcome.REFUSED)
        asyncio.get_running_loop().call_soon(self._report, flow, call, result,
                                             Bill(refusal.principal, False, None, None), started)

    def _refuse_own_ports(self, flow: http.HTTPFlow) -> bool:
        """Switchback's status server and relay listen on loopback for this
        machine's operator: a proxy client must not reach them through the
        proxy (POST /reset/budgets would forgive everybody's spending)."""
        request = flow.request
        if request.port not in (self.status_port, self.relay.port) \
                or request.host not in LOOPBACK:
            return False
        flow.response = http.Response.make(403, OWN_PORT_REFUSED,
                                           {"content-type": "application/json"})
        return True

    def _refuse_websocket(self, flow: http.HTTPFlow) -> bool:
        """Answer a WebSocket upgrade to an LLM endpoint with 426 (unless told to
        pass them): over a WebSocket, turns would bypass every failover."""
        request = flow.request
        if self.pass_websockets or request.headers.get("upgrade", "").lower() != "websocket":
            return False
        if not any(websocket_path(rest) for _, rest in self.table.under(request.url)):
            return False
        flow.response = http.Response.make(426, WEBSOCKET_REFUSED, {
            "content-type": "application/json", "connection": "close"})
        logger.info(f"switchback: refused a WebSocket upgrade to {request.pretty_host}"
                    f"{request.path.partition('?')[0]}; the client should use HTTPS")
        return True

    def _recognise(self, flow: http.HTTPFlow) -> LlmCall | None:
        """The LLM call in a request, or None to leave it to mitmproxy — with
        one log line when it is an LLM endpoint Switchback cannot read."""
        request = flow.request
        # The URL the client connected to, not what its Host header claims:
        # its credentials may only go there.
        url = request.url
        endpoint = llm_endpoint(request.method, url, self.table)
        if endpoint is None:
            return None
        try:
            if request.stream:
                raise Unreadable("another addon streamed its body on")
            return read_call(endpoint, url, request.headers.items(multi=True),
                             request.content or b"")
        except ValueError as exc:  # Unreadable, or an undecodable content-encoding
            where = request.pretty_host + request.path.partition("?")[0]  # no query: no secrets
            logger.info(f"switchback: passing {where} through untouched: {exc}")
            return None

    async def _dispatch(self, flow: http.HTTPFlow, call: LlmCall) -> Result | None:
        """Run the call, but stop — closing every upstream — as soon as the
        client is gone; None then. A timer looks now and then; no extra task."""
        assert self.dispatcher is not None
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None
        gone = False

        def look() -> None:
            nonlocal gone, timer
            if client_gone(flow.client_conn):
                gone = True
                task.cancel()
            else:
                timer = loop.call_later(HANGUP_POLL, look)

        timer = loop.call_later(HANGUP_POLL, look)
        try:
            return await self.dispatcher.run(call)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # our own cancel, not mitmproxy's: the hook ends normally
            logger.info(f"switchback: {call.protocol} {call.model} → client gone before "
                        "the answer; its attempts were cancelled")
            return None
        finally:
            timer.cancel()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        relayed = self.relayed.pop(flow.metadata.get(RELAYED, ""), None)
        if relayed is not None and flow.response is not None:
            flow.response.stream = True
            relayed.restore(flow.request)

    def response(self, flow: http.HTTPFlow) -> None:
        """A relayed stream has ended: its (first MiB of) body becomes viewable."""
        shown = self.showing.pop(flow.id, None)
        if shown is not None and flow.response is not None and shown.shown is not None:
            flow.response.content = bytes(shown.shown)

    async def error(self, flow: http.HTTPFlow) -> None:
        """A relayed flow that died before the relay answered: close its stream now."""
        self.showing.pop(flow.id, None)
        token = flow.metadata.get(RELAYED, "")
        relayed = self.relayed.pop(token, None)
        if relayed is not None:
            relayed.restore(flow.request)
            await self.relay.discard(token)

    def _report(self, flow: http.HTTPFlow, call: LlmCall, result: Result | None, bill: Bill,
                started: float) -> None:
        """Once the call has ended (a stream: once it closed): metrics and the
        trace; the trail, tokens and cost in the flow comment and the log; in
        mitmweb, each attempt as its own flow linked to the client's. A call
        whose client left before the answer was logged as it happened."""
        ended = time.time()
        if result is None:
            return
        self.metrics.observe(result, bill)
        if self.tracing.enabled:
            self.tracing.record(call_trace(call, result, bill, started, ended))
        marks = [name for name, happened in (
            ("failed over", result.failures and result.served_by is not None),
            ("translated", result.switched)) if happened]
        if marks:
            flow.marked = MARKS[marks[0]][0]
        spent = bill.text()
        flow.comment = flow_comment(result, "".join(MARKS[m][1] for m in marks), spent)
        flow.metadata["switchback"] = {"trail": str(result.trail),
                                       "outcome": result.outcome.value,
                                       "attempts": len(result.attempts), "marks": marks,
                                       "principal": bill.principal, **bill.figures()}
        served = f" via {result.served_by.label}" if result.served_by else ""
        if self.announce:
            logger.info(f"switchback: {call.protocol} {call.model}"
                        f"{' stream' if call.stream else ''} → {result.outcome}{served}, "
                        f"{len(result.attempts)} attempt(s), {ended - started:.2f}s"
                        f"{', ' + spent if spent else ''}: {result.trail}")
        view = ctx.master.addons.get("view")
        if view is not None:
            view.add([attempt_flow(flow, record, n, len(result.attempts))
                      for n, record in enumerate(result.attempts, 1)])
            if view.get_by_id(flow.id) is not None:  # a stream ended after its flow showed
                view.update([flow])

    async def reset_budgets(self) -> None:
        """Forget what every principal spent (POST /reset/budgets)."""
        await self.ledger.clear()
        logger.info("switchback: budget figures reset")

    async def budget_rows(self) -> list[dict]:
        """Every budget's figures in its current window, configured principals first seen."""
        configured = [(principal, budgets) for principal, budgets in self.config.budgets.items()
                      if principal != "*"]
        return [account.row() for account in await self.ledger.accounts(configured)]

    def status_document(self, budgets: list[dict] | None = None) -> dict:
        protocols = self.dispatcher.protocols if self.dispatcher \
            else ProtocolMemory(self.stores.protocols)
        state = {"backend": "redis" if self.link else "memory",
                 "healthy": self.link.healthy if self.link else True}
        return status_document(self.table, set(self.config.providers), self.health,
                               protocols, self.metrics, state, budgets)

    @command.command("switchback.status")
    def status_command(self) -> str:
        """Switchback's state: providers, cooldowns, protocol memory, counters (JSON).
        Budgets, which may live in Redis, are on the status server's /status."""
        return json.dumps(self.status_document(), indent=2)

    @command.command("switchback.reset")
    def reset_command(self) -> None:
        """Forget every cooldown, backoff, key use, remembered protocol and conversation."""
        self.stores.clear()
        logger.info("switchback: state reset")

    async def done(self) -> None:
        await self.relay.stop()  # closing the streams settles their calls
        await self.accounts.close()
        await self.ledger.close()
        if self.link is not None:
            await self.link.stop()
        await self.status.stop()
        await asyncio.to_thread(self.tracing.shutdown)
        for upstream in self.retired:
            await upstream.aclose()
        if self.dispatcher is not None:
            await self.dispatcher.upstream.aclose()


def flow_comment(result: Result, icons: str, spent: str = "") -> str:
    """What mitmweb's comment column shows: the marks, the attempts, tokens
    and cost, the trail."""
    count = len(result.attempts)
    return f"{icons + ' ' if icons else ''}{count} attempt{'s' if count != 1 else ''}" \
           f"{', ' + spent if spent else ''}: {result.trail}"


def call_trace(call: LlmCall, result: Result, bill: Bill, started: float,
               ended: float) -> CallTrace:
    """A finished call as the tracer takes it."""
    served, usage = result.served_by, bill.usage
    failed = result.outcome is not CallOutcome.OK
    return CallTrace(
        operation="chat", request_model=call.model,
        response_model=(usage.model if usage and usage.model else served.model)
        if served else None,
        provider=(served or call).provider.name, started=started, ended=ended,
        outcome=result.outcome.value, stream=call.stream,
        input_tokens=usage.input if usage else None, output_tokens=usage.output if usage else None,
        cached_tokens=usage.cached if usage else None,
        reasoning_tokens=usage.reasoning if usage else None, cost_usd=bill.cost,
        principal=bill.principal,
        attempts=tuple(AttemptTrace(
            provider=a.provider, key=a.key, url=a.url, started=a.started,
            ended=a.ended or ended, status=a.status, result=a.result,
            verdict=a.reason.value if a.reason else None, cooldown=a.cooldown,
            cooldown_scope=a.scope.value if a.scope else None,
            switched_to=a.switched_to.value if a.switched_to else None)
            for a in result.attempts),
        error_type=result.outcome.name.lower() if failed else None)


def attempt_flow(parent: http.HTTPFlow, record: AttemptRecord, n: int, total: int
                 ) -> http.HTTPFlow:
    """One upstream attempt as a flow of its own for mitmweb."""
    parts = urlsplit(record.url)
    server = connection.Server(address=(parts.hostname or "", parts.port or 443))
    attempt = http.HTTPFlow(parent.client_conn, server)
    attempt.request = http.Request.make("POST", record.url, record.body, http.Headers(
        [(k.encode(), v.encode()) for k, v in record.headers]))
    attempt.request.timestamp_start = attempt.request.timestamp_end = record.started
    if record.status is not None:
        attempt.response = http.Response.make(record.status, record.response_body, http.Headers(
            [(k.encode(), v.encode()) for k, v in record.response_headers]))
        attempt.response.timestamp_start = attempt.response.timestamp_end = record.ended
    else:
        attempt.error = flow.Error(record.result)
    attempt.comment = f"Switchback attempt {n}/{total} for flow {parent.id}: {record.result}"
    attempt.metadata["switchback_call"] = parent.id
    attempt.live = False
    return attempt
