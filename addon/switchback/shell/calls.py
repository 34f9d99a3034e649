"""The call lifecycle: an LLM call from its request to the end of its answer.

The async `request` hook recognises the call, opens its charge, hands it
to the dispatcher, then either sets the whole answer on the flow or points
the flow at the loopback relay for a committed stream. Everything else
mitmproxy handles untouched. When the call has ended — a stream once it
closed — the charge settles and `Reporting` reports it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from mitmproxy import connection, ctx, http

from ..engine.charge import Bill, BudgetExceeded, principal_of
from ..engine.delivery import Committed
from ..engine.headers import masked
from ..engine.results import Answer, Result
from ..protocols.envelope import JSON_TYPE, error_body
from ..protocols.spec import spec
from ..recognise import CREDENTIAL_HEADERS, LlmCall, Unreadable, llm_endpoint, read_call
from ..trail import Trail
from ..vocabulary import CallOutcome
from .reporting import Reporting
from .runtime import Runtime

logger = logging.getLogger(__name__)
RELAYED = "switchback_relay_token"  # flow.metadata key: the token of a relayed flow
SHOWN_BODY = 1 << 20  # of a streamed answer, kept for mitmweb or a saved flow
HANGUP_POLL = 0.25  # seconds between looks at whether the client is still there
INTERNAL_ERROR = error_body("Switchback internal error; see the proxy log", "server_error",
                            "switchback_internal_error")


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


class Calls:
    name = "switchback_calls"  # mitmproxy's name for it: unique among addons

    def __init__(self, runtime: Runtime, reporting: Reporting) -> None:
        self.runtime, self.reporting = runtime, reporting
        # Relayed flows by token, until the relay answers them. Flow metadata
        # holds only the token: mitmproxy must be able to save every flow.
        self.relayed: dict[str, Relayed] = {}
        # Streams whose delivered bytes are kept for display, by flow id: only
        # when somebody can look (mitmweb, the console) or flows are saved.
        self.showing: dict[str, Committed] = {}
        self.keep_bodies = False

    def configure(self, updated: set[str]) -> None:
        if "save_stream_file" in updated or "switchback_config" in updated:
            self.keep_bodies = ctx.master.addons.get("view") is not None or bool(
                "save_stream_file" in ctx.options and ctx.options.save_stream_file)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self.runtime.dispatcher is None:
            return
        call = self._recognise(flow)
        if call is None:
            return
        started = time.time()
        auth = flow.metadata.get("proxyauth")
        charge = self.runtime.accounts.charge(
            call, principal_of(str(auth[0]) if isinstance(auth, (tuple, list)) and auth
                               else None, call.credential),
            lambda bill: asyncio.get_running_loop().call_soon(
                self.reporting.report, flow, call, charge.result, bill, started))
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
            flow.response = http.Response.make(502, INTERNAL_ERROR, dict([JSON_TYPE]))
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
            if delivery.upstream is not None:  # what the provider sent, for its attempt's flow
                delivery.upstream.open(SHOWN_BODY)
            self.showing[flow.id] = delivery
        relay = self.runtime.relay
        if not relay.port:
            await relay.start()
        token = relay.park(delivery)
        flow.metadata[RELAYED] = token
        self.relayed[token] = Relayed.point(flow.request, relay.port, token)
        flow.server_conn.via = None  # the relay is local even in upstream-proxy mode

    def _refuse(self, flow: http.HTTPFlow, call: LlmCall, exceeded: BudgetExceeded,
                started: float) -> None:
        """Over budget: the protocol's own "out of money" answer (OpenAI's
        insufficient_quota, Anthropic's billing_error), which SDKs do not retry."""
        refusal = exceeded.refusal
        flow.response = http.Response.make(
            429, spec(call.protocol).error_body(refusal.message(), "insufficient_quota",
                                                "budget_exceeded"),
            {"content-type": "application/json", "x-should-retry": "false"})
        trail = Trail()
        trail.note(f"budget exceeded ({refusal.principal}, {refusal.budget.label})")
        result = Result(Answer(429, [], b""), trail, outcome=CallOutcome.REFUSED)
        asyncio.get_running_loop().call_soon(self.reporting.report, flow, call, result,
                                             Bill(refusal.principal, False, None, None), started)

    def _recognise(self, flow: http.HTTPFlow) -> LlmCall | None:
        """The LLM call in a request, or None to leave it to mitmproxy — with
        one log line when it is an LLM endpoint Switchback cannot read."""
        request = flow.request
        # The URL the client connected to, not what its Host header claims:
        # its credentials may only go there.
        url = request.url
        endpoint = llm_endpoint(request.method, url, self.runtime.table)
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
        dispatcher = self.runtime.dispatcher
        assert dispatcher is not None
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
            return await dispatcher.run(call)
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
        """A relayed stream has ended: its (first MiB of) body becomes viewable.
        mitmweb's view took the flow's end before this hook ran (its addon
        comes first), so it is told again, now with the body."""
        shown = self.showing.pop(flow.id, None)
        if shown is not None and flow.response is not None and shown.shown is not None:
            flow.response.content = bytes(shown.shown)
            view = ctx.master.addons.get("view")
            if view is not None and view.get_by_id(flow.id) is not None:
                view.update([flow])

    async def error(self, flow: http.HTTPFlow) -> None:
        """A relayed flow that died before the relay answered: close its stream now."""
        self.showing.pop(flow.id, None)
        token = flow.metadata.get(RELAYED, "")
        relayed = self.relayed.pop(token, None)
        if relayed is not None:
            relayed.restore(flow.request)
            await self.runtime.relay.discard(token)

