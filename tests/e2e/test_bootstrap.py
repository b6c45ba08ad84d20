"""A fresh Debian 12 server bootstrapped for real: venv runtime, vLLM's CPU build, the tiny model.

Real systemd, real SSH, a real vLLM process; the deploy runs through the pyinfra
CLI exactly as a user would run it. One host is deployed once per module and the
tests that follow build on it (re-run, kill -9, reboot).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import RunResult, lab_api_key, lab_host, run_pyinfra

pytestmark = pytest.mark.hosts


def get_json(url: str, payload: dict | None = None, timeout: float = 60) -> dict:
    """A request with the lab's API key, as a client of the deployment would send it."""
    data = json.dumps(payload).encode() if payload else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {lab_api_key()}"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def assert_serving(host: TestHost, served: str = "tiny") -> None:
    """/v1/models from the controller over the lab network, then a real completion."""
    models = get_json(f"http://{host.ip}:8000/v1/models")
    assert [m["id"] for m in models["data"]] == [served]
    assert models["data"][0]["max_model_len"] == 1024
    completion = get_json(f"http://{host.ip}:8000/v1/completions",
                          {"model": served, "prompt": "def main(", "max_tokens": 4})
    assert completion["choices"][0]["text"]


class Deployed:
    def __init__(self, host: TestHost, first: RunResult):
        self.host = host
        self.first = first

    def run(self, deploy: str = "deploy.py", *args: str) -> RunResult:
        return run_pyinfra([lab_host(self.host)], deploy, *args)


@pytest.fixture(scope="module")
def deployed(hostlab: Lab) -> Iterator[Deployed]:
    host = hostlab.add_host("e2e-main")
    first = run_pyinfra([lab_host(host)])
    try:
        yield Deployed(host, first)
    finally:
        host.kill()


def test_fresh_host_is_deployed_and_serves(deployed: Deployed) -> None:
    assert deployed.first.returncode == 0, deployed.first.output[-5000:]
    assert "vLLM plan for" in deployed.first.output
    assert "vLLM serving 'tiny'" in deployed.first.output
    assert_serving(deployed.host)

    ti = deployed.host.testinfra()
    user = ti.user("vllm")
    assert user.exists and user.shell == "/usr/sbin/nologin" and user.home == "/opt/vllm/state"
    assert user.uid < 1000, "a system account"
    service = ti.service("vllm")
    assert service.is_enabled and service.is_running
    unit = ti.file("/etc/systemd/system/vllm.service")
    assert (unit.user, unit.group, unit.mode) == ("root", "root", 0o644)
    assert "Restart=on-failure" in unit.content_string and "EnvironmentFile=/etc/vllm/vllm.env" in unit.content_string
    env = ti.file("/etc/vllm/vllm.env")
    assert (env.user, env.group, env.mode) == ("root", "vllm", 0o640)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING=0\n" in env.content_string
    state = ti.file("/opt/vllm/state")
    assert (state.user, state.mode) == ("vllm", 0o750)
    config = ti.file("/srv/models/tiny-llama/config.json")
    assert (config.user, config.mode) == ("root", 0o644)
    assert ti.file("/srv/models/tiny-llama/.vllm-deploy-complete").exists
    owners = ti.check_output("ps -o user= -p $(systemctl show -p MainPID --value vllm)")
    assert owners.strip() == "vllm"
    journal = deployed.host.journal("vllm", 400)
    assert "Application startup complete" in journal or "Uvicorn running" in journal or "Started" in journal


def test_second_run_changes_nothing(deployed: Deployed) -> None:
    again = deployed.run()
    assert again.returncode == 0, again.output[-5000:]
    assert again.changed == 0, again.output[-5000:]


def main_pid(host: TestHost) -> int:
    return int(host.run("systemctl show -p MainPID --value vllm").stdout.strip())


def test_kill_9_is_restarted_by_systemd_and_verifies(deployed: Deployed) -> None:
    before = main_pid(deployed.host)
    assert before > 0
    deployed.host.run(f"kill -9 {before}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = main_pid(deployed.host)
        if now not in (0, before):
            break
        time.sleep(1)
    else:
        pytest.fail("systemd did not restart vllm within 60 s")
    check = deployed.run("verify.py")
    assert check.returncode == 0, check.output[-5000:]
    assert "vLLM serving 'tiny'" in check.output
    assert_serving(deployed.host)


def test_reboot_brings_the_service_back(deployed: Deployed) -> None:
    boot = deployed.host.boot_id()
    reboot = deployed.run("server.reboot")
    assert reboot.returncode == 0, reboot.output[-5000:]
    assert deployed.host.boot_id() != boot
    check = deployed.run("verify.py")
    assert check.returncode == 0, check.output[-5000:]
    assert_serving(deployed.host)
