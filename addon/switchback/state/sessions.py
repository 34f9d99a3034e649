"""Agent sessions: which account serves a session, and which account sealed
each reasoning item Switchback carried.

A session (a call's `prompt_cache_key`) goes back to the provider and key
that served its last turn: that account holds its prompt cache and can read
its encrypted reasoning. A reasoning item's producer is known by its mark (a
digest of its sealed content), so towards any other candidate it can be
left out. Both are small and read on every call that names a session:
mirrored to every replica, bounded by count, with a TTL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .stores import Store


def session_key(caller: str, name: str) -> str:
    """A session's key: whose it is and its name, digested (a client's session
    name is its own; another client's of the same name is another session)."""
    return hashlib.sha256(f"{caller}\0{name}".encode()).hexdigest()[:32]


# The producer of sealed reasoning a candidate refused and nobody is known to
# have made (Switchback restarted, or forgot): left out towards everyone.
UNREADABLE = "?"


class Sessions:
    def __init__(self, pins: Store, producers: Store, ttl: float = 86_400.0) -> None:
        self.pins, self.producers, self.ttl = pins, producers, ttl
        self.left_out = 0  # reasoning items left out on this replica (for /status)

    def owner(self, session: str) -> str | None:
        """The candidate (`Candidate.owner`) that served the session's last turn."""
        owner = self.pins.get(session)
        return owner if isinstance(owner, str) and owner else None

    def pin(self, session: str, owner: str) -> None:
        if self.pins.get(session) != owner:
            self.pins.put(session, owner, self.ttl)

    def producers_of(self, marks: Iterable[str]) -> dict[str, str]:
        """The known producers of `marks`."""
        found = {}
        for mark in marks:
            owner = self.producers.get(mark)
            if isinstance(owner, str) and owner:
                found[mark] = owner
        return found

    def produced(self, marks: Iterable[str], owner: str) -> None:
        """`owner` sealed (or read) the reasoning items with these marks."""
        for mark in set(marks):
            if self.producers.get(mark) != owner:
                self.producers.put(mark, owner, self.ttl)

    @property
    def pinned(self) -> int:
        return len(self.pins)

    @property
    def known(self) -> int:
        return len(self.producers)
