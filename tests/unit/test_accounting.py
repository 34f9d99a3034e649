"""Usage, estimates, prices and each call's charge: tables for the pure
parts, and every way a call can end for the charge around it."""

from __future__ import annotations

import asyncio
import math

import pytest

from switchback.accounting.budgets import Amount, Budget, Period, Unit
from switchback.engine.charge import (ANONYMOUS, Accounts, Bill, BudgetExceeded,
                                          principal_of)
from switchback.accounting.estimate import input_tokens, output_tokens, text_tokens, worst_case
from switchback.state.ledger import MemoryLedger
from switchback.accounting.pricing import Price, Pricing
from switchback.protocols.spec import spec
from switchback.protocols.usage import Usage
from switchback.config import ConfigError, parse_config
from switchback.engine.delivery import Committed
from switchback.engine.results import Answer, Result
from switchback.plan import Candidate
from switchback.providers import Provider
from switchback.recognise import LlmCall, fingerprint
from switchback.trail import Trail
from switchback.vocabulary import CallOutcome, Protocol

CHAT, RESPONSES = Protocol.CHAT, Protocol.RESPONSES


# ------------------------------------------------------------------ usage


@pytest.mark.parametrize("protocol, usage, expected", [
    (CHAT, {"prompt_tokens": 10, "completion_tokens": 4}, Usage(10, 4)),
    (CHAT, {"prompt_tokens": 10, "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 3}}, Usage(10, 4, 6, 3)),
    (RESPONSES, {"input_tokens": 10, "output_tokens": 4,
                 "input_tokens_details": {"cached_tokens": 2},
                 "output_tokens_details": {"reasoning_tokens": 1}}, Usage(10, 4, 2, 1)),
    (CHAT, {"prompt_tokens": "10", "completion_tokens": -1, "prompt_tokens_details": None},
     Usage(0, 0)),  # nonsense counts as nothing, never as an error
    (CHAT, None, None),
    (RESPONSES, [1, 2], None),
])
def test_usage_is_read_in_each_protocols_shape(protocol, usage, expected):
    assert spec(protocol).usage(usage, None) == expected


def test_an_answers_usage_carries_the_model_it_names():
    answer = {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 1,
                                                          "completion_tokens": 2}}
    assert spec(CHAT).answer_usage(answer) == Usage(1, 2, model="gpt-4o-mini-2024-07-18")
    assert spec(CHAT).answer_usage({"choices": []}) is None


@pytest.mark.parametrize("usage, text", [
    (Usage(5, 3), "5 in, 3 out"),
    (Usage(5, 3, 2, 1), "5 in, 3 out (2 cached, 1 reasoning)"),
    (Usage(5, 3, estimated=True), "~5 in, 3 out"),
])
def test_usage_in_words(usage, text):
    assert usage.text() == text


# -------------------------------------------------------------- estimates


@pytest.mark.parametrize("text, tokens", [
    ("", 0), ("abc", 1), ("abcd", 2), ("hello world, how are you?", 9),
    ("你好世界", 4),  # one token per CJK character
    ("héllo", 2),
])
def test_text_is_estimated_generously(text, tokens):
    assert text_tokens(text) == tokens


def test_inline_media_counts_as_media_not_as_its_base64():
    image = "data:image/png;base64," + "A" * 300_000
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image}}]}]}
    assert input_tokens(body) < 2_000


@pytest.mark.parametrize("body, tokens", [
    ({"max_output_tokens": 50}, 50), ({"max_completion_tokens": 60, "max_tokens": 9}, 60),
    ({"max_tokens": 9}, 9), ({}, 4096), ({"max_tokens": True}, 4096),
    ({"max_tokens": 0}, 4096), ({"max_tokens": "9"}, 4096),
    ({"max_tokens": 10**19}, 10_000_000),  # no model writes that much
    ({"max_tokens": 9, "n": 3}, 27), ({"n": 2}, 8192), ({"max_tokens": 9, "n": True}, 9),
])
def test_output_is_the_most_the_request_allows(body, tokens):
    assert output_tokens(body, 4096) == tokens


def test_the_worst_case_covers_what_the_fake_provider_reports():
    estimate = worst_case({"model": "m", "input": "hi", "max_output_tokens": 3}, 4096)
    assert estimate.estimated and estimate.output == 3 and estimate.input >= 1


# ----------------------------------------------------------------- prices


def test_a_configured_price_wins_and_prices_cached_input_at_its_rate():
    pricing = Pricing({"m": Price(input=1.0, output=2.0, cached_input=0.5)})
    cost = pricing.cost("http://127.0.0.1:1/v1", "m", Usage(1_000_000, 1_000_000, 400_000))
    assert math.isclose(cost, 0.6 * 1.0 + 0.4 * 0.5 + 2.0)
    assert Pricing({"free": Price(0, 0)}).cost("", "free", Usage(10, 10)) == 0.0


def test_genai_prices_data_prices_known_models_by_host_or_by_name():
    usage = Usage(1_000_000, 1_000_000, 200_000, 50_000)
    at_openai = Pricing().cost("https://api.openai.com/v1", "gpt-4o-mini", usage)
    # gpt-4o-mini: $0.15 in, $0.075 cached in, $0.60 out per million (bundled data)
    assert math.isclose(at_openai, 0.8 * 0.15 + 0.2 * 0.075 + 0.60)
    assert Pricing().cost("http://127.0.0.1:9/v1", "gpt-4o-mini", usage) == at_openai


def test_an_unknown_model_is_unpriced_never_guessed():
    assert Pricing().cost("http://127.0.0.1:9/v1", "my-local-model-xyz", Usage(5, 3)) is None


# -------------------------------------------------------------- principal


@pytest.mark.parametrize("user, key, principal", [
    ("team-a", "sk-1", "team-a"), (None, "sk-1", fingerprint("sk-1")), ("", None, ANONYMOUS),
    (None, None, ANONYMOUS),
])
def test_who_pays(user, key, principal):
    assert principal_of(user, key) == principal


@pytest.mark.parametrize("bill, text", [
    (Bill("p", True, Usage(5, 3), 0.000435), "5 in, 3 out tokens, $0.000435"),
    (Bill("p", True, Usage(5, 3), None), "5 in, 3 out tokens, unpriced"),
    (Bill("p", True, Usage(5, 3), 8.0), "5 in, 3 out tokens, $8"),
    (Bill("p", False, None, None), ""),
])
def test_a_bill_in_words(bill, text):
    assert bill.text() == text


# --------------------------------------------------------------- the charge

PROVIDER = Provider("p", "http://127.0.0.1:1/v1")
BUDGET = Budget("*", Unit.TOKENS, 10_000, Period("day"))


def llm_call(**body) -> LlmCall:
    body = {"model": "m", "input": "hi", "max_output_tokens": 10, **body}
    return LlmCall(PROVIDER, RESPONSES, PROVIDER.base_url + "/responses", "m", False, body,
                   b"", (), None)


def served(delivery, usage: Usage | None = Usage(5, 3)) -> Result:
    candidate = Candidate(PROVIDER, "m", None, "", RESPONSES, PROVIDER.base_url + "/responses",
                          PROVIDER.base_url + "/chat/completions")
    return Result(delivery, Trail(), candidate, usage=usage)


def accounts(limit: float = 10_000) -> Accounts:
    budget = Budget("*", Unit.TOKENS, limit, Period("day"))
    return Accounts(MemoryLedger(), Pricing({"m": Price(1.0, 1.0)}), {"*": (budget,)})


async def figures(accounts: Accounts) -> tuple[Amount, Amount]:
    (account,) = await accounts.ledger.accounts([("team", accounts.budgets["*"])])
    return account.spent, account.reserved


def stream(closed: list[bool]) -> Committed:
    async def rest():
        yield b"data: more\n\n"
    return Committed(200, [], b"data: first\n\n", rest(), lambda: closed.append(True))


def test_a_served_answer_settles_its_real_cost():
    async def go() -> None:
        books, bills = accounts(), []
        async with books.charge(llm_call(), "team", bills.append) as charge:
            assert (await figures(books))[1].tokens > 0  # held while the call runs
            charge.result = served(Answer(200, [], b"{}"))
        assert await figures(books) == (Amount(8e-6, 8), Amount())
        assert bills == [Bill("team", True, Usage(5, 3), 8e-6)]
    asyncio.run(go())


@pytest.mark.parametrize("ending", ["exception", "cancelled", "client gone", "exhausted",
                                    "passed through"])
def test_nothing_served_is_refunded_whatever_the_path(ending):
    async def go() -> None:
        books, bills = accounts(), []

        async def the_call() -> None:
            async with books.charge(llm_call(), "team", bills.append) as charge:
                if ending == "exception":
                    raise RuntimeError("a bug of ours")
                if ending == "cancelled":
                    await asyncio.sleep(60)
                if ending in ("exhausted", "passed through"):
                    outcome = CallOutcome.EXHAUSTED if ending == "exhausted" \
                        else CallOutcome.PASSED_THROUGH
                    charge.result = Result(Answer(429, [], b"{}"), Trail(), outcome=outcome)
                # "client gone": the dispatcher gave no result

        task = asyncio.ensure_future(the_call())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await figures(books) == (Amount(), Amount())
        assert [bill.served for bill in bills] == [False]
        assert not books.open
    asyncio.run(go())


def test_a_stream_keeps_its_charge_open_until_it_closes():
    async def go() -> None:
        books, bills, closed = accounts(), [], []
        committed = stream(closed)
        async with books.charge(llm_call(), "team", bills.append) as charge:
            charge.result = served(committed, usage=None)
        assert bills == [] and (await figures(books))[1].tokens > 0  # still streaming
        await committed.aclose()  # the relay's close, or its discard of an uncollected one
        await committed.aclose()
        assert closed == [True, True] and len(bills) == 1
        spent, reserved = await figures(books)
        assert reserved == Amount() and spent.tokens == bills[0].usage.total
        assert bills[0].usage.estimated  # no usage came: an estimate, not the whole hold
    asyncio.run(go())


def test_a_stream_that_never_reached_the_relay_is_closed_with_its_charge():
    async def go() -> None:
        books, bills, closed = accounts(), [], []
        with pytest.raises(RuntimeError):
            async with books.charge(llm_call(), "team", bills.append) as charge:
                charge.result = served(stream(closed))
                raise RuntimeError("parking failed")
        assert closed == [True] and len(bills) == 1
        assert (await figures(books))[1] == Amount()
    asyncio.run(go())


def test_shutdown_settles_calls_still_open():
    async def go() -> None:
        books, bills = accounts(), []
        async with books.charge(llm_call(), "team", bills.append) as charge:
            charge.result = served(stream([]))
        await books.close()
        assert len(bills) == 1 and (await figures(books))[1] == Amount()
    asyncio.run(go())


def test_over_budget_is_refused_before_anything_is_held():
    async def go() -> None:
        books = accounts(limit=5)
        with pytest.raises(BudgetExceeded) as refused:
            async with books.charge(llm_call(), "team"):
                pytest.fail("a refused call must not run")
        assert refused.value.refusal.principal == "team"
        assert not books.open and (await figures(books))[1] == Amount()
    asyncio.run(go())


def test_a_principal_without_budgets_holds_nothing_and_is_still_billed():
    async def go() -> None:
        books, bills = Accounts(MemoryLedger()), []
        async with books.charge(llm_call(), "team", bills.append) as charge:
            charge.result = served(Answer(200, [], b"{}"))
        assert await books.ledger.accounts() == []
        assert bills == [Bill("team", True, Usage(5, 3), None)]  # "m" has no price
    asyncio.run(go())


# ----------------------------------------------------------------- config


def test_pricing_and_budgets_are_read():
    config = parse_config("""
pricing:
  my-local-model: {input: 0.0, output: 0.0}
  gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}
budgets:
  team-a: {usd: 5.00, period: day}
  "#3fa9c2": {tokens: 2000000, period: month}
  "*": [{usd: 50, period: month}, {tokens: 100000, period: 12h}]
budget_output_tokens: 1000
""", "s.yaml", {})
    assert config.pricing["gpt-4o-mini"] == Price(0.15, 0.60, 0.075)
    assert config.budgets["team-a"] == (Budget("team-a", Unit.USD, 5.0, Period("day")),)
    assert config.budgets["#3fa9c2"][0].unit is Unit.TOKENS
    assert [b.label for b in config.budgets["*"]] == ["month usd", "12h tokens"]
    assert config.budget_output_tokens == 1000


@pytest.mark.parametrize("text, key, fix", [
    ("pricing: {m: {input: 1}}", "pricing.m", "give both"),
    ("pricing: {m: {input: -1, output: 1}}", "pricing.m.input", "USD per million"),
    ("pricing: {m: {input: 1, output: 1, reasoning: 2}}", "pricing.m.reasoning", "use one of"),
    ("budgets: {a: {usd: 5}}", "budgets.a.period", "hour, day, week, month"),
    ("budgets: {a: {usd: 5, tokens: 9, period: day}}", "budgets.a", "{usd: 5.00, period: day}"),
    ("budgets: {a: {tokens: 1.5, period: day}}", "budgets.a.tokens", "whole tokens"),
    ("budgets: {a: {usd: 5, period: fortnight}}", "budgets.a.period", "duration"),
    ("budgets: {a: [{usd: 5, period: day}, {usd: 6, period: day}]}", "budgets.a",
     "one budget per unit and period"),
    ('budgets: {"#sk-live-123": {usd: 5, period: day}}', "budgets.#sk-live-123",
     "never the key itself"),
    ("budget_output_tokens: 0", "budget_output_tokens", "4096"),
    ("budgets: {a: {tokens: .inf, period: day}}", "budgets.a.tokens", "whole tokens"),
    ("budgets: {a: {usd: .nan, period: day}}", "budgets.a.usd", "USD"),
    ("pricing: {m: {input: .nan, output: 1}}", "pricing.m.input", "USD per million"),
])
def test_a_bad_pricing_or_budget_names_the_key_and_the_fix(text, key, fix):
    with pytest.raises(ConfigError) as error:
        parse_config(text, "s.yaml", {})
    assert any(p.key == key and fix in p.fix and p.source == "s.yaml"
               for p in error.value.problems), str(error.value)


def test_an_empty_list_exempts_a_principal_from_the_default_budget():
    config = parse_config('budgets: {admin: [], "*": {usd: 5, period: day}}', "s.yaml", {})
    assert config.budgets["admin"] == ()


@pytest.mark.parametrize("body, usage", [
    (b'{"choices": [{"message": {"content": "say \\"usage\\": {\\"x\\": 1}"}}], '
     b'"usage": {"prompt_tokens": 7, "completion_tokens": 2}}', Usage(7, 2)),
    (b'{"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 7, '
     b'"completion_tokens": 2}}', Usage(7, 2, model="gpt-4o-mini-2024-07-18")),
    (b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1, '
     b'"prompt_tokens_details": {"cached_tokens": 1}}}', Usage(1, 1, 1)),
    (b'{"choices": []}', None), (b'{"usage": {"prompt_tokens": 1', None), (b"<html>", None),
])
def test_a_whole_answers_usage_is_read_without_parsing_the_rest(body, usage):
    assert spec(CHAT).body_usage(body) == usage


def test_flat_prices_agree_with_genai_prices_own_arithmetic():
    """Prices that are plain rates are applied here (a microsecond a call);
    every such model in the bundled data costs the same as genai-prices says."""
    from datetime import datetime, timezone

    from genai_prices import data_snapshot
    from genai_prices.types import Usage as PricesUsage

    from switchback.accounting.pricing import _flat

    now, usage, checked = datetime.now(timezone.utc), Usage(123_456, 7_890, 23_456), 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = model.get_prices(now)
            flat = _flat(prices)
            if flat is None:
                continue
            theirs = float(prices.calc_price(PricesUsage(
                input_tokens=usage.input, cache_read_tokens=usage.cached,
                output_tokens=usage.output))["total_price"])
            assert math.isclose(flat.cost(usage), theirs, rel_tol=1e-9, abs_tol=1e-12), model.id
            checked += 1
    assert checked > 100
