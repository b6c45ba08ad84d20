"""The watchdog against a real vLLM whose engine core hangs while /health keeps answering 200.

The tiny server runs with VLLM_ENABLE_V1_MULTIPROCESSING=1, so its engine core is a process of
its own ("VLLM::EngineCore", a child of the API server). SIGSTOP on that process is the hung
engine of vllm#39863: the API server still answers /health with 200, but no token comes. The
watchdog (remote/vllm_watchdog.py, as deployed, with the API key read from a header file) must
restart it exactly once within misses x interval + timeout; its restart command here records the
call and SIGCONTs the engine (what a fresh vLLM would be), so the test also sees it watch on.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plan.test_watchdog import Watchdog, recorder_command, start_watchdog, wait_for
from tests.vllm_cpu import tinyserver
from tests.vllm_cpu.realparser import require_controller_python
from tests.vllm_cpu.tinyserver import TinyServer, alive, ensure_tiny_model, start_tiny_server

pytestmark = pytest.mark.vllm

SERVED = "tiny"
INTERVAL, TIMEOUT, MISSES = 2, 2, 3
BOUND = MISSES * INTERVAL + TIMEOUT  # plan.watchdog.WatchdogPlan.restart_bound for these values
SLACK = 6  # python start-up of the restart command, a loaded 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    python = require_controller_python()
    model = ensure_tiny_model(python)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tinyserver, "CPU_ENV", {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})  # the engine core apart
        srv = start_tiny_server(python, model, tmp_path_factory.mktemp("vllm"), served_name=SERVED,
                                api_key=secrets.token_hex(16))
    yield srv
    srv.stop()


def engine_core(server: TinyServer) -> int:
    """The pid of the server's engine core process, found by its title among the server's children."""
    for pid in server.children:
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("VLLM::EngineCor"):  # comm keeps 15 characters
                return pid
        except OSError:
            continue
    raise AssertionError(f"no VLLM::EngineCore among the children {server.children} of {server.proc.pid}")


def probes(wd: Watchdog) -> float:
    return wd.metric("vllm_watchdog_last_probe_timestamp_seconds") or 0.0


def test_hung_engine_with_healthy_api_server_is_restarted_once(server: TinyServer, tmp_path: Path) -> None:
    engine = engine_core(server)
    status, body = server.request("/v1/completions", {"model": SERVED, "prompt": "Hi", "max_tokens": 1})
    assert status == 200, body  # warm: the first request of a fresh server is slower than the deadline allows
    header = tmp_path / "api-key.header"
    header.write_text(f"Authorization: Bearer {server.api_key}\n")
    header.chmod(0o600)
    wd = start_watchdog(tmp_path, server.base, model=SERVED, interval=INTERVAL, timeout=TIMEOUT, misses=MISSES,
                        key_header_file=header,
                        restart_command=recorder_command(tmp_path / "restart-calls",
                                                         f"import os, signal; os.kill({engine}, signal.SIGCONT)"))
    try:
        # Healthy: three probes answered, nothing missed or restarted.
        wait_for(lambda: probes(wd) > 0, 20, "a probe", wd)
        first = probes(wd)
        wait_for(lambda: probes(wd) >= first + 2 * INTERVAL - 0.5, 20, "two more probes", wd)
        assert wd.metric("vllm_watchdog_consecutive_misses") == 0
        assert wd.metric("vllm_watchdog_restarts_total") == 0 and wd.restarts() == []
        assert "missed" not in wd.output(), wd.output()
        assert wd.metric("vllm_watchdog_last_probe_seconds") < TIMEOUT

        # Hung: the engine core stopped, the API server still says healthy.
        os.kill(engine, signal.SIGSTOP)
        hung_at = time.monotonic()
        status, _ = server.request("/health", key=None, timeout=5)
        assert status == 200, "the hung-engine case: /health answers while nothing decodes"
        wait_for(lambda: wd.restarts(), BOUND + SLACK, f"a restart within {BOUND} + {SLACK} s", wd)
        took = time.monotonic() - hung_at
        wait_for(lambda: "restarted by the watchdog" in wd.output(), 20, "the restart's end", wd)
        out = wd.output()
        assert (f"vllm-a: engine hung: {MISSES} one-token completions in a row got no answer within {TIMEOUT} s "
                "while /health answered 200; restarting") in out, out
        assert wd.metric("vllm_watchdog_restarts_total") == 1
        print(f"restarted {took:.1f} s after the engine hung (bound {BOUND} s)")

        # Answering again (the engine continued): probed on, never restarted twice.
        restarted_at = probes(wd)
        wait_for(lambda: probes(wd) >= restarted_at + 2 * INTERVAL and
                 wd.metric("vllm_watchdog_consecutive_misses") == 0, 30, "good probes after the restart", wd)
        assert wd.restarts() == ["restart"], "exactly one restart"
        assert wd.metric("vllm_watchdog_restarts_total") == 1
        assert server.api_key not in wd.output()
    finally:
        if alive(engine):
            os.kill(engine, signal.SIGCONT)
        wd.stop()
