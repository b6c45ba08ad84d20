"""`pyinfra INVENTORY deploy.py --dry` on the seeds' servers: the plan and the changes are printed, nothing runs.

A dry run is how an operator previews a first deploy or a mirror switch, so it must show the same plan
the real run applies (computed here in-process from the same recorded facts), list the operations that
would change the host, and execute nothing but fact commands. The same patterns are checked against a
real (`-y`) run of the same host, so a pattern that could never match cannot make the dry check pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyinfra.context import ctx_host, ctx_state

from facts.commands import DRIVER_CHECK
from facts.gather import gather_host_facts
from plan.driver import DriverPlan, plan_driver
from plan.service import ServicePlan
from plan.settings import load_instances
from tests.deploy.fakeserver import ROOT, plan_for, serving_responses
from tests.deploy.test_fake_deploy import SEED_000
from tests.fakehosts import fake_host_data, make_fake_state, recorded_outputs, write_inventory

# Commands that change a host; under --dry none may run (fact commands such as `command -v useradd` may).
CHANGE_COMMANDS = {
    "apt-get install": re.compile(r"\bapt-get\b.*\binstall\b"),
    "apt-get update": re.compile(r"\bapt-get\b.*\bupdate\b"),
    "useradd": re.compile(r"\buseradd\s+-"),
    "systemctl restart/start/enable/daemon-reload": re.compile(
        r"\bsystemctl\s+(?:--\S+\s+)*(?:restart|start|stop|enable|daemon-reload|reload)\b"),
    "reboot": re.compile(r"(?:^|[;&|(]\s*)(?:sleep \d+ && )?reboot\b"),
    "pip install": re.compile(r"\bpip\b.*\binstall\b"),
    "move or remove files": re.compile(r"(?:^|[;&|]\s*)(?:mv|rm|install -d|mkdir|chown|chmod)\s"),
    "docker pull": re.compile(r"\bdocker\s+(?:image\s+)?pull\b"),
    "nvidia-ctk": re.compile(r"\bnvidia-ctk\s+runtime\b"),
    "update-initramfs": re.compile(r"\bupdate-initramfs\s+-u\b"),
}


@dataclass(frozen=True)
class Case:
    """One seed server: recorded profile and state, its settings, and what a real run must do there."""

    profile: str
    state: str
    data: dict[str, Any]
    changes: tuple[str, ...]  # operations the dry run must list as changes
    real_commands: tuple[str, ...]  # CHANGE_COMMANDS labels the real run of the same host executes


CASES = {
    # Seed 000's service on the 4x 2080 Ti server, before any NVIDIA driver (venv runtime).
    "2080ti-nodriver-seed000": Case(
        "2080ti-x4-ubuntu2404", "nodriver", {**SEED_000, "nvidia_driver_reboot_delay": 1},
        ("NVIDIA driver | NVIDIA driver 570 and kernel headers",
         "NVIDIA driver | Reboot to load the NVIDIA kernel module",
         "Install vLLM (venv runtime) | Service user vllm",
         "Install vLLM (venv runtime) | Install vllm==0.32.0",
         "vLLM instances | vllm: unit"),
        ("apt-get install", "useradd", "reboot", "pip install", "update-initramfs",
         "systemctl restart/start/enable/daemon-reload"),
    ),
    # The 2x 4090 workstation (seed 001's tuna sources) switched to the docker runtime through aliyun.
    "4090-docker-aliyun": Case(
        "4090-x2-ubuntu2204", "converged", {"model": "Qwen/Qwen3-8B", "vllm_runtime": "docker",
                                            "mirror_preset": "aliyun"},
        ("apt sources | apt sources from the mirror preset",
         "Install vLLM (docker runtime) | Docker engine and NVIDIA container toolkit",
         "Install vLLM (docker runtime) | nvidia runtime in daemon.json",
         "Install vLLM (docker runtime) | Image vllm/vllm-openai:v0.32.0",
         "vLLM instances | vllm: unit"),
        ("apt-get install", "apt-get update", "nvidia-ctk", "systemctl restart/start/enable/daemon-reload",
         "docker pull"),
    ),
}


def plans_for(case: Case) -> tuple[ServicePlan, DriverPlan]:
    """The service and driver plans deploy.py prints for this host, computed in-process from the same facts."""
    plan = plan_for(case.profile, case.data, case.state)
    fake = make_fake_state([("h", fake_host_data(case.profile, case.state))])
    host = fake.inventory.get_host("@fake/h")
    with ctx_state.use(fake), ctx_host.use(host):
        settings = load_instances(case.data)[0].settings
        facts = gather_host_facts(host, model_dir=settings.model_dir, ports=[settings.vllm_port])
        return plan, plan_driver(settings, facts, plan.device)


def run_deploy(tmp: Path, case: Case, plan: ServicePlan, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`pyinfra INVENTORY deploy.py ARGS` on the fake host, as an operator types it (no -y unless given)."""
    # After a reboot the driver check answers as the converged recording of the same server does.
    rows = [line.split(", ") for line in recorded_outputs(case.profile, "converged")["gpus"].splitlines() if line]
    responses = {"cut -d. -f1 /proc/uptime": "4242", DRIVER_CHECK: [f"{r[0]}, {r[1]}, {r[7]}" for r in rows],
                 "docker image inspect": "[]", **serving_responses(plan, model_present=False)}
    extra = {"vllm_api_key_file": str(tmp / "api-keys" / "test.key"), **case.data, "fake_responses": responses}
    inventory = write_inventory(tmp / "inventory.py", [("gpu", case.profile, case.state)], extra)
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp / "out"), str(inventory),
                           "deploy.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    return proc, tmp / "out" / "gpu"


def detected_changes(output: str) -> dict[str, tuple[int, int]]:
    """pyinfra's 'Detected changes' table: operation -> (hosts changed, hosts changed conditionally)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "--> Detected changes:"), None)
    assert start is not None, f"no 'Detected changes' table:\n{output[-3000:]}"
    rows: dict[str, tuple[int, int]] = {}
    for line in lines[start + 2:]:
        match = re.match(r"\s+(.+?)\s{2,}(\d+ \(\S+\)|-)\s+(\d+ \(\S+\)|-)\s*$", line)
        if not match:
            break
        rows[match.group(1)] = tuple(0 if cell == "-" else int(cell.split()[0])  # type: ignore[misc]
                                     for cell in match.group(2, 3))
    return rows


def executed(out: Path, labels: tuple[str, ...] = tuple(CHANGE_COMMANDS)) -> dict[str, list[str]]:
    """Commands the fake host ran that match each change pattern (label -> commands)."""
    commands = (out / "commands.txt").read_text().splitlines() if (out / "commands.txt").exists() else []
    found = {label: [c for c in commands if CHANGE_COMMANDS[label].search(c)] for label in labels}
    return {label: hits for label, hits in found.items() if hits}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dry_run_prints_the_plan_and_changes_and_runs_no_change_command(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    plan, driver = plans_for(case)
    proc, out = run_deploy(tmp_path, case, plan, "--dry")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    # The plan, as the real run would apply it.
    sizing = plan.sizing
    assert (f"parallel  tp={sizing['tensor_parallel_size']} pp={sizing['pipeline_parallel_size']}  "
            f"dtype={sizing['dtype']}  max-model-len={plan.max_model_len}") in output
    assert f"command   {plan.shell_command_line}" in output
    for line in driver.summary().splitlines():
        assert line.strip() in output, line
    for setting, flag in (("vllm_tensor_parallel_size", "--tensor-parallel-size"), ("vllm_dtype", "--dtype"),
                          ("vllm_max_model_len", "--max-model-len")):
        if setting in case.data:  # a setting the operator fixed is what the dry run shows
            assert f"{flag} {case.data[setting]} " in plan.command_line + " "

    # The operations that would change the host.
    table = detected_changes(output)
    for operation in case.changes:
        assert table.get(operation, (0, 0))[0] == 1, f"{operation!r} not listed as a change: {sorted(table)}"

    # Nothing but facts ran: no change command, no upload.
    assert executed(out) == {}
    assert not (out / "files").exists(), sorted(str(p) for p in (out / "files").rglob("*"))
    assert "--> Beginning operation run" not in output


def test_seed_000_dry_run_shows_the_driver_install_it_would_do(tmp_path: Path) -> None:
    """The driver plan names the archive's open 570 server driver and headers for the running kernel."""
    case = CASES["2080ti-nodriver-seed000"]
    plan, driver = plans_for(case)
    kernel = recorded_outputs(case.profile, case.state)["kernel"].strip()
    assert driver.installs and driver.changes
    assert f"linux-headers-{kernel}" in driver.packages and "nvidia-driver-570-server-open" in driver.packages
    proc, _ = run_deploy(tmp_path, case, plan, "--dry")
    output = proc.stdout + proc.stderr
    assert f"install linux-headers-{kernel}, nvidia-driver-570-server-open (open kernel modules)" in output
    assert "reboot and continue" in output


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_same_host_without_dry_runs_those_change_commands(tmp_path: Path, name: str) -> None:
    """The control: the patterns the dry run is checked against do match what a real run executes."""
    case = CASES[name]
    plan, _ = plans_for(case)
    proc, out = run_deploy(tmp_path, case, plan, "-y")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert sorted(executed(out, case.real_commands)) == sorted(case.real_commands)
    assert (out / "files" / "etc/systemd/system/vllm.service").is_file()
