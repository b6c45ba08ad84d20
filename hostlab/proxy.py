"""A small forwarding HTTP proxy, run in a thread on the lab bridge address.

Guests have no DNS and no route out; this proxy is their only egress (apt, pip, curl), so the
controller resolves names and its own outbound rules apply. `CONNECT` tunnels https; plain http
requests in absolute form are forwarded one per connection (apt copes with that).
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from urllib.parse import urlsplit

ALLOWED_CONNECT_PORTS = frozenset({443, 80})
_HEADER_LIMIT = 64 * 1024


class _Handler(socketserver.BaseRequestHandler):
    server: ForwardingProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(60)
        try:
            head, rest = self._read_head(client)
        except (OSError, ValueError):
            return
        request_line, _, headers = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        if method.upper() == "CONNECT":
            self._connect(client, target, rest)
        else:
            self._forward(client, method, target, version, headers, rest)

    @staticmethod
    def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("connection closed before the request head")
            buf += chunk
            if len(buf) > _HEADER_LIMIT:
                raise ValueError("request head too large")
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    def _open(self, host: str, port: int) -> socket.socket | None:
        try:
            upstream = socket.create_connection((host, port), timeout=30)
        except OSError:
            return None
        self.server.record(host, port)
        return upstream

    def _connect(self, client: socket.socket, target: str, rest: bytes) -> None:
        host, _, port_s = target.rpartition(":")
        port = int(port_s) if port_s.isdigit() else 0
        if port not in ALLOWED_CONNECT_PORTS:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = self._open(host.strip("[]"), port)
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            _splice(client, upstream)

    def _forward(self, client: socket.socket, method: str, target: str, version: str, headers: bytes,
                 rest: bytes) -> None:
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = self._open(url.hostname, url.port or 80)
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        kept = [
            line for line in headers.split(b"\r\n")
            if line and not line.lower().startswith((b"proxy-connection:", b"connection:", b"keep-alive:"))
        ]
        out = f"{method} {path} {version}\r\n".encode("latin-1") + b"\r\n".join(kept)
        out += b"\r\nConnection: close\r\n\r\n" + rest
        with upstream:
            upstream.sendall(out)
            _splice(client, upstream)


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    socks = [a, b]
    for s in socks:
        s.settimeout(None)
    while True:
        readable, _, errored = select.select(socks, [], socks, 120)
        if errored or not readable:
            return
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            other = b if s is a else a
            try:
                other.sendall(data)
            except OSError:
                return


class ForwardingProxy(socketserver.ThreadingTCPServer):
    """Listen on (address, port); `port=0` picks a free one (see `.port`). Records the upstreams it opened."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int = 0) -> None:
        super().__init__((address, port), _Handler)
        self.upstreams: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def record(self, host: str, port: int) -> None:
        with self._lock:
            self.upstreams.add((host, port))

    def start(self) -> ForwardingProxy:
        self._thread = threading.Thread(target=self.serve_forever, name="hostlab-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
