"""The docker runtime for real: Debian's docker engine on a lab host, the vLLM CPU image pulled through a registry
mirror, the tiny model served by a container that systemd runs (tests/e2e/dockerlab.py builds the image).

One host, one deploy; the tests build on it in order: what the container runs with, a re-run that changes
nothing, the key on every route, the engine killed, a reboot, the rendered script run by hand, a new image tag.
GPU-only parts (`--gpus`, the NVIDIA container toolkit, `nvidia-ctk`) stay on recorded outputs (tests/deploy).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import WHEELHOUSE, RunResult, lab_api_key, lab_host, run_pyinfra
from tests.e2e import dockerlab
from tests.e2e.serving import assert_serving
from tests.openai_conformance import unguarded_routes

pytestmark = pytest.mark.hosts

UNIT = "vllm"


def settings(tag: str = dockerlab.TAG) -> dict:
    return {"vllm_runtime": "docker", "vllm_docker_image": dockerlab.image(tag),
            "docker_registry_mirrors": [dockerlab.MIRROR]}


def wait_serving(host: TestHost, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_serving(host)
            return
        except (OSError, http.client.HTTPException, AssertionError, ValueError) as error:
            if time.monotonic() > deadline:
                journal = host.journal(UNIT, 40)
                raise AssertionError(f"not serving after {timeout:.0f} s ({error}); journal:\n{journal}") from None
            time.sleep(2)


def container_started(host: TestHost) -> str:
    return dockerlab.inspect(host, UNIT)["State"]["StartedAt"]


class Docker:
    def __init__(self, host: TestHost, first: RunResult, image_source: str, pulled_since: str) -> None:
        self.host = host
        self.first = first
        self.image_source = image_source
        self.pulled_since = pulled_since

    def run(self, deploy: str = "deploy.py", tag: str = dockerlab.TAG) -> RunResult:
        return run_pyinfra([lab_host(self.host, **settings(tag))], deploy)


@pytest.fixture(scope="module")
def docker(hostlab: Lab) -> Iterator[Docker]:
    host = hostlab.add_host("docker", timeout=90, docker=True, binds_ro=(WHEELHOUSE,))
    try:
        dockerlab.install_engine(host)
        source = dockerlab.serve_image(host)
        since = dockerlab.clock(host)
        first = run_pyinfra([lab_host(host, **settings())])
        yield Docker(host, first, source, since)
    finally:
        host.kill()


def test_docker_runtime_pulls_through_the_mirror_and_serves(docker: Docker) -> None:
    assert docker.first.returncode == 0, docker.first.failure(5000)
    assert "vLLM serving 'tiny'" in docker.first.output
    assert "docker.io is installed: using it rather than installing docker-ce" in docker.first.output
    assert_serving(docker.host)
    ti = docker.host.testinfra()
    assert ti.service(UNIT).is_enabled and ti.service(UNIT).is_running
    # The deploy merged the mirror into daemon.json and kept the host's own keys.
    daemon = json.loads(ti.file("/etc/docker/daemon.json").content_string)
    assert daemon["registry-mirrors"] == [dockerlab.MIRROR] and "cgroup-parent" in daemon
    # Pulled by its Docker Hub name; every byte came from the mirror (the host had no copy before the deploy).
    images = docker.host.run("docker images --format '{{.Repository}}:{{.Tag}}'").stdout.split()
    assert images == [dockerlab.image()], images
    asked = "\n".join(dockerlab.mirror_requests(docker.host, docker.pulled_since))
    assert f" /v2/{dockerlab.REPOSITORY}/manifests/{dockerlab.TAG} " in asked, asked[-2000:]
    assert f"GET /v2/{dockerlab.REPOSITORY}/manifests/sha256:" in asked, asked[-2000:]
    assert asked.count(f"GET /v2/{dockerlab.REPOSITORY}/blobs/") >= 2, asked[-2000:]
    assert dockerlab.inspect(docker.host, UNIT)["Config"]["Image"] == dockerlab.image()


def test_the_container_runs_with_the_hardening_the_plan_promises(docker: Docker) -> None:
    facts = dockerlab.inspect(docker.host, UNIT)
    config = facts["HostConfig"]
    assert config["CapDrop"] == ["ALL"] and not config["CapAdd"]
    assert config["SecurityOpt"] == ["no-new-privileges"]
    assert config["Memory"] > 0 and config["PidsLimit"] > 0, (config["Memory"], config["PidsLimit"])
    assert not config["Privileged"] and config["DeviceRequests"] in (None, []), "a CPU container asks for no GPU"
    mounts = {m["Destination"]: m for m in facts["Mounts"]}
    assert mounts["/models"]["RW"] is False and mounts["/usr/local/lib/vllm-deploy/asgi"]["RW"] is False
    # What the engine's process has, read inside the container, and the limits its cgroups enforce.
    status = docker.host.run(f"docker exec {UNIT} grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    write = docker.host.run(f"docker exec {UNIT} touch /models/written", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    limits = docker.host.run(f"docker exec {UNIT} cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                             "/sys/fs/cgroup/pids/pids.max").stdout.split()
    page = 4096  # the kernel keeps the memory limit in whole pages
    assert 0 <= config["Memory"] - int(limits[0]) < page and int(limits[1]) == config["PidsLimit"], limits


def test_second_run_changes_nothing(docker: Docker) -> None:
    before = container_started(docker.host)
    again = docker.run()
    assert again.returncode == 0, again.failure(5000)
    assert again.changed == 0, again.output[-4000:]
    assert container_started(docker.host) == before, "a re-run with nothing to change restarted the container"


def test_every_route_but_health_needs_the_key_through_the_published_port(docker: Docker) -> None:
    host = docker.host
    open_routes = unguarded_routes(lambda: http.client.HTTPConnection(host.ip, 8000, timeout=60), lab_api_key())
    assert open_routes == {}, f"answered without the right key: {open_routes}"


def test_the_engine_killed_with_sigkill_comes_back(docker: Docker) -> None:
    """kill -9 of the container's engine process (on CPU the API server runs it), as the OOM killer would."""
    before = container_started(docker.host)
    pid = dockerlab.inspect(docker.host, UNIT)["State"]["Pid"]
    docker.host.run(f"kill -9 {int(pid)}")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = docker.host.run(f"docker inspect -f '{{{{.State.StartedAt}}}}' {UNIT}", check=False).stdout.strip()
        if now and now != before:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no new container within 90 s of kill -9; journal:\n{docker.host.journal(UNIT, 30)}")
    wait_serving(docker.host)
    restarts = int(docker.host.run(f"systemctl show -p NRestarts --value {UNIT}").stdout.strip())
    assert restarts >= 1


def test_reboot_brings_the_container_back(docker: Docker) -> None:
    docker.host.reboot()
    wait_serving(docker.host)
    assert docker.host.run(f"systemctl is-active {UNIT}").stdout.strip() == "active"


def test_the_rendered_script_runs_the_same_container_by_hand(docker: Docker) -> None:
    host = docker.host
    unit_argv = dockerlab.inspect(host, UNIT)["Args"]
    host.run(f"systemctl stop {UNIT}")
    gone = host.run(f"docker ps -aq --filter name=^{UNIT}$").stdout.strip()
    assert gone == "", "the unit's stop left its container behind"
    try:
        host.run("setsid /opt/vllm/docker-run.sh > /root/docker-run.log 2>&1 < /dev/null &")
        wait_serving(host)
        assert dockerlab.inspect(host, UNIT)["Args"] == unit_argv, "the script runs what the unit runs"
    finally:
        host.run(f"docker stop -t 20 {UNIT}", check=False)
        host.run(f"systemctl start {UNIT}", timeout=600)
    wait_serving(host)


def test_a_new_image_tag_is_pulled_and_restarts_the_container(docker: Docker) -> None:
    tag = f"{dockerlab.TAG}-next"
    dockerlab.retag(docker.host, tag)
    since = dockerlab.clock(docker.host)
    before = container_started(docker.host)
    result = docker.run(tag=tag)
    assert result.returncode == 0, result.failure(5000)
    assert "vLLM serving 'tiny'" in result.output
    assert dockerlab.inspect(docker.host, UNIT)["Config"]["Image"] == dockerlab.image(tag)
    assert container_started(docker.host) != before
    asked = "\n".join(dockerlab.mirror_requests(docker.host, since))
    assert f" /v2/{dockerlab.REPOSITORY}/manifests/{tag} " in asked, asked[-2000:]
    assert_serving(docker.host)
