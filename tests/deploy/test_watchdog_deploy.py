"""The watchdog stage through the real pyinfra CLI on a recorded GPU server (@fake connector).

What the deploy uploads is kept by tests/fakerun.py: the script, its config and its unit are
checked as they would land on the host; switched off, nothing of it is uploaded, and a host that
had it gets it stopped and disabled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plan.host import HostPlan
from tests.deploy.fakeserver import host_plan_for, run_fake_deploy, serving_responses

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "h100-x1-ubuntu2404"
TWO = {"model": "Qwen/Qwen3-8B", "vllm_max_model_len": 8192, "vllm_instances": [
    {"name": "a", "port": 8001, "gpus": [0], "gpu_memory_utilization": 0.45},
    {"name": "b", "port": 8002, "gpus": [0], "gpu_memory_utilization": 0.45},
]}
UNIT = "/etc/systemd/system/vllm-watchdog.service"
METRICS = "/var/lib/prometheus/node-exporter/vllm_watchdog.prom"


def _responses(plan: HostPlan) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for instance in plan.instances:
        responses.update(serving_responses(instance))
    return responses


def _stat(path: str) -> list[str]:
    """What pyinfra's File fact reads from `stat` for a present root file."""
    return [f"user=root group=root mode=-rw-r--r-- atime=1700000000 mtime=1700000000 ctime=1700000000 size=64 "
            f"'{path}'"]


def _deploy(tmp_path: Path, data: dict[str, Any], extra: dict[str, Any] | None = None) -> tuple[str, Path]:
    plan = host_plan_for(PROFILE, {**TWO, "vllm_watchdog": True})
    responses = {**(extra or {}), **_responses(plan)}
    proc, out = run_fake_deploy(tmp_path, PROFILE, {**TWO, **data, "fake_responses": responses}, None)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr, out


def test_deploy_uploads_script_config_and_unit_and_starts_the_watchdog(tmp_path: Path) -> None:
    output, out = _deploy(tmp_path, {"vllm_watchdog_interval": 20, "vllm_watchdog_misses": 2})
    plan = host_plan_for(PROFILE, {**TWO, "vllm_watchdog_interval": 20, "vllm_watchdog_misses": 2})
    files = out / "files"
    config = json.loads((files / "etc/vllm/watchdog.json").read_text())
    assert config == plan.watchdog.config()
    assert [i["completion_url"] for i in config["instances"]] == ["http://127.0.0.1:8001/v1/completions",
                                                                  "http://127.0.0.1:8002/v1/completions"]
    assert {(i["interval"], i["misses"]) for i in config["instances"]} == {(20, 2)}
    assert config["key_header_file"] == "/etc/vllm/api-key.header"
    key = (files / "etc/vllm/api-key.header").read_text().split("Bearer ", 1)[1].strip()
    assert key not in (files / "etc/vllm/watchdog.json").read_text()
    assert (files / "usr/local/lib/vllm-deploy/vllm_watchdog.py").read_bytes() == \
        (ROOT / "remote/vllm_watchdog.py").read_bytes()
    unit = (files / UNIT.lstrip("/")).read_text()
    assert ("ExecStart=/usr/bin/python3 /usr/local/lib/vllm-deploy/vllm_watchdog.py --config "
            "/etc/vllm/watchdog.json\n") in unit
    commands = (out / "commands.txt").read_text()
    assert "chmod 600 /etc/vllm/watchdog.json" in commands
    assert "chown root:root /etc/vllm/watchdog.json" in commands
    for command in ("systemctl daemon-reload", "systemctl start vllm-watchdog.service",
                    "systemctl enable vllm-watchdog.service"):
        assert command in commands, command
    assert "python3 for the watchdog" not in output, "python3 is installed (dpkg facts): no apt run"
    # The stage runs after the instances started and were verified (deploy.py's order).
    assert output.index("vLLM serving 'Qwen3-8B'") < output.index("Watchdog config")
    assert "watchdog vllm-a, vllm-b: one-token completion every 20 s" in output


def test_switched_off_nothing_is_uploaded_or_started(tmp_path: Path) -> None:
    _, out = _deploy(tmp_path, {"vllm_watchdog": False})
    assert not (out / "files/etc/vllm/watchdog.json").exists()
    assert not (out / "files" / UNIT.lstrip("/")).exists()
    assert not (out / "files/usr/local/lib/vllm-deploy/vllm_watchdog.py").exists()
    commands = (out / "commands.txt").read_text()
    assert "systemctl stop vllm-watchdog" not in commands and "systemctl disable vllm-watchdog" not in commands, \
        "a host that never had it sees no change"
    assert f"rm -f {METRICS}" not in commands


def test_switched_off_on_a_host_that_had_it_stops_and_disables_it(tmp_path: Path) -> None:
    had_it = {
        f"test -e {UNIT}": _stat(UNIT),
        f"test -e {METRICS}": _stat(METRICS),
        "--property SubState": ["Id=vllm-watchdog.service", "SubState=running"],
        "--property UnitFileState": ["Id=vllm-watchdog.service", "UnitFileState=enabled"],
    }
    _, out = _deploy(tmp_path, {"vllm_watchdog": False}, had_it)
    commands = (out / "commands.txt").read_text()
    assert "systemctl stop vllm-watchdog.service" in commands
    assert "systemctl disable vllm-watchdog.service" in commands
    assert commands.index("systemctl stop vllm-watchdog.service") < commands.index(f"rm -f {METRICS}"), \
        "stopped first, then its last metrics file removed (no alert for a watchdog switched off on purpose)"
    assert not (out / "files/etc/vllm/watchdog.json").exists()
