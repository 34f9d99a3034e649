"""Secrets out of everything a person or a client sees.

A provider may echo the key it was sent in an error body ("Incorrect API
key provided: sk-…"), and that body may be the client's answer, a log line,
a flow in mitmweb or a trail. Every such byte passes through a `Redactor`,
which replaces each secret Switchback knows — the configured keys, and the
call's own credential — with its fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from .recognise import fingerprint

MIN_SECRET = 8  # shorter strings are not keys, and masking them would mangle ordinary text


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if s and len(s) >= MIN_SECRET}
        # Longest first, so a key that contains another is masked whole.
        self._pairs = tuple((s.encode(), f"<key {fingerprint(s)}>".encode())
                            for s in sorted(unique, key=len, reverse=True))

    def including(self, secret: str | None) -> Redactor:
        """This redactor plus one more secret (a call's own credential)."""
        if not secret or len(secret) < MIN_SECRET:
            return self
        return self._including(secret)

    @lru_cache(maxsize=1024)  # clients reuse their keys: build each wider redactor once
    def _including(self, secret: str) -> Redactor:
        wider = Redactor()
        pairs = {*self._pairs, (secret.encode(), f"<key {fingerprint(secret)}>".encode())}
        wider._pairs = tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))
        return wider

    def bytes(self, data: bytes) -> bytes:
        for secret, mask in self._pairs:
            if secret in data:
                data = data.replace(secret, mask)
        return data

    def text(self, text: str) -> str:
        return self.bytes(text.encode()).decode() if self._pairs else text

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, self.text(v)) for k, v in headers]
