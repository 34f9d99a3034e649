"""A socketserver run on a background thread for the length of a `with` block."""

from __future__ import annotations

import socketserver
import threading
from typing import Self


class ServedInThread:
    """Base for test servers: `with Server(...) as s:` serves, and on exit stops
    the server, closes its socket and joins the thread. The serving loop looks
    for the stop every 50 ms (socketserver's default, 0.5 s, was most of the
    time a test spent stopping its fakes)."""

    POLL = 0.05

    def __init__(self, server: socketserver.BaseServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(self.POLL,),
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
