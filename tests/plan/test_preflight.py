"""Preflight on the recorded GPU servers and on hand-built facts: every error names its field and fix."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pyinfra.context import ctx_host, ctx_state

from facts.gather import gather_host_facts
from facts.model import (
    DiskUsage,
    DockerState,
    HostFacts,
    KernelModules,
    ListeningPorts,
    ListeningSocket,
    OsRelease,
    PciDevice,
    PciScan,
)
from facts.parsers import parse_gpu_query
from plan.preflight import DOCKER_IMAGE_BYTES, MIN_SHM_BYTES, preflight
from plan.settings import load_settings
from tests.fakehosts import fake_host_data, make_fake_state

GIB = 2**30


def recorded(profile: str, state: str = "converged") -> HostFacts:
    """Facts gathered from a recorded profile, as deploy.py gathers them."""
    fake = make_fake_state([("h", fake_host_data(profile, state))])
    host = fake.inventory.get_host("@fake/h")
    with ctx_state.use(fake), ctx_host.use(host):
        return gather_host_facts(host, model_dir="/srv/models/Qwen3-8B", ports=[8000])


def run(facts: HostFacts, device: str = "cuda", runtime: str = "venv", **data: Any):
    kwargs = {k: data.pop(k) for k in ("world_size", "model_bytes", "model_present", "own_ports") if k in data}
    return preflight(load_settings(data), facts, device, runtime, [8000], **kwargs)


def fields(result) -> list[str]:
    return [name for name, _ in result.errors]


UBUNTU = OsRelease(id="ubuntu", version_id="24.04", codename="noble", pretty_name="Ubuntu 24.04.2 LTS")
VOLTA_PCI = PciScan(status="ok", devices=(PciDevice(
    slot="00:1e.0", class_code="0302", class_name="3D controller", vendor_id="10de", device_id="1db1",
    description="GV100GL [Tesla V100 SXM2 16GB]"),))
PASCAL_PCI = PciScan(status="ok", devices=(PciDevice(
    slot="00:04.0", class_code="0302", class_name="3D controller", vendor_id="10de", device_id="15f8",
    description="GP100GL [Tesla P100 PCIe 16GB]"),))


@pytest.mark.parametrize(("profile", "state"), [
    ("2080ti-x4-ubuntu2404", "converged"), ("4090-x2-ubuntu2204", "converged"), ("t4-x1-ubuntu2204", "converged"),
    ("a100sxm-x8-ubuntu2204", "converged"), ("h100-x1-ubuntu2404", "converged"),
    ("2080ti-x4-ubuntu2404", "nodriver"), ("h100-x1-ubuntu2404", "olddriver"),
])
def test_recorded_servers_pass_when_the_driver_stage_is_on(profile: str, state: str) -> None:
    assert run(recorded(profile, state), world_size=2).errors == ()


def test_unsupported_os_is_an_error_with_its_override() -> None:
    facts = replace(recorded("h100-x1-ubuntu2404"), os=OsRelease(id="rocky", version_id="9.4", codename=None,
                                                                 pretty_name="Rocky Linux 9.4"))
    result = run(facts)
    assert fields(result) == ["os"]
    assert "Rocky Linux 9.4" in result.errors[0][1] and "vllm_allow_unsupported_os = True" in result.errors[0][1]
    allowed = run(facts, vllm_allow_unsupported_os=True)
    assert allowed.ok and any("Rocky Linux 9.4" in w for w in allowed.warnings)
    assert run(replace(facts, os=replace(UBUNTU, version_id="20.04"))).errors[0][0] == "os"
    assert run(recorded("debian12-cpu"), device="cpu").ok


def test_gpus_must_be_there_and_new_enough_even_before_a_driver() -> None:
    cpu_only = recorded("debian12-cpu")
    assert fields(run(cpu_only, device="cuda"))[:1] == ["gpu"]
    pascal = replace(recorded("h100-x1-ubuntu2404", "nodriver"), pci=PASCAL_PCI)
    result = run(pascal)
    assert fields(result) == ["gpu"] and "compute capability 6.0" in result.errors[0][1]
    volta = replace(recorded("h100-x1-ubuntu2404", "nodriver"), pci=VOLTA_PCI)
    assert "gpu" not in fields(run(volta)), "CUDA 12.9 builds still carry sm_70"


def test_old_driver_is_an_error_only_without_the_driver_stage() -> None:
    t4_470 = recorded("t4-x1-ubuntu2204", "olddriver")
    assert run(t4_470).ok, "the driver stage upgrades it"
    result = run(t4_470, nvidia_driver_manage=False)
    assert fields(result) == ["driver"]
    assert "470.256.02" in result.errors[0][1] and "525.60.13" in result.errors[0][1]
    assert "nvidia_driver_manage = True" in result.errors[0][1]
    # 535 (CUDA 12.2) runs a CUDA 12.9 build through minor version compatibility.
    assert run(recorded("h100-x1-ubuntu2404", "olddriver"), nvidia_driver_manage=False).ok


def test_missing_driver_and_nouveau_are_errors_only_without_the_driver_stage() -> None:
    fresh = recorded("4090-x2-ubuntu2204", "nodriver")
    assert fresh.modules.nouveau
    assert fields(run(fresh, nvidia_driver_manage=False)) == ["driver", "nouveau"]
    assert run(fresh).ok
    pending = recorded("2080ti-x4-ubuntu2404", "rebootpending")
    assert "reboot the host" in run(pending, nvidia_driver_manage=False).errors[0][1]


def test_pinned_branch_must_run_the_vllm_build() -> None:
    result = run(recorded("h100-x1-ubuntu2404", "nodriver"), nvidia_driver_branch="470")
    assert fields(result) == ["nvidia_driver_branch"] and "CUDA 12.9" in result.errors[0][1]


def test_secure_boot_warns_only_when_a_module_will_be_built() -> None:
    assert any("Secure Boot" in w for w in run(recorded("4090-x2-ubuntu2204", "nodriver")).warnings)
    assert not any("Secure Boot" in w for w in run(recorded("4090-x2-ubuntu2204", "converged")).warnings)


def test_model_and_image_must_fit_on_disk() -> None:
    facts = recorded("h100-x1-ubuntu2404")
    small = {key: DiskUsage(path="/", avail_bytes=20 * GIB, size_bytes=100 * GIB) for key in facts.disks}
    tight = replace(facts, disks=small)
    result = run(tight, model_bytes=30 * GIB)
    assert fields(result) == ["model_dir"] and "20.0 GiB free" in result.errors[0][1]
    assert run(tight, model_bytes=30 * GIB, model_present=True).ok
    assert run(tight, model_bytes=10 * GIB).ok
    no_docker = replace(tight, docker=DockerState(status="missing"))
    image = run(no_docker, runtime="docker", model_bytes=1 * GIB)
    assert fields(image) == ["docker"] and f"{DOCKER_IMAGE_BYTES / GIB:.1f} GiB" in image.errors[0][1]
    assert run(tight, runtime="docker", model_bytes=1 * GIB).ok, "docker runs: the image may be pulled already"


def test_small_shm_warns_for_several_gpu_processes() -> None:
    facts = replace(recorded("4090-x2-ubuntu2204"), shm_bytes=64 * 2**20)
    assert any("/dev/shm" in w for w in run(facts, world_size=2).warnings)
    assert not any("/dev/shm" in w for w in run(facts, world_size=1).warnings)
    assert not any("/dev/shm" in w for w in run(replace(facts, shm_bytes=MIN_SHM_BYTES), world_size=2).warnings)


def test_ports_in_use_unless_held_by_our_own_service() -> None:
    busy = replace(recorded("a100sxm-x8-ubuntu2204"), listening=ListeningPorts(
        status="ok", sockets=(ListeningSocket("0.0.0.0", 8000),)))
    result = run(busy)
    assert fields(result) == ["vllm_port"] and "8000 is already in use" in result.errors[0][1]
    assert run(busy, own_ports=[8000]).ok


def test_hand_built_host_without_driver_or_lspci_answers() -> None:
    facts = HostFacts(os=UBUNTU, gpu_query=parse_gpu_query("sh: 1: nvidia-smi: not found"),
                      pci=PciScan(status="ok"), modules=KernelModules(status="ok"))
    assert fields(run(facts)) == ["gpu"]
