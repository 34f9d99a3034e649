"""A minimal HTTP CONNECT proxy on 127.0.0.1 that counts the tunnels it opens:
the stand-in for a corporate proxy when mitmproxy runs in upstream mode."""

from __future__ import annotations

import select
import socket
import socketserver

from .threaded import ServedInThread


class ConnectProxy(ServedInThread):
    def __init__(self) -> None:
        self.tunnels: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = self.request.recv(4096)
                    if not data:
                        return
                    head += data
                method, target = head.split(b" ", 2)[:2]
                host, _, port = target.decode().rpartition(":")
                if method != b"CONNECT" or host not in ("127.0.0.1", "localhost"):
                    self.request.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                    return
                proxy.tunnels.append(target.decode())
                with socket.create_connection((host, int(port)), timeout=10) as upstream:
                    self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    pipe(self.request, upstream)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        super().__init__(server)


def pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes (bounded by idle time)."""
    while True:
        ready, _, _ = select.select([a, b], [], [], 30)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)
