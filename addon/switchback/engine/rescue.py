"""Carry a committed stream on when it stops short of its answer's end.

The client already has part of the answer, so the call cannot start over:
another candidate is asked for the rest — first by prefill (the delivered
text sent back as the answer's start), else by a restart whose answer is
spliced in only where it repeats what was delivered (`protocols.splice`).
The continuation passes the gate like any attempt, and a refusal of prefill
is learned and never reaches the client. When nothing carries the answer
on, the client gets the clean error of the original break.

A `Rescuer` lives as long as the call's stream; delivery calls it at a break
(`engine.delivery.Resumer`), the dispatcher runs the attempts it asks for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..accounting.estimate import worst_case
from ..health.errors import read_error
from ..health.verdict import refuses_prefill
from ..plan import Candidate
from ..protocols.shapers import StreamShaper
from ..protocols.spec import spec
from ..protocols.splice import Splice, Spliced
from ..protocols.usage import Usage
from ..state.quirks import Quirks
from ..vocabulary import Quirk, Rescue
from .bookkeeping import CallContext
from .delivery import Committed, Stop
from .results import Answer

logger = logging.getLogger(__name__)
MAX_RESCUES = 2  # continuations per call
MAX_RECORDED = 4 << 20  # bytes of an answer kept for its rescue; a longer one is not rescued


@dataclass(frozen=True)
class Resuming:
    """What a rescue attempt sends and how its stream is shaped: the request
    in the client's protocol, the splice onto the client's stream, and
    whether a prefilled start is marked for the provider (`prefix: true`)."""

    body: dict
    mode: Rescue
    splice: Splice

    def wrap(self, shaper: StreamShaper) -> StreamShaper:
        return Spliced(shaper, self.splice)

    def flagged(self, candidate: Candidate) -> bool:
        return self.mode is Rescue.PREFILL and candidate.provider.prefix


Attempt = Callable[[CallContext, Candidate], Awaitable["Answer | Committed | None"]]


class Rescuer:
    """The rescue of one call's stream."""

    def __init__(self, ctx: CallContext, splice: Callable[[], Splice],
                 candidates: tuple[Candidate, ...], attempt: Attempt,
                 cooling: Callable[[Candidate], bool], quirks: Quirks,
                 default_output: int) -> None:
        self.ctx, self.candidates = ctx, candidates
        self._splice: Splice | None = None  # made at the first break: most streams have none
        self._make_splice = splice
        self.attempt, self.cooling, self.quirks = attempt, cooling, quirks
        self.default_output = default_output
        self.prefill = spec(ctx.call.protocol).prefill
        self.stream: Committed | None = None  # the call's first stream
        self.current: Committed | None = None  # the stream the client is reading now
        self.serving: Candidate | None = None  # ... and who sends it
        self.words = ""  # the trail's words for it
        self.step = -1  # ... and where they are in the trail
        self.rescues = 0
        self.broken: set[str] = set()  # owners whose streams broke in this call
        self._original: Stop | None = None
        self._recorded: list[bytes] | None = []  # the client's bytes of the first stream
        self._size = 0
        self._extra = Usage()  # what the attempts that broke used
        self.afford: Callable[[], Awaitable[bool]] | None = None  # set when budgets apply

    @property
    def original(self) -> Stop | None:
        return self._original

    @property
    def splice(self) -> Splice:
        if self._splice is None:
            self._splice = self._make_splice()
        return self._splice

    def serves(self, stream: Committed, candidate: Candidate, words: str) -> None:
        """`stream` from `candidate` is what the client reads now."""
        self.stream = self.stream or stream
        self.current, self.serving = stream, candidate
        self.words, self.step = words, len(self.ctx.trail.steps) - 1

    def record(self, data: bytes) -> None:
        recorded = self._recorded
        if recorded is None or not data:
            return
        self._size += len(data)
        if self._size > MAX_RECORDED:
            self._recorded = None
        else:
            recorded.append(data)

    async def resume(self, stop: Stop) -> Committed | None:
        """The rest of the answer from another candidate, committed; None when
        none carries it on (the client then gets the original break's error)."""
        ctx, splice = self.ctx, self.splice
        self._original = self._original or stop
        if self._recorded is not None:  # the first break: learn what the client has
            splice.catch_up(b"".join(self._recorded))
            self._recorded = None
        self._broke(stop)
        if self.rescues == 0 and not splice.events:
            ctx.trail.note("not continued (the answer was too long to keep)")
            return None
        blocker = splice.blocker()
        if blocker is not None or self.rescues >= MAX_RESCUES:
            ctx.trail.note(f"not continued ({blocker or f'{MAX_RESCUES} continuations already'})")
            return None
        if self.afford is not None and not await self.afford():
            ctx.trail.note("not continued (over budget)")
            return None
        # The delivered text, sent back without its trailing whitespace (which
        # Anthropic refuses at a prefill's end); None when it cannot be sent.
        text = splice.prefill()
        start = text.rstrip() if text else ""
        prefilled = self.prefill(ctx.call.body, start) if start and self.prefill else None
        tail = text[len(start):] if text else ""
        for planned in self.candidates:
            candidate = ctx.in_call_protocol(planned)
            if candidate.owner in self.broken or candidate.provider.name in ctx.dead_providers \
                    or candidate.model in ctx.too_long or self.cooling(candidate):
                continue
            for mode in self._modes(candidate, prefilled is not None):
                body = prefilled if mode is Rescue.PREFILL else ctx.call.body
                assert body is not None
                splice.begin(mode, self._extra, tail if mode is Rescue.PREFILL else "")
                ctx.resuming = Resuming(body, mode, splice)
                try:
                    delivery = await self.attempt(ctx, candidate)
                finally:
                    ctx.resuming = None
                if isinstance(delivery, Committed):
                    self.rescues += 1
                    assert self.stream is not None
                    self.stream.continued.append(delivery)
                    self.serves(delivery, candidate, f"{ctx.label(candidate)} continued ({mode}")
                    ctx.trail.steps[self.step] = f"{self.words})"
                    return delivery
                if isinstance(delivery, Answer):
                    if mode is Rescue.PREFILL and refuses_prefill(delivery.status,
                                                                  read_error(delivery.body)):
                        self.quirks.learn(candidate.provider.name, Quirk.NO_PREFILL,
                                          candidate.model)
                        self._reword(f"{delivery.status} (refuses prefill)")
                        continue  # the same candidate, by restart
                    self._reword(f"{delivery.status} (no continuation)")
                break  # failed: the next candidate
        return None

    def delivered(self, stream: Committed) -> None:
        """A continuation reached its end: the trail counts what it gave."""
        if stream is self.current and stream.broke is None:
            self.ctx.trail.steps[self.step] = f"{self.words}, {self.splice.continued} chunks)"

    def _modes(self, candidate: Candidate, prefillable: bool) -> tuple[Rescue, ...]:
        setting = candidate.provider.continuation
        if setting is Rescue.OFF:
            return ()
        if setting is Rescue.PREFILL and prefillable \
                and not self.quirks.has(candidate.provider.name, Quirk.NO_PREFILL,
                                        candidate.model):
            return (Rescue.PREFILL, Rescue.RESTART)
        return (Rescue.RESTART,)

    def _broke(self, stop: Stop) -> None:
        """The trail and the bill of the stream that broke."""
        serving, current = self.serving, self.current
        if serving is None or current is None:
            return
        self.broken.add(serving.owner)
        count = self.splice.continued if self.rescues else self.splice.events
        words = f"{self.words})" if self.rescues else self.words
        self.ctx.trail.steps[self.step] = f"{words} {stop.kind} after {count} chunks"
        meter = current.meter
        if meter is not None:
            used = meter.usage or Usage(worst_case(self.ctx.call.body, self.default_output).input,
                                        meter.delivered(), estimated=True)
            self._extra = self._extra.plus(used)

    def _reword(self, result: str) -> None:
        """The trail's step for a rescue attempt that did not continue."""
        steps = self.ctx.trail.steps
        if steps:
            label = steps[-1].split(" ", 1)[0]
            steps[-1] = f"{label} {result}"
