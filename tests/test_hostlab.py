"""The throwaway-server lab itself: boot, SSH, systemd, network, egress, pip, pyinfra, reboot, teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostlab import Lab, TestHost, clean_stale, controller_state, write_inventory
from hostlab.lab import SUDO_USER, _global_lock

pytestmark = pytest.mark.hosts

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_hosts(hostlab: Lab) -> Iterator[tuple[TestHost, TestHost]]:
    a = hostlab.add_host("lab-a")
    b = hostlab.add_host("lab-b")
    yield a, b
    a.stop()
    b.stop()


def _pyinfra(inventory: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PYINFRA, "-y", str(inventory), *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"pyinfra {args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_hosts_boot_systemd_as_pid1_with_ssh(two_hosts: tuple[TestHost, TestHost], hostlab: Lab) -> None:
    for host in two_hosts:
        assert host.run("cat /proc/1/comm").stdout.strip() == "systemd"
        assert host.run("hostname").stdout.strip() == host.name
        state = host.run("systemctl is-system-running --wait", check=False).stdout.strip()
        assert state in ("running", "degraded"), host.run("systemctl --failed --no-legend", check=False).stdout
        assert host.run("systemctl is-active ssh").stdout.strip() == "active"
        assert "Server listening" in host.journal("ssh", 500)
    print(f"lab timings: { {k: round(v, 2) for k, v in hostlab.timings.items()} }")


def test_testinfra_backend(two_hosts: tuple[TestHost, TestHost]) -> None:
    ti = two_hosts[0].testinfra()
    assert ti.file("/etc/hostname").content_string.strip() == two_hosts[0].name
    assert ti.service("ssh").is_running


def test_hosts_reach_each_other(two_hosts: tuple[TestHost, TestHost]) -> None:
    a, b = two_hosts
    a.run(f"ping -c1 -W2 {b.ip}")
    b.run("systemd-run --unit=hostlab-http --property=WorkingDirectory=/etc python3 -m http.server 8080")
    try:
        deadline = time.monotonic() + 15
        while True:
            got = a.run(f"curl -sf http://{b.ip}:8080/hostname", check=False)
            if got.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert got.stdout.strip() == b.name, got.stderr
    finally:
        b.run("systemctl stop hostlab-http", check=False)


def test_guests_have_no_direct_route_out(two_hosts: tuple[TestHost, TestHost]) -> None:
    """Egress must go through the lab proxy: without it a guest reaches nothing beyond the bridge."""
    got = two_hosts[0].run("env -u https_proxy -u HTTPS_PROXY curl -sS --max-time 5 https://1.1.1.1/", check=False)
    assert got.returncode != 0


def test_apt_install_through_proxy(two_hosts: tuple[TestHost, TestHost], hostlab: Lab) -> None:
    host = two_hosts[0]
    host.run("DEBIAN_FRONTEND=noninteractive apt-get update -q && apt-get install -y -q jq", timeout=300)
    assert host.run("echo '{\"a\": 7}' | jq .a").stdout.strip() == "7"
    assert hostlab.proxy is not None and hostlab.proxy.upstreams, "apt did not go through the lab proxy"


def test_pip_in_guest_uses_bound_local_index(two_hosts: tuple[TestHost, TestHost], hostlab: Lab) -> None:
    if not hostlab.pip_binds:
        pytest.skip("the controller's pip config names no local wheel dir or index to share with guests")
    host = two_hosts[1]
    host.run("DEBIAN_FRONTEND=noninteractive apt-get update -q && apt-get install -y -q python3-venv", timeout=300)
    host.run("python3 -m venv /opt/venv")
    for path in hostlab.pip_binds:
        assert host.run(f"test -e {path} && ! touch {path}/.w 2>/dev/null", check=False).returncode == 0, (
            f"{path} is not bound read-only in the guest"
        )
    # A dead proxy: what installs can only come from the local dirs the guest's pip config names.
    got = host.run("/opt/venv/bin/pip install --retries 0 --timeout 3 --proxy http://127.0.0.1:9 six", check=False)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    assert "file:///" in got.stdout or any(str(p) in got.stdout for p in hostlab.pip_binds), got.stdout
    assert host.run("/opt/venv/bin/python -c 'import six; print(six.__name__)'").stdout.strip() == "six"


def test_pip_in_guest_reaches_default_index_through_proxy(two_hosts: tuple[TestHost, TestHost]) -> None:
    host = two_hosts[1]
    if host.run("test -x /opt/venv/bin/pip", check=False).returncode != 0:
        host.run("DEBIAN_FRONTEND=noninteractive apt-get update -q && apt-get install -y -q python3-venv", timeout=300)
        host.run("python3 -m venv /opt/venv")
    # --isolated drops the local dirs from the config: only the default index, via the proxy in the env.
    proxy = host.run("grep -o 'https_proxy=\"[^\"]*' /etc/environment | cut -d'\"' -f2").stdout.strip()
    got = host.run(
        f"/opt/venv/bin/pip download --isolated --proxy {proxy} --cert /etc/ssl/certs/ca-certificates.crt "
        "--no-deps -d /tmp/dl idna",
        check=False,
        timeout=300,
    )
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    assert host.run("ls /tmp/dl").stdout.startswith("idna-")


def test_pyinfra_runs_against_a_host(two_hosts: tuple[TestHost, TestHost], tmp_path: Path) -> None:
    inventory = write_inventory(list(two_hosts), tmp_path / "inventory.py")
    _pyinfra(inventory, "server.shell", "hostname > /root/pyinfra-was-here")
    for host in two_hosts:
        assert host.run("cat /root/pyinfra-was-here").stdout.strip() == host.name


def test_pyinfra_runs_through_the_sudo_user(two_hosts: tuple[TestHost, TestHost], tmp_path: Path) -> None:
    host = two_hosts[0]
    inventory = write_inventory([host], tmp_path / "inventory.py", sudo_user=True)
    _pyinfra(inventory, "server.shell", "{ id -un; echo $SUDO_USER; } > /root/sudo-was-here")
    assert host.run("cat /root/sudo-was-here").stdout.split() == ["root", SUDO_USER]
    assert host.run(f"stat -c %U /home/{SUDO_USER}/.ssh/authorized_keys").stdout.strip() == SUDO_USER


def test_pyinfra_reboot_and_host_comes_back(fresh_host, tmp_path: Path) -> None:
    host = fresh_host()
    boot_before = host.boot_id()
    host.run("touch /root/survives-reboot")
    inventory = write_inventory([host], tmp_path / "inventory.py")
    start = time.monotonic()
    _pyinfra(inventory, "server.reboot", "delay=4", "interval=0.5", "reboot_timeout=60")
    print(f"pyinfra server.reboot round trip: {time.monotonic() - start:.1f}s")
    assert host.boots == 2
    assert host.boot_id() != boot_before
    assert float(host.run("cut -d' ' -f1 /proc/uptime").stdout) < 60
    host.run("test -e /root/survives-reboot")  # same disk: a reboot, not a fresh server
    start = time.monotonic()
    host.reboot()  # the harness's own path
    print(f"guest reboot to SSH: {time.monotonic() - start:.1f}s")
    assert host.boots == 3


def test_teardown_leaves_nothing_behind(hostlab: Lab) -> None:
    before = controller_state()
    with Lab(lower=hostlab.lower) as lab:
        first = lab.add_host("td-1")
        second = lab.add_host("td-2")
        first.run(f"ping -c1 -W2 {second.ip}")
        during = controller_state()
        assert during["links"] - before["links"] and during["netns"] - before["netns"]
        assert during["cgroups"] - before["cgroups"] and during["mounts"] - before["mounts"]
        second.kill()  # SIGKILL path: guest processes, cgroups, propagate dir, veth, netns, overlay
        assert not any(second.machine in p for p in controller_state()["nspawn_dirs"])
        start = time.monotonic()
        first.stop()
        print(f"clean poweroff: {time.monotonic() - start:.1f}s")
        assert first.exit_code == 0, f"nspawn exited {first.exit_code}, not a clean poweroff"
    assert controller_state() == before


def test_stale_lab_of_a_killed_run_is_cleaned(hostlab: Lab, tmp_path: Path) -> None:
    """A test run SIGKILLed mid-way leaves a running guest behind; the next lab removes all of it."""
    before = controller_state()
    script = (
        "import sys, time\n"
        "from hostlab import Lab\n"
        f"lab = Lab(lower={str(hostlab.lower)!r}); lab.start(); lab.add_host('orphan')\n"
        "print('ready', flush=True); time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert controller_state()["processes"] - before["processes"], "the orphaned guest should still be running"
    with _global_lock():
        cleaned = clean_stale()
    assert len(cleaned) == 1
    assert controller_state() == before
