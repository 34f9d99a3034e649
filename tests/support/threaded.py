"""A socketserver run on a background thread for the length of a `with` block."""

from __future__ import annotations

import socketserver
import threading
from typing import Self


class ServedInThread:
    """Base for test servers: `with Server(...) as s:` serves, and on exit stops
    the server, closes its socket and joins the thread."""

    def __init__(self, server: socketserver.BaseServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
