"""The attempt trail: what happened to one call, in words a person scans.

It ends up in the mitmweb flow comment and the mitmdump log line, e.g.
`primary 429 (retry 20s) → backup 200`. It names providers and key
fingerprints, never keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 120:
        return f"{math.ceil(seconds)}s"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)}m"
    return f"{math.ceil(seconds / 3600)}h"


@dataclass
class Trail:
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # dropped fields, skipped fallbacks

    def attempt(self, label: str, result: str, cooldown: float | None = None) -> None:
        suffix = f" (retry {seconds_text(cooldown)})" if cooldown else ""
        self.steps.append(f"{label} {result}{suffix}")

    def skip(self, label: str, remaining: float) -> None:
        self.steps.append(f"{label} cooling ({seconds_text(remaining)} left)")

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def __str__(self) -> str:
        text = " → ".join(self.steps) or "no candidate"
        return f"{text}; {'; '.join(self.notes)}" if self.notes else text
