"""Budgets never leak, as a property: random sequences of calls — served,
failed over after a 429, every attempt a 5xx, an error event first, a stream
cut mid-way, a client gone before or after the answer started, concurrent
calls — through the real attempt loop against a loopback provider, each in
a `Charge`. After every run nothing is held, every charge has ended once,
and what the budget spent is exactly what the ended calls were billed: the
provider's usage at its price for what was served, nothing for what was not.
"""

from __future__ import annotations

import asyncio
import enum
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.fakeprovider import chat_events, sse_bytes
from support.engine import wire
from switchback.engine.rescue import MAX_RESCUES
from support.loopserver import LoopServer, Script, Seen
from switchback.accounting.budgets import Amount
from switchback.engine.charge import Accounts, Bill, BudgetExceeded
from switchback.state.ledger import MemoryLedger
from switchback.accounting.pricing import Pricing
from switchback.protocols.usage import Usage
from switchback.engine.delivery import Committed
from switchback.recognise import recognise

KEY_ONE, KEY_TWO = "sk-one-0000000000", "sk-two-0000000000"
CENTS = 10_000.0  # USD per million tokens: one token costs a cent
SERVED_COST = 8 * CENTS / 1_000_000  # the fake's usage: 5 in, 3 out


class Outcome(enum.Enum):
    OK = "ok"
    RATE_LIMITED = "429 then ok"  # the first key is limited, the second serves
    SERVER_ERROR = "5xx"  # every attempt: the call is exhausted
    ERROR_EVENT = "error event first"  # streams: every attempt fails at the gate
    CUT = "cut mid-stream"  # committed, then the connection drops: no usage
    GONE_BEFORE = "client gone before the answer"
    GONE_AFTER = "client gone after the answer started"


STREAM_ONLY = {Outcome.ERROR_EVENT, Outcome.CUT, Outcome.GONE_AFTER}
NOTHING_SERVED = {Outcome.SERVER_ERROR, Outcome.ERROR_EVENT, Outcome.GONE_BEFORE}


def answer(seen: Seen) -> Script:
    """The provider's side of each outcome, named in the call's message."""
    body = json.loads(seen.body)
    outcome = Outcome(body["messages"][0]["content"])
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    stream = sse_bytes(chat_events("m", "one two three four", usage=usage))
    if outcome is Outcome.SERVER_ERROR or (outcome is Outcome.RATE_LIMITED
                                           and seen.key == KEY_ONE):
        status = 500 if outcome is Outcome.SERVER_ERROR else 429
        return Script.json(status, {"error": {"message": "no", "type": "server_error"}})
    if outcome is Outcome.ERROR_EVENT:
        return Script.sse([b'data: {"error": {"message": "overloaded"}}\n\n'])
    if outcome is Outcome.CUT:
        return Script.sse([stream[:stream.index(b"three")]])
    if outcome is Outcome.GONE_BEFORE:
        return Script.sse([stream], delay=5.0)
    if outcome is Outcome.GONE_AFTER:  # the first word, then the client leaves
        at = stream.index(b"two")
        return Script.sse([stream[:at], stream[at:]], pause=0.5)
    if not body.get("stream"):
        return Script.json(200, {"id": "c", "object": "chat.completion", "model": "m",
                                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                     "role": "assistant", "content": "one two three four"}}],
                                 "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    return Script.sse([stream[i:i + 61] for i in range(0, len(stream), 61)])


calls = st.lists(st.tuples(st.sampled_from(Outcome), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(calls, min_size=1, max_size=3), limit=st.integers(10, 120))
def test_no_hold_outlives_its_call_and_spent_is_what_was_billed(batches, limit):
    asyncio.run(run(batches, limit))


async def run(batches: list[list[tuple[Outcome, bool]]], limit: int) -> None:
    async with LoopServer(answer) as server:
        dispatcher = wire(f"""
providers:
  p: {{base_url: "{server.base_url}", keys: [{KEY_ONE}, {KEY_TWO}]}}
cooldown: {{max_wait: 0s}}
pricing:
  m: {{input: {CENTS}, output: {CENTS}}}
budgets:
  "*": [{{tokens: {limit}, period: day}}, {{usd: 100, period: day}}]
""")
        config, upstream = dispatcher.config, dispatcher.transport
        ledger = MemoryLedger()
        accounts = Accounts(ledger, Pricing(config.pricing), config.budgets)
        bills: list[tuple[Outcome, bool, Bill]] = []
        refused = 0

        async def call(outcome: Outcome, stream: bool) -> None:
            nonlocal refused
            stream = stream or outcome in STREAM_ONLY
            body = {"model": "m", "max_tokens": 3, "stream": stream,
                    "messages": [{"role": "user", "content": outcome.value}]}
            request = recognise("POST", server.base_url + "/chat/completions",
                                [("authorization", f"Bearer {KEY_ONE}")],
                                json.dumps(body).encode(), dispatcher.table)
            charge = accounts.charge(request, "team",
                                     lambda bill: bills.append((outcome, stream, bill)))
            try:
                async with charge:
                    charge.result = result = await dispatcher.run(request)
            except BudgetExceeded:
                refused += 1
                return
            delivery = result.delivery
            if isinstance(delivery, Committed):  # what the relay does with it
                try:
                    if outcome is not Outcome.GONE_AFTER:
                        async for _ in delivery.rest:
                            pass
                finally:
                    await delivery.aclose()

        try:
            for batch in batches:  # the calls of a batch run at once
                tasks = [asyncio.ensure_future(call(*c)) for c in batch]
                gone = [t for t, (outcome, _) in zip(tasks, batch)
                        if outcome is Outcome.GONE_BEFORE]
                if gone:
                    await asyncio.sleep(0.05)  # they are waiting for the answer's head
                    for task in gone:
                        task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await upstream.aclose()

        made = sum(len(batch) for batch in batches)
        assert len(bills) == made - refused  # every admitted call ended, once
        assert not accounts.open
        billed = Amount()
        for outcome, stream, bill in bills:
            billed = billed + bill.amount()
            if not bill.served:  # nothing served (or everything cooling): a full refund
                assert bill.amount() == Amount()
                continue
            assert outcome not in NOTHING_SERVED
            if outcome in (Outcome.CUT, Outcome.GONE_AFTER):
                # No usage came: the request's input and the output delivered, estimated.
                assert bill.usage is not None and bill.usage.estimated
                assert 0 < bill.usage.output <= 3 * (1 + MAX_RESCUES)  # each attempt cut
            else:
                assert bill.usage == Usage(5, 3, model="m")
                assert math.isclose(bill.cost, SERVED_COST)
        (tokens, usd) = sorted(await ledger.accounts([("team", config.budgets["*"])]),
                               key=lambda a: a.budget.label)
        for account in (tokens, usd):
            assert account.reserved == Amount()  # nothing held once every call ended
            assert account.spent.tokens == billed.tokens
            assert math.isclose(account.spent.usd, billed.usd, abs_tol=1e-9)
            assert account.calls == sum(bill.served for _, _, bill in bills)
        assert tokens.spent.tokens <= limit  # each call held at least what it cost
        assert tokens.refused == refused
