"""A TLS server on 127.0.0.1 that answers every request with exactly the bytes
given — status line, headers and body, nothing re-framed — for answers no
well-behaved HTTP server would write (a chunked body whose chunk size is
garbage). After its pieces it closes, or holds the connection open without
reading a byte (a provider gone silent: it does not even answer a TLS
close), until the server stops."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time

from .threaded import ServedInThread
from .tlsca import ServerCert


class RawTls(ServedInThread):
    """`with RawTls(cert, [head, body...]) as server:`; `server.requests` counts answers."""

    def __init__(self, cert: ServerCert, pieces: list[bytes], pause: float = 0.1,
                 hold_open: bool = False) -> None:
        self.pieces, self.pause, self.hold_open = pieces, pause, hold_open
        self.requests = 0
        self._stop = threading.Event()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.cert, cert.key)
        context.set_alpn_protocols(["http/1.1"])
        raw = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: ssl.SSLSocket = self.request
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(10)
                try:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536) or b"\r\n\r\n"
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    while len(body) < length and (more := conn.recv(65536)):
                        body += more
                    raw.requests += 1
                    for piece in raw.pieces:
                        conn.sendall(piece)
                        time.sleep(raw.pause)  # each piece its own read at the client
                    if raw.hold_open:
                        raw._stop.wait(60)
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, address = super().get_request()
                sock.settimeout(10)
                return context.wrap_socket(sock, server_side=True), address

        server = Server(("127.0.0.1", 0), Handler)
        self.port = server.server_address[1]
        super().__init__(server)

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        super().__exit__(*exc)
