"""One model across two real lab hosts: tensor parallel 2 over the lab's bridge, vLLM's own multi-node executor.

The operate hosts become one cluster: A is the head (API server, behind A's gateway, watched by A's watchdog
and Prometheus), B the headless follower. Their vLLM and model are already installed, so the deploy renders
and starts the cluster only. Checked: members that disagree are refused before any change; the deploy
verifies through the head; the gateway answers; B serves no API; a re-run changes nothing; `kill -9` of the
follower brings the whole instance back (the head restarts too: one engine); verify.py checks both members.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from hostlab import TestHost
from hostlab.deployrun import RunResult, lab_host, run_pyinfra
from tests.e2e.gatewaylab import Story
from tests.e2e.operate.conftest import A_INSTANCES, B_INSTANCES, FAST

pytestmark = pytest.mark.hosts

UNIT = "vllm"
API_PORT = 8000
MASTER_PORT = 29500
RECOVERY_TIMEOUT = 420


def _deploy(story: Story, script: str = "deploy.py", b_extra: dict | None = None) -> RunResult:
    a = lab_host(story.a, vllm_gateway=True, vllm_monitoring=True, vllm_cluster="lab", vllm_cluster_head=True,
                 **FAST)
    b = lab_host(story.b, vllm_backend_tls=False, vllm_cluster="lab", **{**FAST, **(b_extra or {})})
    result = run_pyinfra([a, b], script)
    story.outputs.append(result.output)
    return result


def _shown(result: RunResult) -> str:
    """The run's error lines, then its output's last part."""
    return result.failure(8000)


def _unit_value(host: TestHost, prop: str) -> str:
    return host.run(f"systemctl show -p {prop} --value {UNIT}.service", check=False).stdout.strip()


def _completion(story: Story) -> tuple[int, str]:
    try:
        status, body, _ = story.request("POST", "/v1/completions",
                                        {"model": "tiny", "prompt": "Hello", "max_tokens": 4})
    except OSError as error:
        return 0, repr(error)
    return status, body.decode(errors="replace")


@pytest.fixture(scope="module")
def cluster(operated: Story) -> Iterator[Story]:
    """The refused run first (it must change nothing), then the old instances stopped and the cluster deployed."""
    a, b = operated.a, operated.b
    refused = _deploy(operated, b_extra={"vllm_version": "0.31.0"})
    assert refused.returncode != 0
    assert "vllm_version: differs between the members of cluster 'lab'" in refused.output, _shown(refused)
    for host in (a, b):
        assert host.run(f"test -e /etc/systemd/system/{UNIT}.service", check=False).returncode == 1, \
            f"{host.name}: the refused run wrote a unit"
    # The operator retires the replicas the cluster replaces (a deploy never removes units it no longer plans).
    a.run(" ".join(["systemctl disable --now", *(f"vllm-{i['name']}.service" for i in A_INSTANCES)]))
    b.run(" ".join(["systemctl disable --now", *(f"vllm-{i['name']}.service" for i in B_INSTANCES)]))
    result = _deploy(operated)
    assert result.returncode == 0, _shown(result)
    yield operated


def test_the_cluster_is_planned_started_and_verified_through_the_head(cluster: Story) -> None:
    output = cluster.outputs[-1]
    # Planned once for both members (their deploy files run in parallel greenlets), printed once.
    assert output.count(f"cluster lab: 2 nodes, head {cluster.a.ip} ({cluster.a.ip}:{MASTER_PORT}), vLLM "
                        "multi-node executor") == 1, output[-6000:]
    assert "tp=2 pp=1" in output
    assert "vLLM serving 'tiny'" in output
    head = cluster.a.run(f"cat /etc/systemd/system/{UNIT}.service").stdout
    follower = cluster.b.run(f"cat /etc/systemd/system/{UNIT}.service").stdout
    for unit, rank in ((head, "0"), (follower, "1")):
        assert "vllm_serve.py" in unit and "--nnodes 2" in unit and f"--node-rank {rank}" in unit
        assert f"--master-addr {cluster.a.ip} --master-port {MASTER_PORT}" in unit
        assert "--tensor-parallel-size 2" in unit and "Restart=always" in unit
    assert "--headless" in follower and "--headless" not in head
    assert "ExecStartPost" not in follower, "a headless follower has no /health to wait for"
    env = cluster.b.run(f"cat /etc/vllm/{UNIT}.env").stdout
    assert f"VLLM_HOST_IP={cluster.b.ip}" in env and "GLOO_SOCKET_IFNAME=" in env, env


def test_the_head_and_the_gateway_answer_and_the_follower_serves_no_api(cluster: Story) -> None:
    models = cluster.a.run(f"curl -sf -H @/etc/vllm/api-key.header http://127.0.0.1:{API_PORT}/v1/models").stdout
    assert [m["id"] for m in json.loads(models)["data"]] == ["tiny"]
    status, body = _completion(cluster)
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 4, body[:500]
    listening = cluster.b.run(f"ss -Htln 'sport = :{API_PORT}'", check=False).stdout
    assert listening.strip() == "", f"the follower listens on the API port:\n{listening}"
    journal = cluster.b.journal(f"{UNIT}.service", 400)
    assert "headless" in journal and "Starting vLLM server" not in journal


def test_a_rerun_changes_nothing(cluster: Story) -> None:
    result = _deploy(cluster)
    assert result.returncode == 0, _shown(result)
    assert result.changed == 0, _shown(result)


def test_kill_9_of_the_follower_brings_the_whole_instance_back(cluster: Story) -> None:
    a, b = cluster.a, cluster.b
    head_restarts, follower_restarts = int(_unit_value(a, "NRestarts")), int(_unit_value(b, "NRestarts"))
    b.run(f"kill -9 {_unit_value(b, 'MainPID')}")
    killed_at = time.monotonic()
    status, body = 0, ""
    while time.monotonic() - killed_at < RECOVERY_TIMEOUT:
        status, body = _completion(cluster)
        if status == 200 and int(_unit_value(a, "NRestarts")) > head_restarts:
            break
        time.sleep(3)
    took = time.monotonic() - killed_at
    assert status == 200, (f"not serving {took:.0f}s after kill -9 of the follower: {status} {body[:500]}\n"
                           f"{a.journal(f'{UNIT}.service', 40)}\n{b.journal(f'{UNIT}.service', 40)}")
    assert int(_unit_value(b, "NRestarts")) > follower_restarts, "systemd did not restart the follower"
    assert int(_unit_value(a, "NRestarts")) > head_restarts, "the head kept its broken engine"
    print(f"serving again {took:.0f}s after kill -9 of the follower")
    verified = _deploy(cluster, "verify.py")
    assert verified.returncode == 0, _shown(verified)
    assert "runs headless (cluster follower" in verified.output and "vLLM serving 'tiny'" in verified.output
