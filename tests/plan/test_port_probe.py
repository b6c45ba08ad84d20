"""remote/port_probe.py on loopback: a listener answers the probe, a closed port is named with its reason."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from plan.cluster import probe_ports

PROBE = Path(__file__).resolve().parents[2] / "remote" / "port_probe.py"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _connect(*ports: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE.read_text(), "connect", "127.0.0.1", *map(str, ports)],
                          capture_output=True, text=True, timeout=30)


def test_listened_ports_answer_and_a_closed_one_is_named() -> None:
    listened, closed = _free_ports(2), _free_ports(1)[0]
    listener = subprocess.Popen([sys.executable, str(PROBE), "listen", "20", *map(str, listened)])
    try:
        deadline = time.monotonic() + 10
        while _connect(*listened).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        ok = _connect(*listened)
        assert ok.returncode == 0 and ok.stdout.split() == [str(listened[0]), "ok", str(listened[1]), "ok"]
        mixed = _connect(listened[0], closed)
        assert mixed.returncode == 1
        assert mixed.stdout.splitlines() == [f"{listened[0]} ok", f"{closed} Connection refused"]
    finally:
        listener.terminate()
        listener.wait(timeout=10)


def test_a_port_that_answers_something_else_is_not_taken_for_the_probe() -> None:
    port = _free_ports(1)[0]
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen(1)
        result = _connect(port)  # accepted by the kernel's backlog, never answered "ok"
    assert result.returncode == 1 and str(port) in result.stdout and "ok" not in result.stdout.split()


def test_the_probe_tries_a_range_by_its_ends_and_passes_systemd_run_unexpanded() -> None:
    assert probe_ports(range(29501, 29533)) == (29501, 29532)
    assert probe_ports(range(29500, 29501)) == (29500,)
    # systemd-run hands the code to a transient unit's ExecStart, which expands % specifiers and $VARIABLES.
    assert "%" not in PROBE.read_text() and "$" not in PROBE.read_text()
