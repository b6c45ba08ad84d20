"""Are a cluster's ports reachable between its members? Run on the hosts, standard library only.

`listen SECONDS PORT...` holds a listener on each port (every address) for that long, answering each
connection with "ok"; `connect ADDRESS PORT...` prints `PORT ok` or `PORT <reason>` for each. A deploy runs
the listeners on every member while the cluster is stopped, then connects from each peer: a firewall that
lets only the API port through fails here, named, instead of hanging vLLM's rendezvous later.
"""

from __future__ import annotations

import selectors
import socket
import sys
import time


def listen(seconds: float, ports: list[int]) -> int:
    selector = selectors.DefaultSelector()
    for port in ports:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen(16)
        selector.register(server, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            connection, _ = key.fileobj.accept()  # type: ignore[union-attr]
            with connection:
                connection.sendall(b"ok")
    return 0


def connect(address: str, ports: list[int], timeout: float = 3.0) -> int:
    failed = 0
    for port in ports:
        try:
            with socket.create_connection((address, port), timeout=timeout) as connection:
                answer = connection.recv(2)
            result = "ok" if answer == b"ok" else f"answered {answer!r}, not the probe"
        except OSError as error:
            result = error.strerror or type(error).__name__
        failed += result != "ok"
        print(port, result)
    return 1 if failed else 0


if __name__ == "__main__":
    mode, first, *rest = sys.argv[1:]
    if mode == "listen":
        sys.exit(listen(float(first), [int(p) for p in rest]))
    sys.exit(connect(first, [int(p) for p in rest]))
