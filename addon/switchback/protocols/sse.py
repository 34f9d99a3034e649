"""Incremental Server-Sent Events parsing, linear in the bytes fed.

Upstream bytes arrive in arbitrary network chunks: an event may be split
across chunks, or several may share one. `SseParser.feed` returns every
complete block — events, comments and keepalives alike — and keeps the rest,
searching only the bytes it has not searched before, so one huge event costs
what its size costs and no more. Every block keeps its raw bytes: a
pass-through stream is the concatenation of its blocks' raw bytes, exactly
what the provider sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..jsonsafe import loads

MAX_EVENT = 32 << 20  # one event this large is not a stream anybody means to send
# A blank line: two line ends in a row, where a line ends in CRLF, LF or CR
# (a CR followed by LF is one line end, never two).
_BOUNDARY = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_OVERLAP = 3  # a boundary is at most 4 bytes: rescan this much of what was searched
_BOM = b"\xef\xbb\xbf"


class EventTooLarge(ValueError):
    """One event grew past the parser's limit without ending."""


class Event:
    """One SSE block, read lazily: its raw bytes (blank line included) at
    once, its `event:` name and joined `data:` lines (None when absent: a
    comment or keepalive has neither) only when asked — a pass-through
    stream forwards most blocks without ever decoding them."""

    __slots__ = ("raw", "_size", "_skip", "_name", "_data", "_json")

    def __init__(self, raw: bytes, size: int | None = None, skip: int = 0) -> None:
        self.raw = raw
        self._size, self._skip = size, skip  # the block without its blank line; a BOM to skip
        self._name: str | None | object = _UNREAD
        self._data: str | None = None
        self._json: Any = _UNREAD

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.data!r})"

    @property
    def name(self) -> str | None:
        if self._name is _UNREAD:
            self._read()
        return self._name  # type: ignore[return-value]

    @property
    def data(self) -> str | None:
        if self._name is _UNREAD:
            self._read()
        return self._data

    @property
    def comment(self) -> bool:
        """A comment, keepalive or empty block: nothing for a client's parser."""
        return self.name is None and self.data is None

    def json(self) -> Any:
        """The data as JSON (parsed once), or None when it is not JSON."""
        if self._json is _UNREAD:
            self._json = None if self.data is None else loads(self.data)
        return self._json

    def _read(self) -> None:
        name: str | None = None
        data: list[str] = []
        text = self.raw[self._skip:self._size].decode("utf-8", errors="replace")
        # Plain string passes: a regex split looks at every character on its own
        # (60 ms for a 10 MB event, all of it blocking the event loop).
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        for line in text.split("\n"):
            if not line or line[0] == ":":
                continue
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        self._name, self._data = name, "\n".join(data) if data else None


_UNREAD = object()


class SseParser:
    """Feed bytes, get complete blocks back."""

    def __init__(self, limit: int | None = None) -> None:
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer already searched for a boundary
        self._limit = MAX_EVENT if limit is None else limit
        self._started = False

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += chunk
        events: list[Event] = []
        start = 0
        position = max(0, self._searched - _OVERLAP)
        while (match := _BOUNDARY.search(buffer, position)) is not None:
            end = match.end()
            if end == len(buffer) and buffer[-1] == 0x0D:
                break  # a CR last of all may be half a CRLF: wait for the next byte
            with memoryview(buffer) as view:  # one copy, not two
                raw = bytes(view[start:end])
            events.append(Event(raw, match.start() - start, self._bom(raw)))
            start = position = end
        if start:
            del buffer[:start]
        self._searched = len(buffer)
        if len(buffer) > self._limit:
            raise EventTooLarge(f"an event grew past {self._limit} bytes without ending")
        return events

    @property
    def pending(self) -> bool:
        """Part of a block is held, waiting for the rest."""
        return bool(self._buffer)

    def close(self) -> Event | None:
        """The bytes left when the stream ended, as a final block (None if none)
        — a stream may end without a blank line after its last event."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._searched = 0
        return Event(rest, None, self._bom(rest)) if rest else None

    def _bom(self, raw: bytes) -> int:
        """Bytes to skip at the start of this block: a byte order mark before
        the stream's first line is not part of it."""
        if self._started:
            return 0
        self._started = True
        return len(_BOM) if raw.startswith(_BOM) else 0


def encode(data: Any, name: str | None = None) -> bytes:
    """Serialise one event; `data` is JSON-encoded unless already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {text}\n\n".encode()
