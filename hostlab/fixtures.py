"""pytest fixtures for tests that need real throwaway servers.

`hostlab` (session): one Lab, its root filesystem built or re-extracted once per session.
`fresh_host` (function): a factory booting new hosts that are removed when the test ends.
Without root or the lab's tools the tests skip, saying why; with CI=true they fail instead,
because CI runs as root and a silently skipped end-to-end suite would hide a broken lab.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator

import pytest

from . import rootfs
from .lab import Lab, TestHost, cgroup_hierarchies

LAB_TOOLS = ("systemd-nspawn", "unshare", "ip", "ssh", "ssh-keygen", "zstd")


def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces, overlay mounts, systemd-nspawn)"
    missing = [t for t in LAB_TOOLS if not shutil.which(t)]
    if not rootfs.tarball_path().is_file() and not shutil.which("debootstrap"):
        missing.append("debootstrap")
    if missing:
        return f"missing {', '.join(missing)}: run scripts/hostlab-deps.sh as root"
    if not cgroup_hierarchies():
        return "no cgroup2 or name=systemd hierarchy mounted for systemd-nspawn"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def hostlab() -> Iterator[Lab]:
    reason = lab_unavailable_reason()
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but the test-host lab cannot run: {reason}")
        pytest.skip(reason)
    with Lab() as lab:
        yield lab


@pytest.fixture
def fresh_host(hostlab: Lab, request: pytest.FixtureRequest) -> Iterator[Callable[..., TestHost]]:
    """Call it (optionally with a name) to boot a new host; every host it made is killed afterwards."""
    made: list[TestHost] = []
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:24].strip("-") or "host"

    def make(name: str | None = None) -> TestHost:
        host = hostlab.add_host(name or f"{stem}-{len(made) + 1}")
        made.append(host)
        return host

    yield make
    for host in made:
        host.kill()
