"""Ledgers: where budgets' figures live, and the holds that keep a call's worst
case reserved while it runs.

Before a call, its worst-case cost is held in every account of its principal
(one per budget, in the budget's current window), or the call is refused and
nothing is held. When the call ends, the hold is settled to what was really
spent. Every hold expires, so one whose settle never came (a crash, a lost
connection) stops counting by itself; a long stream renews its hold.

`MemoryLedger` keeps the figures in this process. `RedisLedger` keeps them in
Redis, where one Lua script checks and holds every account of a call at once,
so replicas never admit more between them than a budget allows. While Redis
does not answer, it enforces on its own memory instead and tries Redis again
on the next call.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ..accounting.budgets import TOLERANCE, Account, Amount, Budget, Period, Refusal, Unit, admits
from .link import OP_TIMEOUT, Link

logger = logging.getLogger(__name__)
KEEP = 86400.0  # accounts outlive their window, and a settled hold's marker its settle, by a day
SWEEP_EVERY = 3600.0  # how often (clock seconds) a MemoryLedger drops accounts of old windows
MAX_UNSETTLED = 100_000  # settles kept to send again once Redis answers
REDIS_ERRORS = (RedisError, OSError)  # TimeoutError is an OSError

Principals = Iterable[tuple[str, tuple[Budget, ...]]]


@dataclass(frozen=True)
class Hold:
    id: str  # random, unique
    principal: str
    accounts: tuple[tuple[Budget, float], ...]  # each budget held, with its window_start
    amount: Amount
    expires: float  # epoch seconds
    local: bool = False  # made by a RedisLedger's fallback while Redis was away: settled there


class Ledger(Protocol):
    async def reserve(self, principal: str, budgets: tuple[Budget, ...], estimate: Amount,
                      ttl: float) -> Hold | Refusal:
        """Hold `estimate` in every account of the principal's budgets, or
        refuse (counted in the first refusing account only) and hold nothing."""

    async def renew(self, hold: Hold, ttl: float) -> Hold:
        """Keep a live hold for `ttl` more seconds; a settled or expired one stays gone."""

    async def settle(self, hold: Hold, spent: Amount, *, served: bool, unpriced: bool) -> None:
        """Release the hold and book what was spent, once per hold."""

    async def accounts(self, principals: Principals | None = None) -> list[Account]:
        """The current windows' accounts with figures, plus zeros for `principals`."""

    async def clear(self) -> None:
        """Forget every figure and hold (the status server's POST /reset/budgets)."""

    async def close(self) -> None:
        """Let go of connections."""


def _new_id() -> str:
    return secrets.token_hex(12)


def _less(amount: Amount, taken: Amount) -> Amount:
    """`amount - taken`, never below zero: float residue must not read as a debt."""
    usd = amount.usd - taken.usd
    return Amount(usd if usd > TOLERANCE else 0.0, max(amount.tokens - taken.tokens, 0))


def _has_figures(account: Account) -> bool:
    return bool(account.spent != Amount() or account.reserved != Amount() or account.calls
                or account.refused or account.unpriced_calls)


def _listing(found: Iterable[Account], principals: Principals | None, now: float
             ) -> list[Account]:
    """Current-window accounts with figures, and a zero account for each
    configured (principal, budget) so it shows before its first call. A
    configured budget replaces the stored one: its limit may have changed."""
    shown: dict[tuple[str, str], Account] = {}
    for account in found:
        if (_has_figures(account)
                and account.window_start == account.budget.period.window(now)[0]):
            shown[(account.principal, account.budget.label)] = account
    for principal, budgets in principals or ():
        for budget in budgets:
            known = shown.get((principal, budget.label))
            shown[(principal, budget.label)] = (
                replace(known, budget=budget) if known is not None
                else Account(principal, budget, budget.period.window(now)[0]))
    return [shown[key] for key in sorted(shown)]


class MemoryLedger:
    """Figures in this process: a single replica's, or a RedisLedger's
    fallback. No awaits inside an operation, so each one is atomic."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._accounts: dict[tuple[str, str, float], Account] = {}
        self._holds: dict[str, Hold] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap; entries left by renew are skipped
        self._settled: dict[str, float] = {}  # hold id -> when to forget it, oldest first
        self._swept = -math.inf

    async def reserve(self, principal: str, budgets: tuple[Budget, ...], estimate: Amount,
                      ttl: float) -> Hold | Refusal:
        now = self.clock()
        if not budgets:
            return Hold(_new_id(), principal, (), estimate, now + ttl)
        self._purge(now)
        found: list[tuple[tuple[str, str, float], Account]] = []
        for budget in budgets:
            start = budget.period.window(now)[0]
            key = (principal, budget.label, start)
            account = replace(self._accounts.get(key) or Account(principal, budget, start),
                              budget=budget)
            spent, reserved = budget.of(account.spent), budget.of(account.reserved)
            if not admits(budget.limit, spent, reserved, budget.of(estimate)):
                self._accounts[key] = replace(account, refused=account.refused + 1)
                return Refusal(principal, budget, start, spent, reserved, budget.of(estimate))
            found.append((key, account))
        for key, account in found:
            self._accounts[key] = replace(account, reserved=account.reserved + estimate)
        hold = Hold(_new_id(), principal, tuple((account.budget, account.window_start)
                                                for _, account in found),
                    estimate, now + ttl)
        self._holds[hold.id] = hold
        heapq.heappush(self._expiries, (hold.expires, hold.id))
        return hold

    async def renew(self, hold: Hold, ttl: float) -> Hold:
        now = self.clock()
        self._purge(now)
        if hold.id not in self._holds:
            return hold
        self._holds[hold.id] = replace(self._holds[hold.id], expires=now + ttl)
        heapq.heappush(self._expiries, (now + ttl, hold.id))
        return replace(hold, expires=now + ttl)

    async def settle(self, hold: Hold, spent: Amount, *, served: bool, unpriced: bool) -> None:
        if not hold.accounts:
            return
        now = self.clock()
        self._purge(now)
        if hold.id in self._settled:
            return
        self._settled[hold.id] = now + KEEP
        live = self._holds.pop(hold.id, None) is not None
        for budget, start in hold.accounts:
            key = (hold.principal, budget.label, start)
            # An account gone meanwhile (its window long over, or the figures
            # reset) still books what was spent.
            account = self._accounts.get(key) or Account(hold.principal, budget, start)
            self._accounts[key] = replace(
                account, spent=account.spent + spent,
                reserved=_less(account.reserved, hold.amount) if live else account.reserved,
                calls=account.calls + int(served),
                unpriced_calls=account.unpriced_calls + int(served and unpriced))

    async def accounts(self, principals: Principals | None = None) -> list[Account]:
        now = self.clock()
        self._purge(now)
        return _listing(self._accounts.values(), principals, now)

    async def clear(self) -> None:
        self._accounts.clear()
        self._holds.clear()
        self._expiries.clear()
        self._settled.clear()

    async def close(self) -> None:
        """Nothing to let go of."""

    def _purge(self, now: float) -> None:
        """Release expired holds; forget old settle markers and, now and then,
        accounts of windows that ended over a day ago."""
        while self._expiries and self._expiries[0][0] <= now:
            expires, hold_id = heapq.heappop(self._expiries)
            hold = self._holds.get(hold_id)
            if hold is not None and hold.expires == expires:
                del self._holds[hold_id]
                for budget, start in hold.accounts:
                    key = (hold.principal, budget.label, start)
                    if key in self._accounts:
                        account = self._accounts[key]
                        self._accounts[key] = replace(
                            account, reserved=_less(account.reserved, hold.amount))
        while self._settled:
            hold_id, forget = next(iter(self._settled.items()))
            if forget > now:
                break
            del self._settled[hold_id]
        if now >= self._swept + SWEEP_EVERY:
            self._swept = now
            self._accounts = {
                key: account for key, account in self._accounts.items()
                if account.budget.period.window(account.window_start)[1] + KEEP > now}


# Lua for the scripts below. Numbers reach Redis as strings: redis.call
# truncates a Lua number to an integer. An account's hash holds its figures,
# what it is (so /status can show it), and each live hold's amount under
# "hold:<id>"; its sorted set scores each live hold id by its expiry.
PURGE = """
local function release(account, field)
  local amount = redis.call('HGET', account, field)
  if not amount then return end
  redis.call('HDEL', account, field)
  local usd, tokens = string.match(amount, '^(%S+) (%S+)$')
  local left = tonumber(redis.call('HGET', account, 'reserved_usd') or '0') - tonumber(usd)
  if left < 1e-9 then left = 0 end
  local left_tokens = tonumber(redis.call('HGET', account, 'reserved_tokens') or '0')
    - tonumber(tokens)
  if left_tokens < 0 then left_tokens = 0 end
  redis.call('HSET', account, 'reserved_usd', string.format('%.17g', left),
             'reserved_tokens', string.format('%d', left_tokens))
end

local function purge(account, holds, now)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  for _, id in ipairs(expired) do release(account, 'hold:' .. id) end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', holds, '-inf', now) end
end
"""

# KEYS: account, holds for each budget. ARGV: now, expires, hold id, usd, tokens,
# then for each budget: unit, limit, seconds to keep the keys, principal,
# owner, period name, period seconds ('' for a calendar period), window start.
RESERVE = PURGE + """
local now, expires, id, usd, tokens = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count = #KEYS / 2
local function describe(i)
  local account, holds, at = KEYS[2 * i - 1], KEYS[2 * i], 5 + (i - 1) * 8
  redis.call('HSET', account, 'unit', ARGV[at + 1], 'limit', ARGV[at + 2],
             'principal', ARGV[at + 4], 'owner', ARGV[at + 5], 'period', ARGV[at + 6],
             'seconds', ARGV[at + 7], 'window_start', ARGV[at + 8])
  redis.call('EXPIRE', account, ARGV[at + 3])
  redis.call('EXPIRE', holds, ARGV[at + 3])
end
for i = 1, count do purge(KEYS[2 * i - 1], KEYS[2 * i], now) end
for i = 1, count do
  local account, at = KEYS[2 * i - 1], 5 + (i - 1) * 8
  local unit, limit = ARGV[at + 1], tonumber(ARGV[at + 2])
  local estimate = tonumber(unit == 'usd' and usd or tokens)
  local spent = tonumber(redis.call('HGET', account, 'spent_' .. unit) or '0')
  local reserved = tonumber(redis.call('HGET', account, 'reserved_' .. unit) or '0')
  if spent + reserved + estimate > limit + 1e-9 then
    redis.call('HINCRBY', account, 'refused', 1)
    describe(i)
    return {'refused', tostring(i), string.format('%.17g', spent),
            string.format('%.17g', reserved)}
  end
end
for i = 1, count do
  local account, holds = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBYFLOAT', account, 'reserved_usd', usd)
  redis.call('HINCRBY', account, 'reserved_tokens', tokens)
  redis.call('HSET', account, 'hold:' .. id, usd .. ' ' .. tokens)
  redis.call('ZADD', holds, expires, id)
  describe(i)
end
return {'held'}
"""

# KEYS: the hold's settled marker, then account, holds for each budget.
# ARGV: hold id, usd, tokens, calls (0/1), unpriced (0/1), seconds to keep the marker.
# An account gone by now belongs to a window that ended over a day ago.
SETTLE = PURGE + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[6]) then return 0 end
for i = 1, (#KEYS - 1) / 2 do
  local account, holds = KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('EXISTS', account) == 1 then
    if redis.call('ZREM', holds, ARGV[1]) == 1 then release(account, 'hold:' .. ARGV[1]) end
    redis.call('HINCRBYFLOAT', account, 'spent_usd', ARGV[2])
    redis.call('HINCRBY', account, 'spent_tokens', ARGV[3])
    redis.call('HINCRBY', account, 'calls', ARGV[4])
    redis.call('HINCRBY', account, 'unpriced', ARGV[5])
  end
end
return 1
"""

# KEYS: holds for each budget. ARGV: hold id, now, new expiry.
RENEW = """
local renewed = 0
for i = 1, #KEYS do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if score and tonumber(score) > tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[i], 'XX', ARGV[3], ARGV[1])
    renewed = renewed + 1
  end
end
return renewed
"""

FIELDS = ("principal", "owner", "unit", "limit", "period", "seconds", "window_start",
          "spent_usd", "spent_tokens", "reserved_usd", "reserved_tokens", "calls", "refused",
          "unpriced")

# KEYS: account, holds. ARGV: now.
READ = PURGE + f"""
purge(KEYS[1], KEYS[2], ARGV[1])
return redis.call('HMGET', KEYS[1], {", ".join(f"'{field}'" for field in FIELDS)})
"""
SCRIPTS = {"reserve": RESERVE, "settle": SETTLE, "renew": RENEW, "read": READ}


def _number(value: float) -> str:
    """A float as text that Redis and Lua read back to the same double."""
    return repr(float(value))


def _glob(text: str) -> str:
    """`text` matched literally in a SCAN pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _account(row: list[str | None]) -> Account | None:
    """An account from the READ script's answer; None for one that expired
    since the scan found it."""
    figures = dict(zip(FIELDS, row, strict=True))
    if None in (figures["principal"], figures["owner"], figures["unit"], figures["limit"],
                figures["period"], figures["window_start"]):
        return None

    def number(field: str) -> float:
        return float(figures[field] or 0)

    period = Period(figures["period"], float(figures["seconds"]) if figures["seconds"] else None)
    budget = Budget(figures["owner"], Unit(figures["unit"]), number("limit"), period)
    return Account(figures["principal"], budget, number("window_start"),
                   Amount(number("spent_usd"), int(number("spent_tokens"))),
                   Amount(number("reserved_usd"), int(number("reserved_tokens"))),
                   int(number("calls")), int(number("refused")), int(number("unpriced")))


class RedisLedger:
    """Figures in Redis, shared by every replica using the same prefix."""

    def __init__(self, link: Link, clock: Callable[[], float] = time.time,
                 fallback: MemoryLedger | None = None) -> None:
        # The shared state's one connection and its breaker: while it is open,
        # no call waits on a Redis that is known to be away; the local
        # fallback serves at once.
        self.link, self.clock = link, clock
        self.fallback = fallback if fallback is not None else MemoryLedger(clock)
        self._root = f"{link.prefix}:budget:"
        self._scripts: tuple[aioredis.Redis, dict[str, AsyncScript]] | None = None
        self._warned = False
        # Settles Redis did not take, by hold id, to send again once it answers:
        # a settle is idempotent there, and money spent must be booked.
        self._unsettled: dict[str, tuple[Hold, Amount, bool, bool]] = {}
        self._resending: asyncio.Task | None = None

    @property
    def _client(self) -> aioredis.Redis:
        """The link's client while the link is up; ConnectionError otherwise."""
        client = self.link.client
        if client is None:
            raise ConnectionError("the shared state is away")
        return client

    def _script(self, name: str) -> AsyncScript:
        """One of the Lua scripts, registered with the link's current client
        (a rejoin replaces the client)."""
        client = self._client
        if self._scripts is None or self._scripts[0] is not client:
            self._scripts = (client, {key: client.register_script(source)
                                      for key, source in SCRIPTS.items()})
        return self._scripts[1][name]

    def _tag(self, principal: str) -> str:
        """The principal, hex-encoded (names may hold any character) and in a
        hash tag, so that a call's keys sit in one Redis Cluster slot."""
        return f"{{{principal.encode().hex()}}}"

    def _keys(self, principal: str, budget: Budget, start: float) -> list[str]:
        """An account's hash and its holds' sorted set."""
        name = f"{self._tag(principal)}:{budget.period.name}:{budget.unit.value}:{start!r}"
        return [f"{self._root}a:{name}", f"{self._root}h:{name}"]

    def _lost(self, exc: BaseException) -> None:
        """Warn once per outage; the next call tries Redis again anyway."""
        if not self._warned:
            self._warned = True
            logger.warning(f"switchback: budgets: Redis did not answer ({exc!r}); "
                           "enforcing on this replica's memory until it does")

    async def reserve(self, principal: str, budgets: tuple[Budget, ...], estimate: Amount,
                      ttl: float) -> Hold | Refusal:
        now = self.clock()
        if not budgets:
            return Hold(_new_id(), principal, (), estimate, now + ttl)
        windows = [(budget, *budget.period.window(now)) for budget in budgets]
        hold = Hold(_new_id(), principal, tuple((budget, start) for budget, start, _ in windows),
                    estimate, now + ttl)
        keys: list[str] = []
        args = [_number(now), _number(hold.expires), hold.id, _number(estimate.usd),
                str(int(estimate.tokens))]
        for budget, start, end in windows:
            keys += self._keys(principal, budget, start)
            seconds = budget.period.seconds
            args += [budget.unit.value, _number(budget.limit), str(math.ceil(end + KEEP - now)),
                     principal, budget.owner, budget.period.name,
                     "" if seconds is None else _number(seconds), _number(start)]
        try:
            self._check()
            answer = await self._script("reserve")(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            self._lost(exc)
            made = await self.fallback.reserve(principal, budgets, estimate, ttl)
            return replace(made, local=True) if isinstance(made, Hold) else made
        self._answered()
        if answer[0] == "held":
            return hold
        budget, start = hold.accounts[int(answer[1]) - 1]
        return Refusal(principal, budget, start, float(answer[2]), float(answer[3]),
                       budget.of(estimate))

    async def renew(self, hold: Hold, ttl: float) -> Hold:
        if hold.local:
            return await self.fallback.renew(hold, ttl)
        if not hold.accounts:
            return hold
        now = self.clock()
        keys = [self._keys(hold.principal, budget, start)[1] for budget, start in hold.accounts]
        try:
            self._check()
            renewed = await self._script("renew")(keys=keys, args=[hold.id, _number(now),
                                                         _number(now + ttl)])
        except REDIS_ERRORS as exc:
            self._lost(exc)
            return hold
        self._answered()
        return replace(hold, expires=now + ttl) if renewed else hold

    async def settle(self, hold: Hold, spent: Amount, *, served: bool, unpriced: bool) -> None:
        if hold.local:
            await self.fallback.settle(hold, spent, served=served, unpriced=unpriced)
            return
        if not hold.accounts:
            return
        keys = [f"{self._root}s:{self._tag(hold.principal)}:{hold.id}"]
        for budget, start in hold.accounts:
            keys += self._keys(hold.principal, budget, start)
        args = [hold.id, _number(spent.usd), str(int(spent.tokens)), str(int(served)),
                str(int(served and unpriced)), str(int(KEEP))]
        try:
            self._check()
            await self._script("settle")(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            self._lost(exc)  # the hold lapses at its expiry; the spend is booked later
            if len(self._unsettled) < MAX_UNSETTLED:
                self._unsettled[hold.id] = (hold, spent, served, unpriced)
            return
        self._unsettled.pop(hold.id, None)
        self._answered()

    def _check(self) -> None:
        if not self.link.healthy:
            raise ConnectionError("the shared state is away")

    def _answered(self) -> None:
        """Redis answers again: send the settles it missed, in the background."""
        self._warned = False
        if self._unsettled and self._resending is None:
            self._resending = asyncio.ensure_future(self._resend())

    async def _resend(self) -> None:
        try:
            for hold, spent, served, unpriced in list(self._unsettled.values()):
                await self.settle(hold, spent, served=served, unpriced=unpriced)
                if hold.id in self._unsettled:
                    return  # Redis went away again; the next answer tries again
        finally:
            self._resending = None

    async def accounts(self, principals: Principals | None = None) -> list[Account]:
        """Redis's accounts; this replica's own while Redis does not answer."""
        now = self.clock()
        try:
            found = await self._found(now)
        except REDIS_ERRORS as exc:
            self._lost(exc)
            return await self.fallback.accounts(principals)
        self._answered()
        return _listing(found, principals, now)

    async def _found(self, now: float) -> list[Account]:
        """Every stored account, its expired holds released first."""
        accounts = f"{self._root}a:"
        keys = [key async for key in self._client.scan_iter(match=f"{_glob(accounts)}*",
                                                             count=1000)]
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                holds = f"{self._root}h:{key.removeprefix(accounts)}"
                await self._script("read")(keys=[key, holds], args=[_number(now)], client=pipe)
            rows = await pipe.execute()
        return [account for row in rows if (account := _account(row)) is not None]

    async def clear(self) -> None:
        await self.fallback.clear()
        try:
            keys = [key async for key in self._client.scan_iter(match=f"{_glob(self._root)}*",
                                                                count=1000)]
            for at in range(0, len(keys), 1000):
                await self._client.unlink(*keys[at:at + 1000])
        except REDIS_ERRORS as exc:
            self._lost(exc)

    async def close(self) -> None:
        """Let the settles being sent again finish (briefly); the link owns the connection."""
        if self._resending is not None:
            await asyncio.wait([self._resending], timeout=OP_TIMEOUT)
