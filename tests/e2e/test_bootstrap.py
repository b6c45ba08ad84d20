"""A fresh Debian 12 server bootstrapped for real: venv runtime, vLLM's CPU build, the tiny model.

Real systemd, real SSH, a real vLLM process; the deploy runs through the pyinfra
CLI exactly as a user would run it. The module's one deploy takes three fresh hosts in one run (each verified
and serving); the two fleet hosts stop after their check, and the tests that follow build on the main one
(re-run, kill -9, reboot).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import ROOT, RunResult, lab_api_key, lab_host, run_pyinfra
from tests.e2e.engine import engine_core, oom_kill
from tests.e2e.serving import assert_serving
from tests.openai_conformance import bad_requests, hang_up_mid_stream, unguarded_routes

pytestmark = pytest.mark.hosts


# The tiny model is a llama without Llama 3's tokenizer (vLLM's llama3_json parser refuses it at start-up: no
# <|python_tag|>), so no recipe turns tools on; the hermes parser loads with any tokenizer, and naming it
# turns tool calling on: every deploy and verify of this module also sends the tool call. The random model
# finishes the constrained call for this prompt (for others it fills the arguments until max_tokens).
TOOLS = {"vllm_tool_calling": True, "vllm_tool_call_parser": "hermes",
         "vllm_verify_prompt": "Call the tool now please."}


class Deployed:
    def __init__(self, host: TestHost, fleet: list[TestHost], first: RunResult, calibration: Path):
        self.host = host
        self.fleet = fleet
        self.first = first
        self.calibration = calibration

    def run(self, deploy: str = "deploy.py", *args: str) -> RunResult:
        return run_pyinfra([lab_host(self.host, **TOOLS)], deploy, *args)


@pytest.fixture(scope="module")
def deployed(hostlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    host = hostlab.add_host("e2e-main")
    fleet = [hostlab.add_host(f"fleet-{i}") for i in (1, 2)]
    # The deploy (a pyinfra subprocess) inherits this environment: its calibration records land here.
    calibration = tmp_path_factory.mktemp("bootstrap-calibration") / "calibration.jsonl"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_DEPLOY_CALIBRATION", str(calibration))
        first = run_pyinfra([lab_host(h, **TOOLS) for h in (host, *fleet)])
        try:
            yield Deployed(host, fleet, first, calibration)
        finally:
            for each in (host, *fleet):
                each.kill()


def test_fresh_host_is_deployed_and_serves(deployed: Deployed) -> None:
    assert deployed.first.returncode == 0, deployed.first.failure(5000)
    assert "vLLM plan for" in deployed.first.output
    assert "vLLM serving 'tiny'" in deployed.first.output
    # pip's minutes of silence show as progress: packages in the venv out of those pip resolved.
    progress = [int(m.group(1)) for m in re.finditer(
        rf"\[{re.escape(deployed.host.ip)}\] pip: installing, (\d+)/\d+ package", deployed.first.output)]
    assert progress, "no pip progress in the output of the fresh deploy"
    assert progress == sorted(progress), progress
    assert_serving(deployed.host)
    # pip ran with --no-compile and compileall followed: modules that nothing imports during a deploy (so no
    # import wrote their bytecode) have it too, as pip's own compile would have left them.
    site = "/opt/vllm/venv/lib/python3*/site-packages"
    compiled = deployed.host.run(f"ls {site}/vllm/benchmarks/__pycache__/serve.cpython-*.pyc "
                                 f"{site}/torch/testing/_internal/__pycache__/common_utils.cpython-*.pyc", check=False)
    assert compiled.returncode == 0 and len(compiled.stdout.split()) == 2, compiled.stdout + compiled.stderr

    ti = deployed.host.testinfra()
    user = ti.user("vllm")
    assert user.exists and user.shell == "/usr/sbin/nologin" and user.home == "/opt/vllm/state"
    assert user.uid < 1000, "a system account"
    service = ti.service("vllm")
    assert service.is_enabled and service.is_running
    unit = ti.file("/etc/systemd/system/vllm.service")
    assert (unit.user, unit.group, unit.mode) == ("root", "root", 0o644)
    assert "\nRestart=always\n" in unit.content_string and "EnvironmentFile=/etc/vllm/vllm.env" in unit.content_string
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
    # vLLM's own lines, not systemd's "Started": with Type=exec that would only say the exec happened.
    assert "Starting vLLM server on http://0.0.0.0:8000" in journal and "Application startup complete" in journal


def test_three_fresh_hosts_in_one_run_are_each_verified_and_serving(deployed: Deployed) -> None:
    """The fleet hosts were deployed in the main host's run; they stop here, which frees the lab for the rest."""
    try:
        assert deployed.first.returncode == 0, deployed.first.failure(5000)
        for host in (deployed.host, *deployed.fleet):
            assert f"[{host.ip}] vLLM serving 'tiny'" in deployed.first.output, host.name
            assert_serving(host)
    finally:
        for host in deployed.fleet:
            host.kill()


def test_deploy_records_vllms_own_figures_beside_the_plan(deployed: Deployed) -> None:
    """The first deploy's calibration record: this start's journal of the real CPU build, parsed, against the plan.

    The CPU plan sets the KV cache bytes (--kv-cache-memory-bytes), so tokens and concurrency must agree
    exactly; the GiB figure differs only by the log's two decimals (0.0625 is printed 0.06).
    """
    assert deployed.first.returncode == 0, deployed.first.failure(5000)
    assert "tool call answered (hermes parser)" in deployed.first.output
    assert "calibration of vllm: predicted vs vLLM's own figures" in deployed.first.output
    print("\n" + deployed.first.output[deployed.first.output.index("calibration of vllm"):].split("\n[", 1)[0])
    records = [json.loads(line) for line in deployed.calibration.read_text().splitlines()]
    invocation = deployed.host.run("systemctl show -p InvocationID --value vllm").stdout.strip()
    [record] = [r for r in records if r["invocation"] == invocation]
    assert (record["host"], record["gpu"], record["model"], record["vllm_version"]) == (
        deployed.host.ip, "cpu", "tiny-llama", "0.32.0")
    assert record["observed"]["kv_cache_tokens"] == record["predicted"]["kv_cache_tokens"] == 65536
    assert record["observed"]["max_concurrency"] == record["predicted"]["max_concurrency"] == 64.0
    assert record["observed"]["kv_cache_gib"] == 0.06 and abs(record["error_percent"]["kv_cache_gib"]) < 5
    assert "--kv-cache-memory-bytes" in record["argv"] and "--tool-call-parser" in record["argv"]
    env = {**os.environ, "VLLM_DEPLOY_CALIBRATION": str(deployed.calibration)}
    shown = subprocess.run([sys.executable, "-m", "sizing", "calibration"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env=env)
    print(shown.stdout)
    assert shown.returncode == 0, shown.stderr
    assert deployed.host.ip in shown.stdout and "65,536/65,536 (+0.0%)" in shown.stdout
    assert "median absolute error per GPU and vLLM version" in shown.stdout


def test_second_run_changes_nothing(deployed: Deployed) -> None:
    again = deployed.run()
    assert again.returncode == 0, again.failure(5000)
    assert again.changed == 0, again.output[-5000:]


def main_pid(host: TestHost) -> int:
    return int(host.run("systemctl show -p MainPID --value vllm").stdout.strip())


def completion_on_host(host: TestHost) -> dict:
    """A completion with curl on the host itself (the key from the deploy's 0600 header file)."""
    payload = json.dumps({"model": "tiny", "prompt": "def main(", "max_tokens": 4})
    out = host.run("curl -sSf -m 60 -H @/etc/vllm/api-key.header -H 'Content-Type: application/json' "
                   f"--data '{payload}' http://127.0.0.1:8000/v1/completions").stdout
    return json.loads(out)


EXPOSURE = re.compile(r"Overall exposure level for vllm\.service: (\d+\.\d+) (\w+)")


def test_unit_sandbox_scores_ok_and_vllm_serves_under_it(deployed: Deployed) -> None:
    """systemd's own audit of the deployed unit, while the vLLM it runs answers a completion."""
    report = deployed.host.run("systemd-analyze security vllm.service --no-pager").stdout
    found = EXPOSURE.search(report)
    assert found, report[-3000:]
    score, verdict = float(found.group(1)), found.group(2)
    print(f"\nsystemd-analyze security vllm.service: {score} {verdict}")
    print("\n".join(line for line in report.splitlines() if line.startswith("✗")))
    assert score <= 3.0, report
    assert deployed.host.run("systemctl is-active vllm").stdout.strip() == "active"
    assert completion_on_host(deployed.host)["choices"][0]["text"]


def test_model_is_read_only_inside_the_running_service(deployed: Deployed) -> None:
    """The deployed unit's own sandbox: its properties, and a write from the service's namespaces as its user.

    As the service user a new file in a root-owned directory fails anyway (EACCES); only a read-only
    mount gives EROFS, so the error names the sandbox. The state directory is the control: the same
    way in, a write there succeeds.
    """
    host = deployed.host
    props = host.run("systemctl show vllm -p ReadOnlyPaths -p ProtectSystem -p ReadWritePaths").stdout
    assert "ReadOnlyPaths=/srv/models/tiny-llama\n" in props and "ProtectSystem=strict\n" in props, props
    pid = main_pid(host)
    enter = f"nsenter -t {pid} -m -U -S $(id -u vllm) -G $(id -g vllm) --"
    inside = host.run(f"{enter} sh -c 'id -un; touch /opt/vllm/state/tmp/.rw-probe && rm /opt/vllm/state/tmp/.rw-probe "
                      "&& echo state-writable; touch /srv/models/tiny-llama/.ro-probe; echo rc=$?' 2>&1",
                      check=False).stdout
    assert inside.startswith("vllm\n") and "state-writable" in inside, inside
    assert "Read-only file system" in inside and "rc=1" in inside, inside
    assert host.run("test -e /srv/models/tiny-llama/.ro-probe", check=False).returncode != 0


def test_deploy_recovers_a_unit_that_hit_its_start_limit(deployed: Deployed) -> None:
    """Five failed starts in StartLimitIntervalSec stop systemd's restarts; the next deploy starts it again."""
    host = deployed.host
    # Fails every start at once (a missing EnvironmentFile), with no unit change: no daemon-reload
    # (which would forget the count) is needed to undo it.
    host.run("mv /etc/vllm/vllm.env /etc/vllm/vllm.env.off && { systemctl restart vllm || true; }")
    try:
        deadline = time.monotonic() + 120
        while "Start request repeated too quickly" not in host.run(
                "journalctl -u vllm -o cat --no-pager --since '-3min'").stdout:
            assert time.monotonic() < deadline, "the start limit was not hit within 120 s"
            time.sleep(2)
    finally:
        host.run("mv /etc/vllm/vllm.env.off /etc/vllm/vllm.env")
    refused = host.run("systemctl start vllm", check=False)
    assert refused.returncode != 0, "the cause is gone, but the start limit still refuses a plain start"
    again = deployed.run()
    assert again.returncode == 0, again.failure(5000)
    assert "vLLM serving 'tiny'" in again.output
    assert_serving(deployed.host)


def test_health_wait_has_a_deadline_and_ends_when_vllm_dies(deployed: Deployed) -> None:
    """A start never waits forever: the wait has vllm_verify_timeout (420 s in the lab) and a vLLM
    that exits before it is healthy fails the start at once (systemd alone would stay in start-post)."""
    host = deployed.host
    props = host.run("systemctl show vllm -p TimeoutStartUSec -p ExecStartPost").stdout
    assert "TimeoutStartUSec=8min\n" in props, props
    assert "argv[]=/usr/bin/timeout 420 /bin/sh -c " in props, props
    # Only the process is swapped (and automatic restarts held): the health wait is the deployed one.
    host.run("mkdir -p /run/systemd/system/vllm.service.d && printf '[Service]\\nExecStart=\\n"
             "ExecStart=/bin/sh -c \"sleep 2; exit 3\"\\nRestart=no\\n' "
             "> /run/systemd/system/vllm.service.d/dies.conf && systemctl daemon-reload")
    try:
        started = time.monotonic()
        failed = host.run("systemctl restart vllm", check=False, timeout=90)
        elapsed = time.monotonic() - started
    finally:
        host.run("rm -r /run/systemd/system/vllm.service.d && systemctl daemon-reload")
    assert failed.returncode != 0 and elapsed < 60, (elapsed, failed.stderr)
    again = deployed.run()
    assert again.returncode == 0, again.failure(5000)
    assert "vLLM serving 'tiny'" in again.output


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
    assert check.returncode == 0, check.failure(5000)
    assert "vLLM serving 'tiny'" in check.output
    assert_serving(deployed.host)


def test_every_route_but_health_needs_the_key_on_the_instance_port(deployed: Deployed) -> None:
    """Every route the deployed vLLM lists in its own /openapi.json, from the network, without and with a wrong key."""
    host = deployed.host
    open_routes = unguarded_routes(lambda: http.client.HTTPConnection(host.ip, 8000, timeout=60), lab_api_key())
    assert open_routes == {}, f"answered without the right key: {open_routes}"


def test_bad_requests_get_400_and_a_hung_up_stream_frees_its_slot(deployed: Deployed) -> None:
    """On the deployed instance (as the unit runs it): requests the engine must refuse, not die of, and a client
    that goes away mid-stream, seen in vLLM's own running-requests gauge."""
    host, key = deployed.host, lab_api_key()

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(host.ip, 8000, timeout=60)

    before = main_pid(host)
    assert bad_requests(connect, key, "tiny") == {}
    freed = hang_up_mid_stream(connect, key, "tiny")
    print(f"\nslot freed {freed:.1f} s after the client hung up")
    assert main_pid(host) == before, "the engine's API server was restarted"


# A death of the engine core, as production has it: SIGKILL (the OOM killer, an operator), SIGSEGV (a crashing
# kernel or driver), and the kernel's own OOM kill under load. Each must end with the instance serving again.
ENGINE_DEATH_BOUND = 180  # seconds from the death to a verified completion: RestartSec 5 + a start (~30 s here)


def _clean_exits(host: TestHost) -> int:
    """How often the unit's main process ended with status 0 (systemd's line for a successful deactivation)."""
    return int(host.run("journalctl -u vllm -o cat --no-pager | grep -c 'vllm.service: Deactivated successfully'",
                        check=False).stdout.strip() or 0)


@pytest.mark.parametrize("death", ["SIGKILL", "SIGSEGV", "OOM"])
def test_an_engine_core_that_dies_is_brought_back(deployed: Deployed, death: str) -> None:
    host = deployed.host
    before, restarts = main_pid(host), int(host.run("systemctl show -p NRestarts --value vllm").stdout)
    clean_exits = _clean_exits(host)
    engine = engine_core(host, "vllm")
    start = time.monotonic()
    if death == "OOM":
        killed = oom_kill(host, "vllm", f"http://{host.ip}:8000/v1/completions")
        print(f"\nkernel: {killed}")
    else:
        host.run(f"kill -{death.removeprefix('SIG')} {engine}")
    while True:
        assert time.monotonic() - start < ENGINE_DEATH_BOUND, (
            f"not serving {ENGINE_DEATH_BOUND} s after the engine's {death}: "
            f"{host.run('systemctl show -p ActiveState -p SubState -p NRestarts -p ExecMainStatus vllm').stdout}")
        if main_pid(host) not in (0, before) and host.run("systemctl is-active vllm", check=False).stdout.strip() \
                == "active":
            try:
                assert_serving(host)
                break
            except OSError:
                pass
        time.sleep(1)
    took = time.monotonic() - start
    print(f"engine core {death}: serving again after {took:.0f} s (bound {ENGINE_DEATH_BOUND} s)")
    assert int(host.run("systemctl show -p NRestarts --value vllm").stdout) == restarts + 1
    assert _clean_exits(host) == clean_exits + 1, \
        "the API server exits 0 after an engine death (systemd: 'Deactivated successfully'): only Restart=always " \
        "restarts it"


def test_the_watchdog_starts_a_unit_systemd_gave_up_on(deployed: Deployed) -> None:
    """Restarts that keep failing hit the start limit; once the cause is gone the watchdog starts the unit."""
    host = deployed.host
    assert host.run("systemctl is-active vllm-watchdog").stdout.strip() == "active"
    host.run("mv /etc/vllm/vllm.env /etc/vllm/vllm.env.off && { systemctl restart vllm || true; }")
    try:
        deadline = time.monotonic() + 120
        while host.run("systemctl show -p ActiveState --value vllm").stdout.strip() != "failed":
            assert time.monotonic() < deadline, "the start limit was not hit within 120 s"
            time.sleep(1)
    finally:
        host.run("mv /etc/vllm/vllm.env.off /etc/vllm/vllm.env")
    failed_at = time.monotonic()
    bound = 45 + ENGINE_DEATH_BOUND  # the watchdog's wait (misses x interval), then a start
    while host.run("systemctl is-active vllm", check=False).stdout.strip() != "active":
        assert time.monotonic() - failed_at < bound, host.journal("vllm-watchdog", 20)
        time.sleep(1)
    print(f"\nfailed unit started again by the watchdog after {time.monotonic() - failed_at:.0f} s (bound {bound} s)")
    log = host.run("journalctl -u vllm-watchdog -o cat --no-pager --since '-5min'").stdout
    assert "vllm: unit failed (systemd stopped restarting it); starting it again in 45 s" in log, log[-2000:]
    assert "vllm: started again by the watchdog" in log, log[-2000:]
    assert_serving(host)


def test_reboot_brings_the_service_back(deployed: Deployed) -> None:
    boot = deployed.host.boot_id()
    reboot = deployed.run("server.reboot")
    assert reboot.returncode == 0, reboot.failure(5000)
    assert deployed.host.boot_id() != boot
    check = deployed.run("verify.py")
    assert check.returncode == 0, check.failure(5000)
    assert_serving(deployed.host)
