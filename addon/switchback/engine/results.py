"""What the engine hands back for one call: the answer to deliver, the
record of every attempt, and how the call ended. Plain data: the shell
reports it, the charge settles it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..health.verdict import Scope
from ..plan import Candidate
from ..protocols.usage import Usage
from ..trail import Trail
from ..vocabulary import CallOutcome, ProbeResult, Protocol, Reason, Retry
from .delivery import Committed


@dataclass
class Answer:
    """A whole answer for `Response.make`."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class AttemptRecord:
    """One upstream attempt as it happened: the request as sent (credentials
    masked), what came back, and what was made of it."""

    provider: str
    key: str  # the fingerprint of the credential sent ("" when none)
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    started: float
    status: int | None = None
    first_byte: float | None = None  # seconds until the answer's head
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""  # as the client could see it (secrets masked)
    result: str = ""  # the trail's words for it
    kind: str = ""  # the status code, or why there was none
    reason: Reason | None = None  # the verdict's, for a failure
    cooldown: float | None = None
    scope: Scope | None = None  # of the cooldown
    switched_to: Protocol | None = None  # the protocol retried on a missing endpoint
    retry: Retry | None = None  # this attempt tried the candidate that had just failed, and why
    probe: ProbeResult | None = None  # this attempt probed a cooling scope, and how it went
    left_out: int = 0  # sealed reasoning items left out: another account produced them
    ended: float = 0.0


@dataclass
class Result:
    delivery: Answer | Committed
    trail: Trail
    served_by: Candidate | None = None
    failures: int = 0  # failed attempts before the answer
    switched: bool = False  # the answer was translated from the other protocol
    attempts: list[AttemptRecord] = field(default_factory=list)
    outcome: CallOutcome = CallOutcome.OK
    usage: Usage | None = None  # of a whole answer, as the provider reported it
    streamed: int = -1  # the attempt whose stream the client got (first, when rescued)

    def conclude(self) -> None:
        """Once a stream has closed, the call's outcome is what its client got:
        a stream that broke after commit is no success, whatever its head said;
        one carried on to its end elsewhere is rescued."""
        delivery = self.delivery
        if not isinstance(delivery, Committed) or self.outcome is not CallOutcome.OK:
            return
        if delivery.broke is not None:
            self.outcome = CallOutcome.BROKEN
            self.trail.note(f"stream broke after commit ({delivery.broke})")
        elif delivery.continued:
            self.outcome = CallOutcome.RESCUED
