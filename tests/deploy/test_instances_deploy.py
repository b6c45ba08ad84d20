"""Several instances on one recorded GPU server, through the real pyinfra CLI (@fake connector)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.fakeserver import host_plan_for, plan_for, run_fake_deploy, serving_responses

ROOT = Path(__file__).resolve().parents[2]

SHARED = {"model": "Qwen/Qwen3-8B", "vllm_max_model_len": 8192, "vllm_instances": [
    {"name": "a", "port": 8001, "gpus": [0], "gpu_memory_utilization": 0.45},
    {"name": "b", "port": 8002, "gpus": [0], "gpu_memory_utilization": 0.45},
]}


def _responses(plan) -> dict:
    responses: dict = {}
    for instance in plan.instances:
        responses.update(serving_responses(instance))
    return responses


def test_two_instances_on_one_gpu_render_ordered_units_and_roll_one_at_a_time(tmp_path: Path) -> None:
    plan = host_plan_for("h100-x1-ubuntu2404", SHARED)
    proc, out = run_fake_deploy(tmp_path, "h100-x1-ubuntu2404", {**SHARED, "fake_responses": _responses(plan)},
                                None)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    unit_a = (out / "files/etc/systemd/system/vllm-a.service").read_text()
    unit_b = (out / "files/etc/systemd/system/vllm-b.service").read_text()
    assert "vllm-a.service" not in unit_a.split("[Service]")[0]
    assert "After=network-online.target vllm-a.service" in unit_b, "b starts once a holds its memory"
    for unit, port in ((unit_a, 8001), (unit_b, 8002)):
        assert (f"ExecStartPost=/usr/bin/timeout {plan.first.verify_timeout} /bin/sh -c "
                f'"until curl -sf -m 5 -o /dev/null http://127.0.0.1:{port}/health;') in unit
        assert f"TimeoutStartSec={plan.first.verify_timeout + 60}\n" in unit, "a hung start fails, not blocks b"
        assert "EnvironmentFile=/etc/vllm/api-key.env" in unit
    assert "CUDA_VISIBLE_DEVICES=0\n" in (out / "files/etc/vllm/vllm-b.env").read_text()
    key = (out / "files/etc/vllm/api-key.env").read_text()
    assert key.startswith("VLLM_API_KEY=sk-vllm-")
    assert key.split("=", 1)[1].strip() not in proc.stdout + proc.stderr + (out / "commands.txt").read_text()
    # Rolling: a is started and serves before anything of b is rendered or started.
    output = proc.stdout + proc.stderr
    order = [output.index(marker) for marker in (
        "vllm-a: start and verify", "vLLM serving 'Qwen3-8B'", "vllm-b: unit", "vllm-b: start and verify")]
    assert output.count("vLLM serving 'Qwen3-8B'") == 2
    assert order == sorted(order), output[-4000:]


def _refused_before_any_change(tmp_path: Path, **second: object) -> str:
    """Deploy SHARED with instance b changed by `second`; the run must fail having changed nothing."""
    data = json.loads(json.dumps(SHARED))
    data["vllm_instances"][1].update(second)
    proc, out = run_fake_deploy(tmp_path, "h100-x1-ubuntu2404", data, None)
    assert proc.returncode != 0
    log = out / "commands.txt"  # absent when the settings were refused before the host was asked anything
    commands = log.read_text() if log.exists() else ""
    for change in ("apt-get install", "apt-get update", "useradd ", "daemon-reload", "systemctl restart"):
        assert change not in commands, change
    assert not (out / "files").exists()
    return proc.stdout + proc.stderr


def test_over_committed_gpu_is_refused_before_any_change(tmp_path: Path) -> None:
    output = _refused_before_any_change(tmp_path, gpu_memory_utilization=0.6)
    assert "GPU 0 is over-committed: a 0.45 + b 0.6" in output


def test_two_instances_on_one_port_are_refused_before_any_change(tmp_path: Path) -> None:
    output = _refused_before_any_change(tmp_path, port=8001)
    assert "vllm_instances[1] (b).port: 8001 is already the port of instance 'a'" in output


@pytest.mark.parametrize("running", [False, True])
def test_new_instances_start_on_every_host_at_once_running_ones_restart_in_turn(tmp_path: Path,
                                                                                 running: bool) -> None:
    """A cold fleet starts all its hosts' vLLM together (nothing serves yet, so nothing is kept up); a restart
    of running instances stays one at a time across the deployment, so the gateway keeps the others."""
    profile, data = "4090-x2-ubuntu2204", {"model": "Qwen/Qwen3-8B"}
    responses = serving_responses(plan_for(profile, data))
    if running:  # pyinfra's SystemdStatus fact; the fake files always differ, so the running units restart
        responses["--property SubState"] = ["Id=vllm.service", "SubState=running"]
    lines = ["import sys", f"sys.path.insert(0, {str(ROOT)!r})", "from tests.fakehosts import fake_host_data",
             "hosts = ["]
    for name in ("gpu-a", "gpu-b"):
        host = {**data, "vllm_api_key_file": str(tmp_path / "test.key"), "fake_responses": responses}
        lines.append(f"    ('@fake/{name}', fake_host_data({profile!r}, 'converged', {host!r})),")
    (tmp_path / "inventory.py").write_text("\n".join([*lines, "]"]) + "\n")
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp_path / "out"),
                           str(tmp_path / "inventory.py"), "deploy.py", "-y"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    serial = "Starting serial operation: vLLM instances | vllm: restart and verify (one instance at a time)"
    together = "Starting operation: vLLM instances | vllm: start and verify"
    assert (serial in output, together in output) == ((True, False) if running else (False, True)), output[-3000:]
    assert output.count("vLLM serving 'Qwen3-8B'") == 2


@pytest.mark.parametrize("state", ["activating", "inactive"])
def test_a_port_held_by_the_instances_own_starting_unit_is_not_another_programs(tmp_path: Path, state: str) -> None:
    """A re-run while the instance starts or crash-loops (systemd's ActiveState `activating`: the health wait, a
    pending restart) finds its listener, or its container's docker-proxy, on the port: that is the unit's own. The
    same listener with the unit inactive is another program's, and the deploy is refused before any change."""
    profile, data = "debian12-cpu", {"model": "Qwen/Qwen3-0.6B", "vllm_device": "cpu"}
    responses = serving_responses(plan_for(profile, data))
    responses["ss -ltnH"] = ["LISTEN 0      4096         0.0.0.0:8000       0.0.0.0:*"]
    responses["--property ActiveState"] = ["Id=vllm.service", f"ActiveState={state}"]
    host = {**data, "vllm_api_key_file": str(tmp_path / "test.key"), "fake_responses": responses}
    lines = ["import sys", f"sys.path.insert(0, {str(ROOT)!r})", "from tests.fakehosts import fake_host_data",
             f"hosts = [('@fake/cpu', fake_host_data({profile!r}, 'converged', {host!r}))]"]
    (tmp_path / "inventory.py").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp_path / "out"),
                           str(tmp_path / "inventory.py"), "deploy.py", "-y"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    refused = "vllm_port: 8000 is already in use by another program" in output
    assert (proc.returncode == 0, refused) == ((True, False) if state == "activating" else (False, True)), \
        output[-3000:]
