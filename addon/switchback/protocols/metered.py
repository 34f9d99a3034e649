"""A stream's usage, read on its way to the client.

`Metered` wraps the shaper of every committed stream. It reads the usage
the provider reports — a chat stream's usage chunk, a Responses stream's
terminal event — in the upstream's protocol (its `spec`), and counts the
answer text delivered, so a stream cut before its usage still has an estimate. For a
chat client that did not ask for usage, Switchback asked on its behalf; the
usage chunk and the `"usage":null` fields that come with it are taken out
again, so the client sees the stream it asked for. Pure.
"""

from __future__ import annotations

import re

from ..vocabulary import Protocol
from .shapers import StreamShaper
from .spec import spec
from .sse import Event
from .usage import USAGE_OBJECT, Usage, tokens_of_bytes

_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null\b|"usage"\s*:\s*null\s*,')

# An event larger than this is counted whole, unscanned: its text is only an
# estimate's input, and scanning it would stall every other stream (60-90 ms
# per 10 MB).
SCANNED = 256 << 10


class Metered:
    """A `StreamShaper` that also knows the stream's usage."""

    def __init__(self, inner: StreamShaper, upstream: Protocol, hide_usage: bool = False) -> None:
        self.inner, self.upstream, self.hide_usage = inner, upstream, hide_usage
        self.usage: Usage | None = None  # as the provider reported it
        self.text_bytes = 0  # of answer text delivered
        self._spec = spec(upstream)
        self._text = self._spec.answer_text

    @property
    def complete(self) -> bool:
        return self.inner.complete

    @property
    def final(self) -> dict | None:
        return self.inner.final

    @property
    def dropped(self) -> tuple[str, ...]:
        """What a translated stream had no form for (a translator names it)."""
        return tuple(getattr(self.inner, "dropped", ()))

    def feed(self, event: Event) -> bytes:
        raw = event.raw
        if len(raw) > SCANNED:
            self.text_bytes += len(raw)  # almost all of a huge event is its text
        else:
            for text in self._text.finditer(raw):
                self.text_bytes += text.end(1) - text.start(1)
        if b'"usage"' not in raw:
            return self.inner.feed(event)
        if USAGE_OBJECT.search(raw) and self._read_usage(event) and self.hide_usage:
            return b""  # the usage chunk Switchback asked for: not the client's
        out = self.inner.feed(event)
        return _NULL_USAGE.sub(b"", out) if self.hide_usage else out

    def finish(self) -> bytes:
        return self.inner.finish()

    def fail(self, message: str) -> bytes:
        return self.inner.fail(message)

    def delivered(self) -> int:
        """Output tokens delivered so far, estimated from their text."""
        return tokens_of_bytes(self.text_bytes)

    def _read_usage(self, event: Event) -> bool:
        """Take the usage an event reports; True for a chat usage-only chunk."""
        payload = event.json()
        if not isinstance(payload, dict):
            return False
        self.usage, only = self._spec.stream_usage(event, payload, self.usage)
        return only
