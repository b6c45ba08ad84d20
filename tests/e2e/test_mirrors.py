"""mirror_preset on a real Debian 12 host: the apt sources switch to a mirror and back, and apt works through it.

The "custom" mirror is the Debian archive the controller's own apt uses, read from its sources at run
time (hostlab.rootfs.find_mirror, as the lab's root filesystem is built), so the test needs no address
of its own and reaches the archive through the lab's egress proxy like every other download.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import WHEELHOUSE, RunResult, lab_host, run_pyinfra
from hostlab.rootfs import SUITE, RootfsError, find_mirror
from plan.apt_mirror import BACKUP_DIR, MANAGED_FILE, backup_path

pytestmark = pytest.mark.hosts

DEPLOY = "tests/e2e/apt_mirror_only.py"
ORIGINAL = "/etc/apt/sources.list.d/debian.sources"  # what the lab's hosts get: the controller's own sources
PACKAGE = "hello"  # small, in main, not in the lab's image


def controller_mirror_base() -> str:
    """The base URL apt_mirror expects (its /debian/ tree is the archive) of the controller's Debian mirror."""
    try:
        archive = find_mirror(SUITE).rstrip("/")
    except RootfsError as error:
        pytest.skip(str(error))
    if not archive.endswith("/debian"):
        pytest.skip(f"the controller's Debian archive {archive} is not a /debian tree of a mirror base")
    return archive.removesuffix("/debian")


def mirror_settings(preset: str, base: str) -> dict[str, object]:
    """Host data for the preset; "custom" names the apt mirror, and a pip index the wheelhouse overrides."""
    if preset != "custom":
        return {"mirror_preset": preset}
    return {"mirror_preset": "custom", "apt_mirror": base, "pip_index_url": WHEELHOUSE.as_uri()}


@dataclass
class Switched:
    host: TestHost
    base: str
    original: str  # the host's own sources before the first deploy
    first: RunResult

    def deploy(self, preset: str) -> RunResult:
        return run_pyinfra([lab_host(self.host, **mirror_settings(preset, self.base))], DEPLOY, timeout=600)

    def read(self, path: str) -> str | None:
        proc = self.host.run(f"cat {path}", check=False)
        return proc.stdout if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def switched(hostlab: Lab) -> Iterator[Switched]:
    base = controller_mirror_base()
    host = hostlab.add_host("e2e-mirror")
    try:
        original = host.run(f"cat {ORIGINAL}").stdout
        assert "Types: deb" in original, original
        state = Switched(host, base, original, RunResult(1, ""))
        state.first = state.deploy("custom")
        yield state
    finally:
        host.kill()


def test_custom_mirror_replaces_the_sources_and_keeps_the_hosts_own(switched: Switched) -> None:
    assert switched.first.returncode == 0, switched.first.failure(3000)
    assert switched.first.changed == 2, "our sources file written, the host's file moved aside"
    mirror = switched.read(MANAGED_FILE)
    assert mirror is not None, f"{MANAGED_FILE} missing"
    assert f"URIs: {switched.base}/debian/\nSuites: {SUITE} {SUITE}-updates\n" in mirror
    assert f"URIs: {switched.base}/debian-security/\nSuites: {SUITE}-security\n" in mirror
    assert switched.read(ORIGINAL) is None, "apt would fetch every index twice"
    assert switched.read(backup_path(ORIGINAL)) == switched.original, f"the host's sources not kept in {BACKUP_DIR}"


def test_apt_updates_and_installs_through_the_mirror(switched: Switched) -> None:
    host = switched.host
    assert host.run(f"dpkg-query -W {PACKAGE}", check=False).returncode != 0, f"{PACKAGE} already installed"
    update = host.run("apt-get update 2>&1", check=False, timeout=600)
    assert update.returncode == 0 and "W: " not in update.stdout and "E: " not in update.stdout, update.stdout
    assert f"{switched.base}/debian {SUITE} InRelease" in update.stdout
    assert f"{switched.base}/debian-security {SUITE}-security InRelease" in update.stdout
    listed = host.run("apt-get indextargets --format '$(FILENAME)' 2>&1").stdout
    assert "non-free-firmware" in listed, "the mirror's components (not only the host's 'main') are indexed"
    install = host.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {PACKAGE} 2>&1",
                       check=False, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:]
    assert host.testinfra().package(PACKAGE).is_installed
    assert host.run(PACKAGE).stdout.strip() == "Hello, world!"


def test_second_run_with_the_same_preset_changes_nothing(switched: Switched) -> None:
    again = switched.deploy("custom")
    assert again.returncode == 0, again.failure(3000)
    assert again.changed == 0, again.output[-3000:]


def test_switching_back_to_upstream_restores_the_hosts_sources(switched: Switched) -> None:
    back = switched.deploy("upstream")
    assert back.returncode == 0, back.failure(3000)
    assert back.changed == 1, back.output[-3000:]
    assert switched.read(MANAGED_FILE) is None
    assert switched.read(ORIGINAL) == switched.original
    assert switched.read(backup_path(ORIGINAL)) is None
    update = switched.host.run("apt-get update 2>&1", check=False, timeout=600)
    assert update.returncode == 0 and "E: " not in update.stdout, update.stdout
    assert switched.deploy("upstream").changed == 0
