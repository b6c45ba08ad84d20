"""An instance's engine core on a lab host, and the ways production kills it: a signal, or the kernel's OOM killer.

vLLM's API server runs the engine in a process of its own (`VLLM::EngineCore`, a child of the unit's main
process); on GPUs that is the process CUDA errors, Xid faults, NCCL timeouts and out-of-memory kill, and its API
server then shuts down with exit status 0.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from hostlab import TestHost
from hostlab.deployrun import lab_api_key
from hostlab.lab import _cgroup_pids

ENGINE_COMM = "VLLM::EngineCor"  # the kernel keeps 15 characters of the title


def main_pid(host: TestHost, unit: str) -> int:
    return int(host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip())


def engine_core(host: TestHost, unit: str) -> int:
    """The guest pid of the unit's engine core: the child of its main process with the engine's title."""
    pid = main_pid(host, unit)
    out = host.run(f"ps -o pid=,comm= --ppid {pid}").stdout
    found = [int(p) for p, comm in (line.split(None, 1) for line in out.splitlines() if line.strip())
             if comm.strip() == ENGINE_COMM]
    assert len(found) == 1, f"{unit}: no single {ENGINE_COMM} among the children of {pid}:\n{out}"
    return found[0]


def host_pid(host: TestHost, guest_pid: int) -> int:
    """The controller's pid of a process of the guest (its NSpid's last entry is the guest's pid)."""
    for pid in _cgroup_pids(host.cgroups[0]):
        try:
            ns_pids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("NSpid:")).split()[1:]
        except (OSError, StopIteration):
            continue
        if ns_pids and int(ns_pids[-1]) == guest_pid:
            return pid
    raise AssertionError(f"{host.name}: guest pid {guest_pid} not found among the lab host's processes")


def _memory_cgroup() -> Path:
    """This process's cgroup in the v1 memory hierarchy, which the lab's guests share and do not manage."""
    root = Path("/sys/fs/cgroup/memory")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and (root / "cgroup.procs").exists():
            return root / path.lstrip("/")
    pytest.skip("no cgroup v1 memory controller on this machine: the lab's guests (hybrid cgroups) do not enforce "
                "MemoryMax, so the OOM kill needs a memory cgroup outside them")


def _load(url: str, stop: threading.Event) -> None:
    """Completions with several choices each, one after another: the engine allocates for every batch."""
    payload = json.dumps({"model": "tiny", "prompt": "def main(" * 40, "max_tokens": 48, "n": 4}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {lab_api_key()}"}
    while not stop.is_set():
        try:
            with urllib.request.urlopen(urllib.request.Request(url, payload, headers), timeout=30) as answer:
                answer.read()
        except OSError:
            time.sleep(0.2)


def oom_kill(host: TestHost, unit: str, completion_url: str, timeout: float = 120) -> str:
    """Put the engine core in a memory cgroup of its own with a 4 MiB limit, then load it until the kernel's
    OOM killer ends it; returns the kernel's line about the kill."""
    guest = engine_core(host, unit)
    pid = host_pid(host, guest)
    cgroup = _memory_cgroup() / f"vllm-oom-{host.name}"
    cgroup.mkdir(exist_ok=True)
    stop = threading.Event()
    clients = [threading.Thread(target=_load, args=(completion_url, stop), daemon=True) for _ in range(4)]
    try:
        (cgroup / "memory.limit_in_bytes").write_text(str(4 << 20))
        (cgroup / "cgroup.procs").write_text(str(pid))  # new pages count from here: the load's allocations
        for client in clients:
            client.start()
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, f"the engine core survived {timeout} s at 4 MiB under load"
            time.sleep(0.2)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=40)
        for _ in range(50):  # empty once the killed process is reaped
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.2)
    log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout
    lines = [line for line in log.splitlines() if f"Killed process {pid} " in line]
    assert lines, f"no OOM kill of {pid} in the kernel log"
    return lines[-1]
