"""The fact commands through pyinfra's real shell path (`@local`), against Python's own reading of this machine.

This proves the command strings run as written under `sh -c` (quoting, the sysfs fallback,
`|| true` on missing tools) and parse into what the kernel reports, and that the recorded
debian12-cpu profile has the shape live facts have. Figures that differ from machine to machine
(memory, CPUs, packages) are compared with the kernel's, never with the recording.
"""

from __future__ import annotations

import os
import shutil
from fnmatch import fnmatch
from pathlib import Path

import pytest

from facts import commands
from facts.gather import gather_host_facts
from tests.fakehosts import fake_host_data, make_fake_state

OS_RELEASE = Path("/etc/os-release")
IS_RECORDED_MACHINE = OS_RELEASE.is_file() and 'VERSION_CODENAME=bookworm' in OS_RELEASE.read_text()


@pytest.mark.skipif(not IS_RECORDED_MACHINE, reason="debian12-cpu was recorded on Debian 12; other hosts differ")
def test_local_host_matches_the_debian12_recording() -> None:
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all

    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    live = gather_host_facts(inventory.get_host("@local"), model_dir="/opt/models/Qwen3-8B", ports=[8000])

    fake_state = make_fake_state([("cpu", fake_host_data("debian12-cpu"))])
    recorded = gather_host_facts(fake_state.inventory.get_host("@fake/cpu"), model_dir="/opt/models/Qwen3-8B",
                                 ports=[8000])

    assert live.os == recorded.os
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert live.mem_total_bytes == int(meminfo["MemTotal"].split()[0]) * 1024
    assert live.cpu_count == len(os.sched_getaffinity(0))
    shm = os.statvfs("/dev/shm")
    assert live.shm_bytes == shm.f_blocks * shm.f_frsize
    assert all(any(fnmatch(name, pattern) for pattern in commands.DPKG_PACKAGES) for name in live.packages)
    if shutil.which("nvidia-smi") is None:
        assert live.driver_state == recorded.driver_state == "no_gpu"
        assert (live.gpu_query.status, live.smi.status, live.topology.status) == ("missing", "missing", "missing")
    assert type(live.pci) is type(recorded.pci) and live.pci.status in ("ok", "empty", "missing")
    assert live.docker.status == recorded.docker.status or shutil.which("docker") is not None
    assert live.modules.status == recorded.modules.status
    assert live.secure_boot in ("enabled", "disabled", "unknown")
    assert live.disks["/opt/models/Qwen3-8B"].path == "/opt"
    assert live.disk_free("/opt/models/Qwen3-8B") is not None
