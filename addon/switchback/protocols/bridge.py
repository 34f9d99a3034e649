"""One attempt's protocol bridge: what the client speaks vs what the upstream
speaks, and the translator between them (`translators`).

When both speak the same protocol everything passes through byte for byte
(only the model may be rewritten, and usage asked for where a protocol's
streams report it only when asked). Otherwise the request is translated
before it goes out and the answer — whole or streamed — on its way back.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..jsonsafe import loads
from ..vocabulary import Protocol
from .metered import Metered
from .spec import spec
from .translators import Translator, translator


@dataclass
class Bridge:
    client: Protocol  # the protocol the client speaks
    upstream: Protocol  # the protocol this attempt sends
    request: dict[str, Any]  # the body to send, in the client's protocol
    raw: bytes  # ... and its bytes
    response_id: str = ""  # the id a translated answer carries; made when needed
    dropped: tuple[str, ...] = ()
    ask_usage: bool = True  # ask for a stream's usage when the client did not
    hides_usage: bool = False  # usage was asked for on the client's behalf: keep it from it

    def __post_init__(self) -> None:
        if self.translating and self._translator.response_id and not self.response_id:
            self.response_id = "resp_" + secrets.token_hex(16)

    @property
    def translating(self) -> bool:
        return self.client != self.upstream

    @property
    def _translator(self) -> Translator:
        found = translator(self.client, self.upstream)
        if found is None:
            # The plan never pairs protocols without a translator between them.
            raise ValueError(f"no translation from {self.client} to {self.upstream}")
        return found

    def body(self, model: str, upstream_host: str) -> bytes:
        """The upstream request body for `model`."""
        if not self.translating:
            asking = spec(self.client).ask_usage if self.ask_usage else None
            same = model == self.request.get("model")
            if asking is None or asking.asked(self.request):
                return self.raw if same else json.dumps({**self.request, "model": model}).encode()
            self.hides_usage = True
            return asking.raw(self.raw) if same else json.dumps(
                asking.body({**self.request, "model": model})).encode()
        translated = self._translator.request(self.request, upstream_host)
        self.dropped = translated.dropped
        return json.dumps({**translated.body, "model": model}).encode()

    def answer(self, body: bytes) -> bytes:
        """A successful whole answer in the client's protocol. ValueError when
        it is not JSON to translate."""
        if not self.translating:
            return body
        upstream = loads(body)
        if not isinstance(upstream, dict):
            raise ValueError("the upstream answer is not a JSON object")
        self.dropped = (*self.dropped, *self._translator.lost(upstream))
        return json.dumps(self._translator.answer(upstream, self.request,
                                                  self.response_id)).encode()

    def error(self, body: bytes, status: int) -> bytes:
        """An upstream error passed to the client, in the client's envelope."""
        convert = self._translator.error if self.translating else None
        return body if convert is None else convert(body, status)

    def shaper(self) -> Metered:
        inner = self._translator.stream(self.request, self.response_id) if self.translating \
            else spec(self.client).passthrough()
        return Metered(inner, self.upstream, self.hides_usage)
