"""The NVIDIA driver stage in whole deploys: the real pyinfra CLI runs deploy.py on recorded GPU servers.

The recorded states are the stage's inputs (no driver with nouveau bound, an old driver, the right one,
a pending reboot). After the reboot the fake host answers the stage's nvidia-smi check the way the
converged recording of the same server does, so the run goes on to install and verify vLLM.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from facts.commands import DRIVER_CHECK
from tests.deploy.fakeserver import ROOT, plan_for, serving_responses
from tests.fakehosts import recorded_outputs, write_inventory

MODEL = {"model": "Qwen/Qwen3-8B", "nvidia_driver_reboot_delay": 1}


def _check_rows(profile: str) -> list[str]:
    """What DRIVER_CHECK prints once the driver works: index, name, driver_version of the converged recording."""
    rows = [line.split(", ") for line in recorded_outputs(profile, "converged")["gpus"].splitlines() if line]
    return [f"{row[0]}, {row[1]}, {row[7]}" for row in rows]


def _deploy(tmp: Path, profile: str, state: str, data: dict[str, Any] | None = None,
            after_reboot: list[str] | None = None) -> tuple[subprocess.CompletedProcess, str, Path]:
    """Run deploy.py on one fake host in `state`; returns the run, its commands and its uploaded files."""
    data = {**MODEL, **(data or {})}
    plan = plan_for(profile, data, state)
    responses = {
        "cut -d. -f1 /proc/uptime": "4242",
        DRIVER_CHECK: after_reboot if after_reboot is not None else _check_rows(profile),
        **serving_responses(plan),
    }
    extra = {"vllm_api_key_file": str(tmp / "api-keys" / "test.key"), **data, "fake_responses": responses}
    inventory = write_inventory(tmp / "inventory.py", [("gpu", profile, state)], extra)
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp / "out"), str(inventory),
                           "deploy.py", "-y"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = tmp / "out" / "gpu"
    commands = (out / "commands.txt").read_text() if (out / "commands.txt").exists() else ""
    return proc, commands, out / "files"


def _ok(proc: subprocess.CompletedProcess) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _apt_install_line(commands: str) -> str:
    lines = [line for line in commands.splitlines() if "apt-get" in line and "install" in line and "nvidia" in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_fresh_2080ti_gets_the_driver_reboots_and_goes_on_to_serve(tmp_path: Path) -> None:
    proc, commands, files = _deploy(tmp_path, "2080ti-x4-ubuntu2404", "nodriver")
    output = _ok(proc)
    install = _apt_install_line(commands)
    assert "nvidia-driver-570-server-open" in install and "linux-headers-6.8.0-60-generic" in install
    assert "fabricmanager" not in install, "no NVSwitch on this server"
    blacklist = (files / "etc/modprobe.d/blacklist-nouveau.conf").read_text()
    assert "blacklist nouveau" in blacklist and "options nouveau modeset=0" in blacklist
    order = [commands.index(marker) for marker in (install, "update-initramfs -u",
                                                   "systemctl enable nvidia-persistenced.service",
                                                   "sleep 1 && reboot", DRIVER_CHECK, "pip install vllm==")]
    assert order == sorted(order), "driver, initramfs, persistence, reboot, check, then vLLM"
    assert "driver    install: no working NVIDIA driver (not installed)" in output
    assert "vLLM serving" in output


def test_old_driver_is_upgraded_to_the_pinned_branch(tmp_path: Path) -> None:
    proc, commands, _ = _deploy(tmp_path, "4090-x2-ubuntu2204", "olddriver")
    output = _ok(proc)
    assert "nvidia-driver-570-server-open" in _apt_install_line(commands)
    assert "sleep 1 && reboot" in commands
    assert "upgrade: driver 550.144.03 is older than branch 570" in output
    assert "Secure Boot is on" in output, "this workstation has Secure Boot: the DKMS module must be signed"


@pytest.mark.parametrize(("profile", "data"), [
    ("2080ti-x4-ubuntu2404", {}),
    ("h100-x1-ubuntu2404", {}),
    ("t4-x1-ubuntu2204", {"nvidia_driver_branch": "565", "model": "Qwen/Qwen2.5-3B-Instruct"}),
])
def test_converged_host_gets_no_driver_change(tmp_path: Path, profile: str, data: dict[str, Any]) -> None:
    proc, commands, files = _deploy(tmp_path, profile, "converged", data)
    output = _ok(proc)
    assert "driver    keep:" in output
    assert not [line for line in commands.splitlines() if "nvidia" in line and "apt-get" in line]
    for marker in ("update-initramfs", "reboot", "nvidia-persistenced", DRIVER_CHECK):
        assert marker not in commands, marker
    assert not (files / "etc/modprobe.d").exists()


def test_pending_reboot_reboots_without_reinstalling(tmp_path: Path) -> None:
    proc, commands, _ = _deploy(tmp_path, "2080ti-x4-ubuntu2404", "rebootpending")
    output = _ok(proc)
    assert "reboot: driver 570.153.02 is installed but 535.183.01 is loaded" in output
    assert "sleep 1 && reboot" in commands and DRIVER_CHECK in commands
    assert not [line for line in commands.splitlines() if "apt-get" in line and "nvidia-driver" in line]
    assert "update-initramfs" not in commands


def test_nvswitch_server_gets_open_modules_and_the_fabric_manager(tmp_path: Path) -> None:
    proc, commands, _ = _deploy(tmp_path, "a100sxm-x8-ubuntu2204", "nodriver")
    _ok(proc)
    install = _apt_install_line(commands)
    assert "nvidia-driver-570-server-open" in install and "nvidia-fabricmanager-570" in install
    assert "linux-headers-5.15.0-143-generic" in install
    assert "systemctl enable nvidia-fabricmanager.service" in commands


def test_driver_that_does_not_come_up_fails_the_host_before_vllm(tmp_path: Path) -> None:
    said = ["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the "
            "latest NVIDIA driver is installed and running."]
    proc, commands, _ = _deploy(tmp_path, "h100-x1-ubuntu2404", "nodriver", after_reboot=said)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nvidia-smi lists no GPU after the driver stage" in output and "dkms status" in output
    assert "pip install vllm" not in commands


def test_no_reboot_allowed_stops_after_the_install(tmp_path: Path) -> None:
    proc, commands, _ = _deploy(tmp_path, "t4-x1-ubuntu2204", "nodriver",
                                   {"nvidia_driver_reboot": False, "model": "Qwen/Qwen2.5-3B-Instruct"})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nvidia-driver-570-server-open" in _apt_install_line(commands)
    assert "reboot" not in commands.replace("nvidia_driver_reboot", "")
    assert "nvidia_driver_reboot is False; reboot the host, then deploy again" in output
