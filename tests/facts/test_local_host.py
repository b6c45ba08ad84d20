"""The fact commands through pyinfra's real shell path (`@local`), compared with the recorded debian12-cpu profile.

This proves the command strings run as written under `sh -c` (quoting, the
sysfs fallback, `|| true` on missing tools) and that the recording of this
machine is what the facts really return here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert live.mem_total_bytes == recorded.mem_total_bytes
    assert live.cpu_count == recorded.cpu_count
    assert live.driver_state == recorded.driver_state == "no_gpu"
    assert (live.gpu_query.status, live.smi.status, live.topology.status) == ("missing", "missing", "missing")
    assert live.pci == recorded.pci
    assert live.shm_bytes == recorded.shm_bytes
    assert set(live.packages) == set(recorded.packages)
    assert live.docker.status == recorded.docker.status
    assert live.modules.status == recorded.modules.status
    assert live.secure_boot == recorded.secure_boot
    assert live.disks["/opt/models/Qwen3-8B"].path == "/opt"
    assert live.disk_free("/opt/models/Qwen3-8B") is not None
