"""The watchdog: its plan, config and unit, and the host script's rules against a loopback stand-in for vLLM.

The script (remote/vllm_watchdog.py) runs here as the deploy runs it, as its own process with a
config; the stand-in answers as the config's mode file says (`ok`, `hang`, `401`), and the
state and restart commands are small recorders, so every rule is seen from outside: what was
probed, what was restarted, what the journal lines and the metrics file say. The real hung
engine (a SIGSTOPped vLLM engine core) is tests/vllm_cpu/test_watchdog_real.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.util import get_template

from plan.host import HostPlan
from plan.watchdog import WatchdogPlan
from tests.deploy.fakeserver import host_plan_for
from tests.plan.test_quoting import _as_parsed, _dump_commands, _dump_fields, _systemd_test

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "remote" / "vllm_watchdog.py"
UNIT_TEMPLATE = ROOT / "templates" / "vllm-watchdog.service.j2"
QWEN = {"model": "Qwen/Qwen3-8B", "vllm_max_model_len": 8192}
TWO = {**QWEN, "vllm_instances": [
    {"name": "a", "port": 8001, "gpus": [0], "gpu_memory_utilization": 0.45},
    {"name": "b", "port": 8002, "gpus": [0], "gpu_memory_utilization": 0.45},
]}


def _plan(**data: Any) -> HostPlan:
    return host_plan_for("h100-x1-ubuntu2404", {**TWO, **data})


# ---- plan -------------------------------------------------------------------------------------

def test_each_instance_is_probed_on_loopback_with_its_served_name_and_the_settings() -> None:
    plan = _plan(vllm_watchdog_interval=20, vllm_watchdog_timeout=7, vllm_watchdog_misses=4)
    w = plan.watchdog
    assert w is not None
    config = json.loads(w.config_json())
    assert config == w.config(), "the file is json.dumps of the plan's config"
    a, b = config["instances"]
    assert (a["unit"], b["unit"]) == ("vllm-a", "vllm-b")
    # vllm_host 0.0.0.0: probed on loopback, at each instance's own port.
    assert a["completion_url"] == "http://127.0.0.1:8001/v1/completions"
    assert b["health_url"] == "http://127.0.0.1:8002/health"
    assert a["model"] == plan.instances[0].served_name == "Qwen3-8B"
    assert (a["interval"], a["timeout"], a["misses"]) == (20, 7, 4)
    assert a["state_command"] == ["systemctl", "show", "--property=ActiveState", "--value", "vllm-a.service"]
    assert a["restart_commands"] == [["systemctl", "kill", "--signal=SIGKILL", "vllm-a.service"],
                                     ["systemctl", "restart", "vllm-a.service"]]
    # A restart may take the unit's whole stop and start (its health wait) before it counts as stuck.
    assert a["restart_timeout"] == plan.instances[0].stop_timeout + plan.instances[0].start_timeout
    assert config["key_header_file"] == "/etc/vllm/api-key.header" == plan.key_header_file
    assert config["metrics_file"] == "/var/lib/prometheus/node-exporter/vllm_watchdog.prom"
    assert config["state_dir"] == "/var/lib/vllm-watchdog"
    assert w.script == "/usr/local/lib/vllm-deploy/vllm_watchdog.py"
    assert w.config_file == "/etc/vllm/watchdog.json"


def test_the_key_itself_is_in_no_plan_output() -> None:
    plan = _plan()
    assert plan.api_key and plan.watchdog is not None
    for text in (plan.watchdog.config_json(), json.dumps(plan.to_dict()), plan.summary()):
        assert plan.api_key not in text
    assert _plan(vllm_require_api_key=False).watchdog.key_header_file is None


def test_a_container_is_killed_by_docker_before_the_unit_restarts() -> None:
    w = host_plan_for("h100-x1-ubuntu2404", {**QWEN, "vllm_runtime": "docker"}).watchdog
    assert w.config()["instances"][0]["restart_commands"] == [
        ["docker", "kill", "--signal=KILL", "vllm"], ["systemctl", "kill", "--signal=SIGKILL", "vllm.service"],
        ["systemctl", "restart", "vllm.service"]]


def test_a_listen_address_of_its_own_is_probed_there_ipv6_bracketed() -> None:
    w = host_plan_for("h100-x1-ubuntu2404", {**QWEN, "vllm_host": "::1"}).watchdog
    assert w.config()["instances"][0]["completion_url"] == "http://[::1]:8000/v1/completions"


@pytest.mark.parametrize(("interval", "timeout", "misses", "bound"), [
    (15, 10, 3, 55),   # misses x interval + timeout
    (5, 12, 3, 41),    # a deadline past the interval: each miss takes the deadline, not the interval
    (10, 10, 1, 20),
])
def test_restart_bound(interval: int, timeout: int, misses: int, bound: int) -> None:
    plan = _plan(vllm_watchdog_interval=interval, vllm_watchdog_timeout=timeout, vllm_watchdog_misses=misses)
    assert plan.watchdog.restart_bound == bound
    assert f"within {bound} s of a hang" in plan.summary()
    assert plan.to_dict()["watchdog"]["restart_bound"] == bound


def test_off_switch() -> None:
    plan = _plan(vllm_watchdog=False)
    assert plan.watchdog is None
    assert plan.to_dict()["watchdog"] is None
    assert "watchdog" not in plan.summary()


# ---- unit -------------------------------------------------------------------------------------

@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory systemd's unprivileged test mode can read (as in test_quoting)."""
    path = Path(tempfile.mkdtemp(prefix="vllm-deploy-watchdog-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _unit(w: WatchdogPlan) -> str:
    return get_template(str(UNIT_TEMPLATE)).render(w=w)


def test_unit_runs_the_script_with_its_config_sandboxed(world_dir: Path) -> None:
    w = _plan().watchdog
    (world_dir / "vllm-watchdog.service").write_text(_unit(w))
    block, complaints = _systemd_test(world_dir, "vllm-watchdog.service")
    assert complaints == "", "systemd understood every line"
    assert _dump_commands(block, "ExecStart") == [
        ["/usr/bin/python3", "/usr/local/lib/vllm-deploy/vllm_watchdog.py", "--config", "/etc/vllm/watchdog.json"]]
    assert _dump_fields(block, "ReadWritePaths") == ["-/var/lib/prometheus/node-exporter"]
    text = _unit(w)
    for line in ("NoNewPrivileges=true", "ProtectSystem=strict", "ProtectHome=true", "PrivateTmp=true",
                 "StateDirectory=vllm-watchdog", "Restart=always", "After=network-online.target vllm-a.service "
                 "vllm-b.service"):
        assert f"\n{line}\n" in text, line
    assert "User=" not in text, "root: it calls systemctl and reads the 0600 key header file"


def test_unit_keeps_hostile_paths_whole(world_dir: Path) -> None:
    w = dataclasses.replace(_plan().watchdog, remote_dir="/opt/my lib/%h/$HOME", config_file='/etc/a "b".json',
                            textfile_dir="/var/lib/text files/100%")
    (world_dir / "w.service").write_text(_unit(w))
    block, complaints = _systemd_test(world_dir, "w.service")
    assert complaints == ""
    assert _dump_commands(block, "ExecStart") == [_as_parsed(
        ["/usr/bin/python3", "/opt/my lib/%h/$HOME/vllm_watchdog.py", "--config", '/etc/a "b".json'])]
    assert _dump_fields(block, "ReadWritePaths") == ["-/var/lib/text files/100%"]


# ---- the host script against a loopback stand-in ----------------------------------------------

class StandIn:
    """A loopback vLLM stand-in: /v1/completions answers as the `mode` file says, /health always 200."""

    def __init__(self, tmp: Path) -> None:
        self.mode_file = tmp / "mode"
        self.mode_file.write_text("ok")
        self.completions: list[dict[str, str | None]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the prober gave up

            def do_GET(self) -> None:
                self._reply(200, {})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = stand_in.mode_file.read_text().strip()
                stand_in.completions.append({"mode": mode, "auth": self.headers.get("Authorization")})
                if mode == "hang":
                    time.sleep(2)
                if mode == "401":
                    self._reply(401, {"error": "unauthorized"})
                else:
                    self._reply(200, {"choices": [{"text": " x"}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class Watchdog:
    """The script running as its own process, and where it leaves its traces."""

    proc: subprocess.Popen
    log: Path
    metrics: Path
    calls: Path
    state_dir: Path

    def output(self) -> str:
        return self.log.read_text()

    def metric(self, name: str, unit: str = "vllm-a") -> float | None:
        text = self.metrics.read_text() if self.metrics.exists() else ""
        label = "" if name == "vllm_watchdog_up" else f'{{unit="{unit}"}}'
        found = re.search(rf"^{re.escape(name + label)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    def restarts(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def stop(self) -> int:
        """SIGTERM to its pid (a clean stop), SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def recorder_command(calls: Path, then: str = "", word: str = "restart") -> list[str]:
    """A restart command that appends `word` as a line to `calls`, then runs the Python statement `then`."""
    return [sys.executable, "-c", f"import sys; open(sys.argv[1], 'a').write('{word}\\n'); {then}", str(calls)]


def start_watchdog(tmp: Path, base: str, *, model: str = "tiny", interval: float = 0.6, timeout: float = 0.5,
                   misses: int = 2, state_command: list[str] | None = None, restart_then: str = "",
                   restart_command: list[str] | None = None, key_header_file: Path | None = None,
                   revive_then: str = "", revive_after: float = 1.0) -> Watchdog:
    """Run remote/vllm_watchdog.py on a config like the plan's, with recorders for systemctl."""
    calls = tmp / "restart-calls"
    config = {
        "version": 1,
        "key_header_file": str(key_header_file) if key_header_file else None,
        "state_dir": str(tmp / "state"),
        "metrics_file": str(tmp / "textfile" / "vllm_watchdog.prom"),
        "instances": [{
            "unit": "vllm-a", "model": model, "prompt": "Hi",
            "completion_url": f"{base}/v1/completions", "health_url": f"{base}/health",
            "timeout": timeout, "health_timeout": min(timeout, 1.0), "misses": misses, "interval": interval,
            "state_command": state_command or ["echo", "active"],
            "restart_commands": [restart_command or recorder_command(calls, restart_then)],
            "restart_timeout": 60,
            "revive_commands": [recorder_command(calls, revive_then, word="revive")],
            "revive_after": revive_after, "revive_max": 4 * revive_after,
        }],
    }
    (tmp / "watchdog.json").write_text(json.dumps(config))
    log = tmp / "watchdog.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(tmp / "watchdog.json")],
                                stdout=out, stderr=subprocess.STDOUT)
    return Watchdog(proc=proc, log=log, metrics=tmp / "textfile" / "vllm_watchdog.prom", calls=calls,
                    state_dir=tmp / "state")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, watchdog: Watchdog | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}" + (f"\n{watchdog.output()}" if watchdog else ""))


@pytest.fixture
def stand_in(tmp_path: Path) -> Iterator[StandIn]:
    server = StandIn(tmp_path)
    yield server
    server.close()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Watchdog]]:
    """Watchdogs a test started; each stopped by its pid afterwards."""
    running: list[Watchdog] = []
    yield running
    for watchdog in running:
        watchdog.stop()


def test_hung_engine_is_restarted_once_with_the_reason_then_watched_again(
        tmp_path: Path, stand_in: StandIn, started: list[Watchdog]) -> None:
    # The "restart" cures the stand-in, as a fresh vLLM would answer again.
    wd = start_watchdog(tmp_path, stand_in.base, restart_then=f"open({str(stand_in.mode_file)!r}, 'w').write('ok')")
    started.append(wd)
    wait_for(lambda: len(stand_in.completions) >= 2 and wd.metric("vllm_watchdog_last_probe_seconds") is not None,
             10, "two good probes", wd)
    assert wd.restarts() == [] and wd.metric("vllm_watchdog_consecutive_misses") == 0
    assert wd.metric("vllm_watchdog_up") == 1 and wd.metric("vllm_watchdog_restarts_total") == 0
    stand_in.mode_file.write_text("hang")
    wait_for(lambda: "restarted by the watchdog" in wd.output(), 10, "a restart", wd)
    assert wd.restarts() == ["restart"]
    out = wd.output()
    assert ("<4>vllm-a: probe missed (1/2): no answer within 0.5 s; /health: 200\n"
            "<3>vllm-a: engine hung: 2 one-token completions in a row got no answer within 0.5 s while /health "
            "answered 200; restarting\n") in out
    assert wd.metric("vllm_watchdog_restarts_total") == 1
    assert json.loads((wd.state_dir / "restarts.json").read_text()) == {"vllm-a": 1}
    n = len(stand_in.completions)
    wait_for(lambda: len(stand_in.completions) >= n + 3, 10, "three more probes", wd)
    assert wd.restarts() == ["restart"], "answering again, it is not restarted again"
    assert wd.metric("vllm_watchdog_consecutive_misses") == 0
    assert wd.stop() == 0
    assert wd.metric("vllm_watchdog_up") == 0, "a clean stop says so"


def test_a_refused_probe_is_a_config_problem_not_a_miss(
        tmp_path: Path, stand_in: StandIn, started: list[Watchdog]) -> None:
    stand_in.mode_file.write_text("401")
    wd = start_watchdog(tmp_path, stand_in.base, misses=1)
    started.append(wd)
    wait_for(lambda: len(stand_in.completions) >= 4, 10, "four probes", wd)
    assert wd.restarts() == []
    assert wd.output().count("refused with HTTP 401") == 1, "said once, not every interval"
    assert wd.metric("vllm_watchdog_consecutive_misses") == 0


def test_a_unit_that_is_not_active_is_not_probed(tmp_path: Path, stand_in: StandIn, started: list[Watchdog]) -> None:
    state = tmp_path / "unit-state"
    state.write_text("activating\n")
    stand_in.mode_file.write_text("hang")
    wd = start_watchdog(tmp_path, stand_in.base, misses=1, state_command=["cat", str(state)])
    started.append(wd)
    wait_for(lambda: "unit is activating; not probed until it is active" in wd.output(), 10, "the state line", wd)
    time.sleep(2)  # several intervals
    assert stand_in.completions == [] and wd.restarts() == []
    assert wd.metric("vllm_watchdog_consecutive_misses") == 0
    stand_in.mode_file.write_text("ok")
    state.write_text("active\n")
    wait_for(lambda: len(stand_in.completions) >= 1, 10, "a probe once active", wd)
    assert "vllm-a: unit is active; probing every 0.6 s" in wd.output()


def test_a_failed_unit_is_started_again_after_its_wait_an_inactive_one_is_left_alone(
        tmp_path: Path, stand_in: StandIn, started: list[Watchdog]) -> None:
    """systemd gave up (start limit): the watchdog starts the unit again; an operator's stop it leaves alone."""
    state, after_start = tmp_path / "unit-state", tmp_path / "state-after-start"
    state.write_text("inactive\n")
    after_start.write_text("active\n")
    start = f"open({str(state)!r}, 'w').write(open({str(after_start)!r}).read())"
    wd = start_watchdog(tmp_path, stand_in.base, state_command=["cat", str(state)], revive_then=start,
                        revive_after=1.0)
    started.append(wd)
    wait_for(lambda: "unit is inactive; not probed until it is active" in wd.output(), 10, "the state line", wd)
    time.sleep(2)  # longer than the revive wait: an inactive unit was stopped on purpose
    assert wd.restarts() == [] and stand_in.completions == []
    state.write_text("failed\n")
    wait_for(lambda: "started again by the watchdog" in wd.output(), 10, "the revival", wd)
    out = wd.output()
    assert "<4>vllm-a: unit failed (systemd stopped restarting it); starting it again in 1 s" in out, out
    assert "<3>vllm-a: failed for 1 s; starting it again (systemctl reset-failed, then start)" in out, out
    assert wd.restarts() == ["revive"] and wd.metric("vllm_watchdog_restarts_total") == 1
    wait_for(lambda: len(stand_in.completions) >= 1, 10, "probed once active", wd)
    # A start that fails again: the next wait doubles (2 s, then 4 s, the most here), so a unit that cannot run
    # is not started in a loop.
    after_start.write_text("failed\n")
    state.write_text("failed\n")
    wait_for(lambda: "starting it again in 4 s" in wd.output(), 20, "the doubled waits", wd)
    assert "starting it again in 2 s" in wd.output() and wd.restarts() == ["revive"] * 3


def test_the_restart_counter_survives_a_restart_of_the_watchdog(
        tmp_path: Path, stand_in: StandIn, started: list[Watchdog]) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "restarts.json").write_text('{"vllm-a": 4}\n')
    wd = start_watchdog(tmp_path, stand_in.base, restart_then=f"open({str(stand_in.mode_file)!r}, 'w').write('ok')")
    started.append(wd)
    wait_for(lambda: wd.metric("vllm_watchdog_restarts_total") == 4, 10, "the saved count exported", wd)
    stand_in.mode_file.write_text("hang")
    wait_for(lambda: "restarted by the watchdog" in wd.output(), 10, "one more restart", wd)
    assert "vllm-a: restarted by the watchdog (restart 5)" in wd.output()
    assert wd.metric("vllm_watchdog_restarts_total") == 5
    assert json.loads((tmp_path / "state" / "restarts.json").read_text()) == {"vllm-a": 5}


def test_the_key_is_read_from_its_file_sent_as_the_header_and_never_shown(
        tmp_path: Path, stand_in: StandIn, started: list[Watchdog]) -> None:
    key = "sk-watchdog-test-0123456789"
    header = tmp_path / "api-key.header"
    header.write_text(f"Authorization: Bearer {key}\n")
    wd = start_watchdog(tmp_path, stand_in.base, key_header_file=header)
    started.append(wd)
    wait_for(lambda: len(stand_in.completions) >= 1, 10, "a probe", wd)
    assert stand_in.completions[0]["auth"] == f"Bearer {key}"
    assert key not in (tmp_path / "watchdog.json").read_text()
    assert key not in " ".join(wd.proc.args)
    header.write_text("Authorization: Bearer sk-rotated\n")
    n = len(stand_in.completions)
    wait_for(lambda: len(stand_in.completions) > n + 1, 10, "probes after the key changed", wd)
    assert stand_in.completions[-1]["auth"] == "Bearer sk-rotated", "a new key needs no watchdog restart"
    wd.stop()
    assert key not in wd.output()
