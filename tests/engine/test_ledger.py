"""Ledgers: holds, settles, expiry and windows, the same for MemoryLedger and
RedisLedger (against a real redis-server on loopback); then what only Redis
has: replicas sharing budgets, and the fallback while Redis is away.

Time is a fake clock that the tests move: no sleeping, no timing."""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from support.redisserver import RedisServer
from support.engine import Clock
from switchback.accounting.budgets import Account, Amount, Budget, Period, Refusal, Unit
from switchback.state.ledger import KEEP, Hold, Ledger, MemoryLedger, RedisLedger
from switchback.state.link import Link

T0 = datetime(2026, 11, 30, 10, tzinfo=UTC).timestamp()  # a Monday, 10:00 UTC
DAY_START = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
DAY_USD = Budget("team-a", Unit.USD, 1.0, Period("day"))
HOUR_TOKENS = Budget("team-a", Unit.TOKENS, 1000, Period("hour"))
BOTH = (DAY_USD, HOUR_TOKENS)




Make = Callable[[Clock], Ledger]
Scenario = Callable[[Ledger, Clock], Awaitable[None]]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Make:
    """A fresh ledger of the kind under test (Redis: its own key prefix)."""
    if request.param == "memory":
        return MemoryLedger
    url, prefix = request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex}"
    return lambda clock: linked(url, prefix, clock)


class Linked(RedisLedger):
    """A RedisLedger on a link of its own, as each replica has one."""

    async def close(self) -> None:
        await super().close()
        await self.link.stop()


async def linked(url: str, prefix: str, clock: Clock) -> Linked:
    link = Link(url, prefix, clock)
    await link.start()
    return Linked(link, clock)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for the link to see what happened to Redis."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the link never saw it")


def play(make: Make, scenario: Scenario) -> None:
    async def go() -> None:
        clock = Clock(T0)
        ledger = make(clock)
        if inspect.isawaitable(ledger):
            ledger = await ledger
        try:
            await scenario(ledger, clock)
        finally:
            await ledger.close()
    asyncio.run(go())


async def account(ledger: Ledger, principal: str, budget: Budget) -> Account:
    """The principal's account under `budget` in the current window."""
    found = [a for a in await ledger.accounts([(principal, (budget,))])
             if a.principal == principal and a.budget.label == budget.label]
    assert len(found) == 1
    return found[0]


async def held(ledger: Ledger, estimate: Amount, budgets: tuple[Budget, ...] = BOTH,
               ttl: float = 60, principal: str = "team-a") -> Hold:
    hold = await ledger.reserve(principal, budgets, estimate, ttl)
    assert isinstance(hold, Hold), hold
    return hold


def test_a_call_within_the_limits_is_held_in_every_account(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(0.4, 300))
        assert hold.principal == "team-a" and hold.amount == Amount(0.4, 300)
        assert hold.accounts == ((DAY_USD, DAY_START), (HOUR_TOKENS, T0))
        assert hold.expires == T0 + 60 and not hold.local
        for budget in BOTH:
            figures = await account(ledger, "team-a", budget)
            assert figures.reserved == Amount(0.4, 300)
            assert figures.spent == Amount() and figures.calls == figures.refused == 0
        assert (await held(ledger, Amount(0.6, 700))).id != hold.id  # exactly to both limits
        assert (await account(ledger, "team-a", HOUR_TOKENS)).reserved == Amount(1.0, 1000)
    play(make, scenario)


def test_float_sums_of_prices_fit_exactly(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        for _ in range(10):  # 0.1 ten times is 0.9999999999999999
            await held(ledger, Amount(0.1), (DAY_USD,))
        assert isinstance(await ledger.reserve("team-a", (DAY_USD,), Amount(0.001), 60),
                          Refusal)
    play(make, scenario)


def test_a_call_that_would_overrun_is_refused_and_holds_nothing(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        first = await held(ledger, Amount(0.6), (DAY_USD,))
        await ledger.settle(first, Amount(0.6), served=True, unpriced=False)
        await held(ledger, Amount(0.3), (DAY_USD,))
        refusal = await ledger.reserve("team-a", (DAY_USD,), Amount(0.2), 60)
        assert isinstance(refusal, Refusal)
        assert (refusal.principal, refusal.budget, refusal.window_start) == (
            "team-a", DAY_USD, DAY_START)
        assert (refusal.spent, refusal.reserved, refusal.estimate) == pytest.approx(
            (0.6, 0.3, 0.2))
        assert "team-a" in refusal.message()
        figures = await account(ledger, "team-a", DAY_USD)
        assert figures.refused == 1 and figures.calls == 1
        assert figures.reserved.usd == pytest.approx(0.3)
        assert figures.spent.usd == pytest.approx(0.6)
        await held(ledger, Amount(0.1), (DAY_USD,))  # what still fits is let through
    play(make, scenario)


def test_one_refusing_budget_holds_none_and_only_it_counts_the_refusal(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        refusal = await ledger.reserve("team-a", BOTH, Amount(0.1, 2000), 60)
        assert isinstance(refusal, Refusal) and refusal.budget == HOUR_TOKENS
        assert (refusal.spent, refusal.reserved, refusal.estimate) == (0, 0, 2000)
        day, hour = [await account(ledger, "team-a", budget) for budget in BOTH]
        assert day.reserved == hour.reserved == Amount()
        assert (day.refused, hour.refused) == (0, 1)
        # both would refuse: the first one counts it, alone
        refusal = await ledger.reserve("team-a", BOTH, Amount(5.0, 5000), 60)
        assert isinstance(refusal, Refusal) and refusal.budget == DAY_USD
        day, hour = [await account(ledger, "team-a", budget) for budget in BOTH]
        assert (day.refused, hour.refused) == (1, 1)
        assert day.reserved == hour.reserved == Amount()
        await held(ledger, Amount(1.0, 1000))  # nothing was left held
    play(make, scenario)


def test_settle_books_the_spend_and_releases_the_hold(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(0.5, 500))
        await ledger.settle(hold, Amount(0.2, 300), served=True, unpriced=False)
        for budget in BOTH:
            figures = await account(ledger, "team-a", budget)
            assert figures.spent == Amount(0.2, 300) and figures.reserved == Amount()
            assert (figures.calls, figures.unpriced_calls, figures.refused) == (1, 0, 0)
        unpriced = await held(ledger, Amount(0.5, 500))
        await ledger.settle(unpriced, Amount(0, 100), served=True, unpriced=True)
        unserved = await held(ledger, Amount(0.1, 100))
        await ledger.settle(unserved, Amount(), served=False, unpriced=True)
        figures = await account(ledger, "team-a", HOUR_TOKENS)
        assert figures.spent.tokens == 400 and figures.reserved == Amount()
        assert (figures.calls, figures.unpriced_calls) == (2, 1)
        await held(ledger, Amount(0.8, 600))  # exactly what is left
    play(make, scenario)


def test_settling_twice_books_once(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(0.5, 500))
        other = await held(ledger, Amount(0.1, 100))
        for _ in range(2):
            await ledger.settle(hold, Amount(0.3, 200), served=True, unpriced=True)
        for budget in BOTH:
            figures = await account(ledger, "team-a", budget)
            assert figures.spent == Amount(0.3, 200)
            assert figures.reserved.tokens == other.amount.tokens  # the other hold is still there
            assert figures.reserved.usd == pytest.approx(other.amount.usd)
            assert (figures.calls, figures.unpriced_calls) == (1, 1)
    play(make, scenario)


def test_a_refund_leaves_nothing_spent_or_reserved(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(1.0, 1000))
        await ledger.settle(hold, Amount(), served=False, unpriced=False)
        for budget in BOTH:
            figures = await account(ledger, "team-a", budget)
            assert figures.spent == figures.reserved == Amount() and figures.calls == 0
        await held(ledger, Amount(1.0, 1000))
    play(make, scenario)


def test_an_expired_hold_stops_counting(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        await held(ledger, Amount(1.0, 1000), ttl=60)
        clock.advance(59)
        assert isinstance(await ledger.reserve("team-a", BOTH, Amount(0, 1), 60), Refusal)
        clock.advance(1)  # at its expiry
        for budget in BOTH:
            assert (await account(ledger, "team-a", budget)).reserved == Amount()
        await held(ledger, Amount(1.0, 1000))
    play(make, scenario)


def test_renew_keeps_a_hold_alive_and_does_not_resurrect_one(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(1.0, 1000), ttl=60)
        clock.advance(50)
        renewed = await ledger.renew(hold, 60)
        assert renewed.expires == T0 + 110 and renewed.id == hold.id
        clock.advance(50)  # past the first expiry, before the renewed one
        assert (await account(ledger, "team-a", DAY_USD)).reserved == Amount(1.0, 1000)
        assert isinstance(await ledger.reserve("team-a", BOTH, Amount(0, 1), 60), Refusal)
        clock.advance(10)
        assert (await account(ledger, "team-a", DAY_USD)).reserved == Amount()
        again = await ledger.renew(renewed, 60)
        assert again.expires == renewed.expires
        assert (await account(ledger, "team-a", DAY_USD)).reserved == Amount()
        settled = await held(ledger, Amount(0.1, 100))
        await ledger.settle(settled, Amount(0.1, 100), served=True, unpriced=False)
        assert (await ledger.renew(settled, 60)).expires == settled.expires
        assert (await account(ledger, "team-a", DAY_USD)).reserved == Amount()
    play(make, scenario)


def test_a_hold_expired_but_not_yet_purged_is_not_renewed(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(1.0, 1000), ttl=60)
        clock.advance(61)
        assert (await ledger.renew(hold, 60)).expires == hold.expires
        assert (await account(ledger, "team-a", DAY_USD)).reserved == Amount()
    play(make, scenario)


def test_a_settle_after_expiry_books_the_spend_and_releases_nothing_twice(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        late = await held(ledger, Amount(0.5, 500), ttl=60)
        clock.advance(61)
        await held(ledger, Amount(0.3, 300), ttl=60)  # purges the late one on the way
        await ledger.settle(late, Amount(0.4, 400), served=True, unpriced=False)
        for budget in BOTH:
            figures = await account(ledger, "team-a", budget)
            assert figures.spent == Amount(0.4, 400) and figures.calls == 1
            assert figures.reserved == Amount(0.3, 300)
        clock.advance(61)
        for budget in BOTH:
            assert (await account(ledger, "team-a", budget)).reserved == Amount()
    play(make, scenario)


def test_a_settle_after_expiry_before_any_purge_releases_once(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        late = await held(ledger, Amount(0.5, 500), ttl=60)
        clock.advance(61)
        await ledger.settle(late, Amount(0.4, 400), served=True, unpriced=False)
        await ledger.settle(late, Amount(0.4, 400), served=True, unpriced=False)
        for budget in BOTH:
            figures = await account(ledger, "team-a", budget)
            assert figures.spent == Amount(0.4, 400) and figures.reserved == Amount()
            assert figures.calls == 1
    play(make, scenario)


def test_windows_roll_over(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(0.1, 1000), (HOUR_TOKENS,))
        await ledger.settle(hold, Amount(0.1, 1000), served=True, unpriced=False)
        assert isinstance(await ledger.reserve("team-a", (HOUR_TOKENS,), Amount(0, 1), 60),
                          Refusal)
        clock.advance(3599)
        stream = await held(ledger, Amount(0, 0), (HOUR_TOKENS,))  # free: fits a spent budget
        clock.advance(1)  # 11:00, a new hour
        figures = await account(ledger, "team-a", HOUR_TOKENS)
        assert figures.window_start == T0 + 3600
        assert figures.spent == figures.reserved == Amount() and figures.calls == 0
        # a call that started last hour is booked to last hour
        await ledger.settle(stream, Amount(0, 500), served=True, unpriced=False)
        assert (await account(ledger, "team-a", HOUR_TOKENS)).spent == Amount()
        hold = await held(ledger, Amount(0, 1000), (HOUR_TOKENS,))
        assert hold.accounts == ((HOUR_TOKENS, T0 + 3600),)
    play(make, scenario)


def test_accounts_show_configured_principals_before_their_first_call(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        zed = Budget("*", Unit.USD, 2.0, Period("day"))
        configured = [("zed", (zed,)), ("team-a", BOTH)]
        assert await ledger.accounts() == []
        assert await ledger.accounts(configured) == [
            Account("team-a", DAY_USD, DAY_START), Account("team-a", HOUR_TOKENS, T0),
            Account("zed", zed, DAY_START)]
        hold = await held(ledger, Amount(0.5, 0), (zed,), principal="#3fa9c2")
        await ledger.settle(hold, Amount(0.25), served=True, unpriced=False)
        assert await ledger.accounts() == [
            Account("#3fa9c2", zed, DAY_START, spent=Amount(0.25), calls=1)]
        listed = await ledger.accounts(configured)
        assert [(a.principal, a.budget.label) for a in listed] == [
            ("#3fa9c2", "day usd"), ("team-a", "day usd"), ("team-a", "hour tokens"),
            ("zed", "day usd")]
        # a budget whose limit changed shows its new limit
        raised = Budget("*", Unit.USD, 3.0, Period("day"))
        shown = await ledger.accounts([("#3fa9c2", (raised,))])
        assert shown == [Account("#3fa9c2", raised, DAY_START, spent=Amount(0.25), calls=1)]
    play(make, scenario)


def test_a_principal_without_budgets_is_held_without_touching_anything(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        hold = await held(ledger, Amount(99.0, 10**9), ())
        assert hold.accounts == () and hold.expires == T0 + 60
        assert await ledger.renew(hold, 60) == hold
        await ledger.settle(hold, Amount(99.0, 10**9), served=True, unpriced=False)
        assert await ledger.accounts() == []
    play(make, scenario)


def test_clear_forgets_everything(make: Make) -> None:
    async def scenario(ledger: Ledger, clock: Clock) -> None:
        spent = await held(ledger, Amount(0.5, 500))
        await ledger.settle(spent, Amount(0.5, 500), served=True, unpriced=False)
        still = await held(ledger, Amount(0.5, 500))
        await ledger.clear()
        assert await ledger.accounts() == []
        # A call in flight across the reset still settles (this process books it).
        await ledger.settle(still, Amount(0.5, 500), served=True, unpriced=False)
        await held(ledger, Amount(0.5, 500))
    play(make, scenario)


# What only Redis has


async def redis_replicas(url: str, clock: Clock, count: int = 2) -> list[RedisLedger]:
    prefix = f"test-{uuid.uuid4().hex}"
    return [await linked(url, prefix, clock) for _ in range(count)]


@pytest.mark.parametrize(("budget", "estimate", "admitted"), [
    (Budget("*", Unit.TOKENS, 1000, Period("day")), Amount(0.0, 100), 10),
    (Budget("*", Unit.USD, 0.3, Period("30m", 1800)), Amount(0.1, 0), 3),
])
def test_replicas_admit_exactly_what_the_budget_allows_between_them(
        redis_url: str, budget: Budget, estimate: Amount, admitted: int) -> None:
    async def go() -> None:
        clock = Clock(T0)
        a, b = await redis_replicas(redis_url, clock)
        try:
            answers = await asyncio.gather(*(
                (a if i % 2 else b).reserve("team-a", (budget,), estimate, 60)
                for i in range(50)))
            holds = [answer for answer in answers if isinstance(answer, Hold)]
            assert len(holds) == admitted
            assert all(not hold.local for hold in holds)
            assert len({hold.id for hold in holds}) == admitted
            for ledger in (a, b):
                figures = await account(ledger, "team-a", budget)
                assert budget.of(figures.reserved) == pytest.approx(budget.limit)
                assert figures.refused == 50 - admitted
            # what one replica settles frees room for the other
            await a.settle(holds[0], Amount(), served=False, unpriced=False)
            assert isinstance(await b.reserve("team-a", (budget,), estimate, 60), Hold)
        finally:
            await a.close()
            await b.close()
    asyncio.run(go())


def test_principal_names_with_any_characters_keep_apart(redis_url: str) -> None:
    names = ["team:a b", "team", "team:a", "team a", "{team}", "*", "tëam:ü", "a:b:c d"]

    async def go() -> None:
        clock = Clock(T0)
        ledger, reader = await redis_replicas(redis_url, clock)
        try:
            for n, name in enumerate(names, start=1):
                hold = await held(ledger, Amount(0.0, n), (HOUR_TOKENS,), principal=name)
                await ledger.settle(hold, Amount(0.0, n), served=True, unpriced=False)
            listed = await reader.accounts()
            assert sorted((a.principal, a.spent.tokens, a.calls) for a in listed) == sorted(
                (name, n, 1) for n, name in enumerate(names, start=1))
            assert all(a.budget == HOUR_TOKENS for a in listed)
            hold = await held(ledger, Amount(0.0, 1000 - 1), (HOUR_TOKENS,),
                              principal="team:a b")
            assert isinstance(await reader.reserve("team:a b", (HOUR_TOKENS,), Amount(0, 1), 60),
                              Refusal)
            await held(reader, Amount(0.0, 1000 - names.index("team:a") - 1), (HOUR_TOKENS,),
                       principal="team:a")
        finally:
            await ledger.close()
            await reader.close()
    asyncio.run(go())


def test_every_key_expires_a_day_after_its_window(redis_url: str) -> None:
    async def go() -> None:
        clock = Clock(T0)
        prefix = f"test-{uuid.uuid4().hex}"
        ledger = await linked(redis_url, prefix, clock)
        raw = aioredis.from_url(redis_url, decode_responses=True)
        try:
            await held(ledger, Amount(0.1, 10))
            settled = await held(ledger, Amount(0.1, 10))
            await ledger.settle(settled, Amount(0.1, 10), served=True, unpriced=False)
            await ledger.reserve("team-a", BOTH, Amount(5.0, 10), 60)
            keys = [key async for key in raw.scan_iter(match=f"{prefix}:*")]
            assert len(keys) == 5  # two accounts, their holds, one settled marker
            longest = DAY_START + 86400 + KEEP - T0
            for key in keys:
                assert 0 < await raw.ttl(key) <= longest
        finally:
            await ledger.close()
            await raw.aclose()
    asyncio.run(go())


def test_without_redis_budgets_are_enforced_locally_and_redis_is_tried_again(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    async def go(server: RedisServer) -> None:
        clock = Clock(T0)
        ledger = await linked(server.url, "test", clock)
        try:
            shared = await held(ledger, Amount(0.2, 0), (DAY_USD,))
            assert not shared.local
            server.stop()
            with caplog.at_level(logging.WARNING, logger="switchback.state.ledger"):
                first = await held(ledger, Amount(0.4, 0), (DAY_USD,))
                second = await held(ledger, Amount(0.4, 0), (DAY_USD,))
                refusal = await ledger.reserve("team-a", (DAY_USD,), Amount(0.4, 0), 60)
                await ledger.settle(first, Amount(0.3, 0), served=True, unpriced=False)
                await ledger.settle(shared, Amount(0.2, 0), served=True, unpriced=False)
                local = await account(ledger, "team-a", DAY_USD)
            assert first.local and second.local
            assert isinstance(refusal, Refusal)
            assert (refusal.spent, refusal.reserved) == pytest.approx((0.0, 0.8))
            assert local.spent.usd == pytest.approx(0.3)
            assert local.reserved.usd == pytest.approx(0.4)
            assert (local.calls, local.refused) == (1, 1)
            warnings = [r for r in caplog.records if r.name == "switchback.state.ledger"]
            assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
            assert warnings[0].getMessage().startswith("switchback: ")
            await until(lambda: not ledger.link.healthy)  # the link saw Redis go
            server.start()
            await until(lambda: ledger.link.healthy)  # ... and come back
            back = await held(ledger, Amount(0.7, 0), (DAY_USD,))
            assert not back.local  # Redis again (a fresh one: it kept nothing)
            figures = await account(ledger, "team-a", DAY_USD)
            assert figures.reserved.usd == pytest.approx(0.7) and figures.refused == 0
            await ledger.settle(second, Amount(0.1, 0), served=True, unpriced=False)
            assert (await ledger.fallback.accounts())[0].spent.usd == pytest.approx(0.4)
        finally:
            await ledger.close()

    with RedisServer(tmp_path) as server:
        asyncio.run(go(server))


def test_a_prefix_with_pattern_characters_sees_only_its_own_keys(redis_url: str) -> None:
    base = uuid.uuid4().hex

    async def go() -> None:
        clock = Clock(T0)
        starred, plain = await linked(redis_url, f"{base}*", clock), await linked(
            redis_url, f"{base}x", clock)
        try:
            await held(plain, Amount(0.5, 500))
            assert await starred.accounts() == []
            await starred.clear()
            assert len(await plain.accounts()) == 2
        finally:
            await starred.close()
            await plain.close()
    asyncio.run(go())


def test_a_settle_redis_missed_is_booked_once_it_answers_again(tmp_path) -> None:
    """Money spent while Redis did not answer is not lost: the settle is sent
    again (it is idempotent there) once Redis answers."""
    async def go(server: RedisServer) -> None:
        ledger = await linked(server.url, f"test-{uuid.uuid4().hex}", Clock(T0))
        raw = aioredis.from_url(server.url, decode_responses=True)
        try:
            hold = await held(ledger, Amount(0.5, 0), (DAY_USD,))
            await raw.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # Redis stops answering
            await ledger.settle(hold, Amount(0.25, 0), served=True, unpriced=False)
            await asyncio.sleep(1.6)  # the pause is over
            await held(ledger, Amount(0.1, 0), (DAY_USD,))  # Redis answers: the settle goes again
            for _ in range(100):  # bounded: the resend runs in the background
                figures = await account(ledger, "team-a", DAY_USD)
                if figures.calls:
                    break
                await asyncio.sleep(0.02)
            assert figures.spent.usd == pytest.approx(0.25) and figures.calls == 1
            assert figures.reserved.usd == pytest.approx(0.1)  # the first hold released
            await ledger.settle(hold, Amount(0.25, 0), served=True, unpriced=False)
            assert (await account(ledger, "team-a", DAY_USD)).calls == 1  # booked once
        finally:
            await ledger.close()
            await raw.aclose()

    with RedisServer(tmp_path) as server:
        asyncio.run(go(server))


def test_while_the_shared_state_is_known_away_nothing_waits_on_redis(tmp_path) -> None:
    """With the state link's breaker open, reserves go local at once and a
    settle waits for the link, then reaches Redis."""
    async def go(server: RedisServer) -> None:
        ledger = await linked(server.url, f"test-{uuid.uuid4().hex}", Clock(T0))
        try:
            shared = await held(ledger, Amount(0.5, 0), (DAY_USD,))
            ledger.link.healthy = False  # the breaker as the link opens it
            local = await held(ledger, Amount(0.1, 0), (DAY_USD,))
            assert local.local and not shared.local
            await ledger.settle(shared, Amount(0.25, 0), served=True, unpriced=False)
            ledger.link.healthy = True
            await held(ledger, Amount(0.1, 0), (DAY_USD,))
            for _ in range(100):  # bounded: the resend runs in the background
                figures = await account(ledger, "team-a", DAY_USD)
                if figures.calls:
                    break
                await asyncio.sleep(0.02)
            assert figures.spent.usd == pytest.approx(0.25) and figures.calls == 1
        finally:
            await ledger.close()

    with RedisServer(tmp_path) as server:
        asyncio.run(go(server))
