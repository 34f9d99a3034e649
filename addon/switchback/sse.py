"""Incremental Server-Sent Events parsing.

Upstream bytes arrive in arbitrary network chunks: an event may be split
across chunks, or several events may share one. `SseParser.feed` returns only
complete events and keeps the rest, so a stream is never buffered beyond the
event being assembled. Each event keeps its raw bytes so a pass-through relay
forwards exactly what the provider sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(r"\r\n|\n|\r")


@dataclass(frozen=True)
class Event:
    """One SSE event: its `event:` name (None when absent), joined `data:`
    lines, and the bytes it was parsed from (boundary included)."""

    name: str | None
    data: str
    raw: bytes

    def json(self) -> Any:
        """The data as JSON, or None when it is not JSON (e.g. `[DONE]`)."""
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def parse_block(block: bytes, raw: bytes) -> Event | None:
    """Parse one event block; comment-only or empty blocks give None."""
    name: str | None = None
    data: list[str] = []
    for line in _LINE.split(block.decode("utf-8", errors="replace")):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if name is None and not data:
        return None
    return Event(name, "\n".join(data), raw)


class SseParser:
    """Feed bytes, get complete events back."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        start = 0
        while True:
            match = _BOUNDARY.search(self._buffer, start)
            if match is None:
                break
            event = parse_block(
                self._buffer[start : match.start()], self._buffer[start : match.end()]
            )
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = self._buffer[start:]
        return events

    def close(self) -> Event | None:
        """Flush a final event that ended without a blank line."""
        rest, self._buffer = self._buffer, b""
        if not rest.strip():
            return None
        return parse_block(rest, rest)


def encode(data: Any, name: str | None = None) -> bytes:
    """Serialise one event; `data` is JSON-encoded unless already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {text}\n\n".encode()
