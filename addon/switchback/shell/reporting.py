"""Reporting: what a finished call tells the people and systems watching.

Once a call has ended — a stream once it closed — its metrics and trace are
recorded, its trail, tokens and cost go into the flow comment and one log
line, and in mitmweb each attempt becomes a flow of its own, linked to the
client's.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from urllib.parse import urlsplit

from mitmproxy import connection, ctx, flow, http, log

from ..engine.charge import Bill
from ..engine.delivery import Committed
from ..engine.results import AttemptRecord, Result
from ..recognise import LlmCall
from ..vocabulary import CallOutcome
from .runtime import Runtime
from .tracing import AttemptTrace, CallTrace

logger = logging.getLogger(__name__)
# mitmweb marks a flow with one emoji (by its shortcode); the comment shows them all.
MARKS = {"rescued": (":adhesive_bandage:", "🩹"),
         "failed over": (":twisted_rightwards_arrows:", "🔀"),
         "translated": (":arrows_counterclockwise:", "🔄")}
ATTEMPT_MARK = (":arrow_right_hook:", "↪")  # an attempt's flow: not a call a client made
CALL_NAME = 8  # characters of a flow id that name its call in comments (`~comment NAME`)


class Reporting:
    name = "switchback_reporting"  # mitmproxy's name for it: unique among addons

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.announce = True  # write one log line per call

    def configure(self, updated: set[str]) -> None:
        if "termlog_verbosity" in updated:
            # A log line costs about a tenth of a proxied call in mitmproxy's logging
            # machinery: write the per-call line only where somebody reads it —
            # a terminal log at info or more (not mitmdump -q), or an event
            # log (mitmweb, the console).
            self.announce = (log.log_tier(ctx.options.termlog_verbosity) >= log.log_tier("info")
                             or ctx.master.addons.get("eventstore") is not None)

    def report(self, flow: http.HTTPFlow, call: LlmCall, result: Result | None, bill: Bill,
               started: float) -> None:
        """Metrics and the trace; the trail, tokens and cost in the flow comment
        and the log; the attempts in mitmweb. A call whose client left before
        the answer was logged as it happened."""
        metrics, tracing = self.runtime.metrics, self.runtime.tracing
        ended = time.time()
        if result is None:
            return
        result.conclude()
        metrics.observe(result, bill)
        if tracing.enabled:
            tracing.record(call_trace(call, result, bill, started, ended))
        delivery = result.delivery
        if isinstance(delivery, Committed) and result.attempts:
            # The attempt that served a stream lasted as long as the stream, and
            # sent what its tap kept (when somebody can look).
            served = result.attempts[result.streamed]
            served.ended = ended
            sent = delivery.upstream.sent() if delivery.upstream is not None else None
            if sent is not None:
                served.response_body = sent
        marks = [name for name, happened in (
            ("rescued", result.outcome is CallOutcome.RESCUED),
            ("failed over", result.failures and result.served_by is not None),
            ("translated", result.switched)) if happened]
        if marks:
            flow.marked = MARKS[marks[0]][0]
        spent, name, by = bill.text(), flow.id[:CALL_NAME], result.served_by
        flow.comment = flow_comment(result, "".join(MARKS[m][1] for m in marks), name, spent)
        flow.metadata["switchback"] = {
            "call": name, "protocol": call.protocol.value, "model": call.model,
            "served": None if by is None else {
                "provider": by.provider.name, "model": by.model, "protocol": by.protocol.value,
                "answered": bill.usage.model if bill.usage else None},
            "trail": str(result.trail), "outcome": result.outcome.value,
            "attempts": len(result.attempts), "marks": marks, "principal": bill.principal,
            **bill.figures()}
        served = f" via {by.label}" if by else ""
        if self.announce:
            kind = " stream" if call.stream else " count_tokens" if call.counting else ""
            logger.info(f"switchback: {call.protocol} {call.model}{kind}"
                        f" → {result.outcome}{served}, "
                        f"{len(result.attempts)} attempt(s), {ended - started:.2f}s"
                        f"{', ' + spent if spent else ''}: {result.trail}")
        view = ctx.master.addons.get("view")
        if view is not None:
            view.add([attempt_flow(flow, record, n, len(result.attempts), name)
                      for n, record in enumerate(result.attempts, 1)])
            if view.get_by_id(flow.id) is not None:  # a stream ended after its flow showed
                view.update([flow])


def flow_comment(result: Result, icons: str, name: str, spent: str = "") -> str:
    """What mitmweb's comment column shows, most telling first: the marks,
    the trail, the attempt count, tokens and cost, and the call's name,
    which its attempts' comments share (filter `~comment NAME`)."""
    count = len(result.attempts)
    return " · ".join(part for part in (
        f"{icons + ' ' if icons else ''}{result.trail}",
        f"{count} attempt{'s' if count != 1 else ''}", spent, f"call {name}") if part)


def call_trace(call: LlmCall, result: Result, bill: Bill, started: float,
               ended: float) -> CallTrace:
    """A finished call as the tracer takes it."""
    served, usage = result.served_by, bill.usage
    failed = not result.outcome.answered
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


def reason_phrase(status: int) -> bytes:
    """The standard phrase (mitmproxy's table lacks 429); none for a code like 529."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def attempt_flow(parent: http.HTTPFlow, record: AttemptRecord, n: int, total: int, name: str
                 ) -> http.HTTPFlow:
    """One upstream attempt as a flow of its own for mitmweb: marked, named
    after its call, listed right after it, with the request as sent and the
    answer as it came — status, reason, headers and body (a stream's too,
    when kept), its real timing, and no header the provider did not send."""
    parts = urlsplit(record.url)
    server = connection.Server(address=(parts.hostname or "", parts.port or 443))
    attempt = http.HTTPFlow(parent.client_conn, server)
    attempt.timestamp_created = record.started
    attempt.request = http.Request.make("POST", record.url, record.body, http.Headers(
        [(k.encode(), v.encode()) for k, v in record.headers]))
    attempt.request.timestamp_start = attempt.request.timestamp_end = record.started
    if record.status is not None:
        answered = record.started + (record.first_byte or 0.0)
        attempt.response = http.Response(
            b"HTTP/1.1", record.status, reason_phrase(record.status),
            http.Headers([(k.encode(), v.encode()) for k, v in record.response_headers]),
            record.response_body, None, answered, max(record.ended, answered))
    else:
        attempt.error = flow.Error(record.result)
    attempt.marked = ATTEMPT_MARK[0]
    attempt.comment = f"{ATTEMPT_MARK[1]} {record.result} · attempt {n}/{total} of call {name}"
    attempt.metadata["switchback_call"] = parent.id
    attempt.metadata["switchback_attempt"] = {"call": name, "n": n, "of": total,
                                              "provider": record.provider, "key": record.key,
                                              "result": record.result}
    attempt.live = False
    return attempt
