"""One call's account, from before its first attempt to the end of its answer.

A `Charge` is the one context manager around a call. On entry it reserves
the call's worst case against the principal's budgets (or refuses the call
with `BudgetExceeded`, before any upstream attempt). On exit — whatever the
exit: an answer, a failure, the client gone, an exception, cancellation —
it settles: the real cost of what was served, nothing when nothing was.
A committed stream outlives the hook that made it, so the charge then stays
open until the stream closes (`Committed.ended`), which the relay guarantees
on every path; shutdown closes what is left, and every hold carries an
expiry besides — renewed while its call lives, so a killed process leaks
nothing for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ..recognise import LlmCall, fingerprint
from ..accounting.budgets import Amount, Budget, Refusal, budgets_for
from ..accounting.estimate import DEFAULT_OUTPUT_TOKENS, worst_case
from ..accounting.pricing import Pricing
from ..protocols.usage import Usage, tokens_of_bytes
from ..state.ledger import Hold, Ledger
from .delivery import Committed

if TYPE_CHECKING:
    from .results import Result

logger = logging.getLogger(__name__)
ANONYMOUS = "anonymous"
HOLD_TTL = 60.0  # seconds a hold outlives its call's last sign of life


def principal_of(proxy_user: str | None, credential: str | None) -> str:
    """Who pays: the proxy user, else the client key's fingerprint, else anonymous."""
    if proxy_user:
        return proxy_user
    return fingerprint(credential) if credential else ANONYMOUS


class BudgetExceeded(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


@dataclass(frozen=True)
class Bill:
    """What a call is charged when it ends."""

    principal: str
    served: bool  # something reached the client from a provider
    usage: Usage | None
    cost: float | None  # USD; None when unpriced or nothing was served

    @property
    def unpriced(self) -> bool:
        return self.served and self.usage is not None and self.cost is None

    def amount(self) -> Amount:
        if not self.served or self.usage is None:
            return Amount()
        return Amount(self.cost or 0.0, self.usage.total)

    def figures(self) -> dict:
        """Tokens and cost for the flow's metadata."""
        usage = self.usage
        return {} if usage is None else {
            "tokens": dict(usage.kinds()), "estimated": usage.estimated, "cost_usd": self.cost}

    def text(self) -> str:
        """The log line's and the flow comment's words for it."""
        if self.usage is None:
            return ""
        cost = "unpriced" if self.cost is None else f"${self.cost:.6f}".rstrip("0").rstrip(".")
        return f"{self.usage.text()} tokens, {cost}"


class Accounts:
    """Prices, budgets and the ledger: makes each call's `Charge`."""

    def __init__(self, ledger: Ledger, pricing: Pricing | None = None,
                 budgets: Mapping[str, tuple[Budget, ...]] | None = None,
                 default_output: int = DEFAULT_OUTPUT_TOKENS, hold_ttl: float = HOLD_TTL,
                 replacing: Accounts | None = None) -> None:
        self.ledger, self.pricing = ledger, pricing or Pricing()
        self.budgets = dict(budgets or {})
        self.default_output, self.hold_ttl = default_output, hold_ttl
        # Calls not yet settled, and settles under way: taken over from the
        # Accounts a config reload replaces, so that shutdown finds them all.
        self.open: set[Charge] = replacing.open if replacing else set()
        self.settling: set[asyncio.Future] = replacing.settling if replacing else set()

    def charge(self, call: LlmCall, principal: str,
               ended: Callable[[Bill], None] = lambda bill: None) -> Charge:
        return Charge(self, call, principal, ended)

    def cost(self, base_url: str, model: str, usage: Usage) -> float | None:
        try:
            return self.pricing.cost(base_url, model, usage)
        except (ValueError, ArithmeticError) as exc:  # usage the price data cannot take
            logger.warning(f"switchback: could not price {model}: {exc}")
            return None

    async def close(self) -> None:
        """Shutdown: settle every call still open as it stands, and wait for
        settles under way."""
        for charge in list(self.open):
            await charge.close()
        if self.settling:
            await asyncio.wait(list(self.settling))


class Charge:
    def __init__(self, accounts: Accounts, call: LlmCall, principal: str,
                 ended: Callable[[Bill], None]) -> None:
        self.accounts, self.call, self.principal, self.ended = accounts, call, principal, ended
        self.result: Result | None = None  # what the call delivered, once it has
        self.hold: Hold | None = None
        self.more: list[Hold] = []  # held for rescues of its stream
        self.worst: Usage | None = None
        self._keeper: asyncio.Task | None = None
        self._closed = False

    async def __aenter__(self) -> Charge:
        accounts = self.accounts
        budgets = budgets_for(self.principal, accounts.budgets)
        accounts.open.add(self)
        if not budgets or self.call.counting:  # counting tokens costs nothing
            return self
        self.worst = worst_case(self.call.body, accounts.default_output)
        cost = accounts.cost(self.call.provider.base_url, self.call.model, self.worst) or 0.0
        held = await accounts.ledger.reserve(self.principal, budgets,
                                             Amount(cost, self.worst.total), accounts.hold_ttl)
        if isinstance(held, Refusal):
            accounts.open.discard(self)
            self._closed = True
            raise BudgetExceeded(held)
        self.hold = held
        self._keeper = asyncio.ensure_future(self._keep())
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        stream = self.stream
        if stream is not None and not stream.closed and exc is None:
            stream.ended.append(self.close)  # the stream's end is the call's
            if stream.rescue is not None and self.hold is not None:
                stream.rescue.afford = self.afford
            return
        try:
            if stream is not None and not stream.closed:
                await stream.aclose()  # it never reached the relay: close it
        finally:
            await self.close()

    @property
    def stream(self) -> Committed | None:
        delivery = self.result.delivery if self.result is not None else None
        return delivery if isinstance(delivery, Committed) else None

    async def close(self) -> None:
        """Settle, once: what was served, at its real cost."""
        if self._closed:
            return
        self._closed = True
        self.accounts.open.discard(self)
        if self._keeper is not None:
            self._keeper.cancel()
        if self.hold is None:  # nothing held: nothing to book, nothing to wait for
            self.ended(self.bill())
            return
        # Shielded: a settle cut short (shutdown cancels what is running) would
        # leave money spent unbooked. Shutdown waits for it instead.
        settling = asyncio.ensure_future(self._settle(self.bill()))
        self.accounts.settling.add(settling)
        settling.add_done_callback(self.accounts.settling.discard)
        await asyncio.shield(settling)

    async def afford(self) -> bool:
        """Hold one more attempt's worst case, for a rescue of the call's
        stream: False when the budgets cannot take it (then there is none)."""
        assert self.hold is not None and self.worst is not None
        accounts = self.accounts
        budgets = budgets_for(self.principal, accounts.budgets)
        cost = accounts.cost(self.call.provider.base_url, self.call.model, self.worst) or 0.0
        want = Amount(cost, self.worst.total)
        # Looked at first: a rescue the budgets cannot take is no refused call.
        for account in await accounts.ledger.accounts([(self.principal, budgets)]):
            used = account.budget.of(account.spent) + account.budget.of(account.reserved)
            if used + account.budget.of(want) > account.budget.limit:
                return False
        held = await accounts.ledger.reserve(self.principal, budgets, want, accounts.hold_ttl)
        if isinstance(held, Refusal):
            return False
        self.more.append(held)
        return True

    async def _settle(self, bill: Bill) -> None:
        assert self.hold is not None
        ledger = self.accounts.ledger
        try:
            await ledger.settle(self.hold, bill.amount(), served=bill.served,
                                unpriced=bill.unpriced)
            for extra in self.more:  # what the rescues cost is in the bill above
                await ledger.settle(extra, Amount(), served=False, unpriced=False)
        finally:
            self.ended(bill)

    def bill(self) -> Bill:
        result = self.result
        served = result.served_by if result is not None else None
        if result is None or served is None or not result.outcome.answered:
            return Bill(self.principal, False, None, None)
        if self.call.counting:  # an answer, but no tokens used and nothing to pay
            return Bill(self.principal, True, None, None)
        stream = self.stream
        if stream is None:
            usage = self._usage(result.usage, tokens_of_bytes(len(
                getattr(result.delivery, "body", b""))))
            return Bill(self.principal, True, usage,
                        self.accounts.cost(served.provider.base_url, served.model, usage))
        # A stream and the rescues that carried it on: each attempt at its own price.
        usage: Usage | None = None
        cost: float | None = 0.0
        for piece in (stream, *stream.continued):
            meter = piece.meter
            used = self._usage(meter.usage if meter else None, meter.delivered() if meter else 0)
            base_url, model = piece.priced if piece.priced[0] else (served.provider.base_url,
                                                                    served.model)
            priced = self.accounts.cost(base_url, model, used)
            usage = used if usage is None else usage.plus(used)
            cost = None if cost is None or priced is None else cost + priced
        return Bill(self.principal, True, usage, cost)

    def _usage(self, reported: Usage | None, delivered: int) -> Usage:
        """The provider's usage, else an estimate: the request's input and the
        output the client got."""
        if reported is not None:
            return reported
        worst = self.worst or worst_case(self.call.body, self.accounts.default_output)
        return Usage(worst.input, min(delivered, worst.output), estimated=True)

    async def _keep(self) -> None:
        """Renew the hold while the call lives."""
        assert self.hold is not None
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.accounts.hold_ttl / 3)
                try:
                    self.hold = await self.accounts.ledger.renew(self.hold,
                                                                 self.accounts.hold_ttl)
                except Exception:  # the hold then lapses at its expiry; the call goes on
                    logger.exception("switchback: could not renew a budget hold")
