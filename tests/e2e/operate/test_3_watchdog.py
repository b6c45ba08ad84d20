"""A hung engine on a real lab host: the watchdog restarts it while the gateway keeps clients served.

Instance "a" runs vLLM's engine core in its own process. Under a bounded client load through the
gateway, that process is frozen with SIGSTOP: the API server still answers `/health` with 200 (the
case vllm#39863 describes) while no token comes out. The watchdog must restart the instance within
its bound (misses x interval + timeout, plus the kill), say why in the journal, count the restart in
its metrics, and the instance must verify again. Clients may lose at most the requests that were in
flight when the engine froze; nginx re-sends the others.
"""

from __future__ import annotations

import re
import time

import pytest

from hostlab import TestHost
from plan.settings import watchdog_restart_bound
from tests.e2e.gatewaylab import LoadLoop, Story
from tests.e2e.operate.conftest import FAST

pytestmark = pytest.mark.hosts

UNIT = "vllm-a"
TEXTFILE = "/var/lib/prometheus/node-exporter/vllm_watchdog.prom"


def _engine_core_pid(host: TestHost, unit: str) -> int:
    """The engine core process of the unit: the process of its cgroup that vLLM titled VLLM::EngineCore."""
    script = (f"for p in $(pgrep -f VLLM::EngineCore); do "
              f"grep -q '/{unit}.service' /proc/$p/cgroup 2>/dev/null && echo $p; done")
    pids = host.run(script, check=False).stdout.split()
    if not pids:
        listing = host.run(f"systemctl status --no-pager {unit} | tail -20", check=False).stdout
        raise AssertionError(f"no EngineCore process in {unit}:\n{listing}")
    return int(pids[0])


def _health(host: TestHost, port: int) -> str:
    return host.run(f"curl -s -o /dev/null -w '%{{http_code}}' -m 3 http://127.0.0.1:{port}/health",
                    check=False).stdout.strip()


def _restarts(host: TestHost, unit: str) -> float:
    text = host.run(f"cat {TEXTFILE}", check=False).stdout
    found = re.search(rf'^vllm_watchdog_restarts_total\{{unit="{unit}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_frozen_engine_is_restarted_and_clients_are_served(operated: Story) -> None:
    a = operated.a
    bound = watchdog_restart_bound(FAST["vllm_watchdog_interval"], FAST["vllm_watchdog_timeout"],
                                   FAST["vllm_watchdog_misses"])
    before = _restarts(a, UNIT)
    engine = _engine_core_pid(a, UNIT)
    with LoadLoop(operated, requests=400) as loop:
        loop.wait_for(20)
        a.run(f"kill -STOP {engine}")
        frozen_at = time.monotonic()
        in_flight = loop.in_flight()
        health = _health(a, 8001)
        deadline = frozen_at + bound + 60
        line = ""
        while time.monotonic() < deadline and not line:
            found = re.search(rf"^.*{UNIT}.*restarting.*$", a.journal("vllm-watchdog", lines=200), re.M)
            line = found.group(0) if found else ""
            time.sleep(1)
        restarted_after = time.monotonic() - frozen_at
        a.run(f"kill -CONT {engine}", check=False)  # no-op once the restart has killed it
        loop.wait_for(400, timeout=600)
    assert health == "200", f"/health answered {health} with the engine frozen: not the hung-engine case"
    assert line, f"the watchdog did not restart {UNIT} within {bound + 60} s:\n{a.journal('vllm-watchdog', 60)}"
    print(f"watchdog: {line.strip()} ({restarted_after:.0f} s after the freeze; bound {bound} s + kill)")
    assert restarted_after <= bound + 30, f"restart came {restarted_after:.0f} s after the freeze (bound {bound} s)"
    assert "health" in line and "200" in line, f"the journal line does not say /health still answered: {line}"
    assert _restarts(a, UNIT) == before + 1, a.run(f"cat {TEXTFILE}", check=False).stdout
    assert len(loop.failures) <= in_flight, (f"{len(loop.failures)} requests failed, {in_flight} were in flight "
                                             f"when the engine froze: {loop.failures[:5]}")
    print(f"watchdog: {loop.done} requests, {len(loop.failures)} failed, {in_flight} in flight at the freeze")
    check = operated.deploy(script="verify.py")
    assert check.returncode == 0, check.failure(5000)
    assert f"{UNIT}: verify" in check.output
    assert _engine_core_pid(a, UNIT) != engine
