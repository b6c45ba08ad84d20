"""Every fact class, run through a real pyinfra State against `@fake` hosts answering from recorded outputs.

The expected values are written out per profile and state, read off the
recorded files by hand, so a parser or command change that alters what a host
reports fails here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from facts import commands
from facts import pyinfra_facts as fact
from facts.gather import gather_host_facts
from facts.model import HostFacts
from tests.fakehosts import (
    ProfileError,
    fake_host_data,
    make_fake_state,
    model_config_response,
    profiles,
    recorded_outputs,
    states,
    write_inventory,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = "/opt/models/Qwen3-8B"
GIB = 2**30

# (profile, state) -> what gather_host_facts must report
EXPECTED: dict[tuple[str, str], dict[str, Any]] = {
    ("2080ti-x4-ubuntu2404", "nodriver"): dict(
        driver_state="not_installed", gpus=0, pci_gpus=4, pci_device="1e07", pci_driver="nouveau", nouveau=True,
        os=("ubuntu", "24.04", "noble"), mem_gib=503, nproc=56, docker="missing"),
    ("2080ti-x4-ubuntu2404", "olddriver"): dict(
        driver_state="working", gpus=4, name="NVIDIA GeForce RTX 2080 Ti", mem_mib=22528, cc=(7, 5),
        driver="535.183.01", cuda="12.2", kind="cross-socket", p2p=False, nvlink=False, pci_driver="nvidia",
        module="535.183.01", nouveau=False, docker="missing"),
    ("2080ti-x4-ubuntu2404", "converged"): dict(
        driver_state="working", gpus=4, name="NVIDIA GeForce RTX 2080 Ti", mem_mib=22528, cc=(7, 5),
        driver="570.153.02", cuda="12.8", kind="cross-socket", p2p=False, nvlink=False, module="570.153.02",
        docker="ok", nvidia_runtime=True, package=("nvidia-driver-570", "570.153.02-0ubuntu0.24.04.1")),
    ("2080ti-x4-ubuntu2404", "rebootpending"): dict(
        driver_state="mismatch", gpus=0, pci_gpus=4, reboot=True),
    ("4090-x2-ubuntu2204", "nodriver"): dict(
        driver_state="not_installed", gpus=0, pci_gpus=2, pci_device="2684", nouveau=True,
        os=("ubuntu", "22.04", "jammy"), secure_boot="enabled"),
    ("4090-x2-ubuntu2204", "olddriver"): dict(
        driver_state="working", gpus=2, name="NVIDIA GeForce RTX 4090", mem_mib=24564, cc=(8, 9),
        driver="550.144.03", cuda="12.4", kind="host-bridge", p2p=False, nvlink=False),
    ("4090-x2-ubuntu2204", "converged"): dict(
        driver_state="working", gpus=2, mem_mib=24564, driver="570.172.08", cuda="12.8", module_open=True,
        docker="missing"),
    # converged, with 12 GiB of GPU 0 held by another process (instances sharing a GPU).
    ("4090-x2-ubuntu2204", "busy"): dict(
        driver_state="working", gpus=2, mem_mib=24564, driver="570.172.08", cuda="12.8", module_open=True,
        docker="missing"),
    ("t4-x1-ubuntu2204", "nodriver"): dict(
        driver_state="not_installed", gpus=0, pci_gpus=1, pci_device="1eb8", nouveau=True, mem_gib=29, nproc=8),
    ("t4-x1-ubuntu2204", "olddriver"): dict(
        driver_state="working", gpus=1, name="Tesla T4", mem_mib=15109, cc=None, legacy=True,
        driver="470.256.02", cuda="11.4", kind="single", p2p=None),
    ("t4-x1-ubuntu2204", "converged"): dict(
        driver_state="working", gpus=1, name="Tesla T4", mem_mib=15360, cc=(7, 5), driver="570.153.02",
        cuda="12.8", kind="single", p2p=None),
    ("a100sxm-x8-ubuntu2204", "nodriver"): dict(
        driver_state="not_installed", gpus=0, pci_gpus=8, nvswitches=6, pci_device="20b2",
        secure_boot="unsupported", port_9100=True),
    ("a100sxm-x8-ubuntu2204", "olddriver"): dict(
        driver_state="working", gpus=8, mem_mib=81920, cc=(8, 0), driver="535.104.05", cuda="12.2",
        kind="nvlink", p2p=True, nvlink=True, nvswitches=6, docker="ok", nvidia_runtime=True),
    ("a100sxm-x8-ubuntu2204", "converged"): dict(
        driver_state="working", gpus=8, name="NVIDIA A100-SXM4-80GB", mem_mib=81920, driver="570.172.08",
        cuda="12.8", kind="nvlink", p2p=True, nvlink=True, mem_gib=2015, nproc=192,
        package=("nvidia-fabricmanager-570", "570.172.08-1")),
    ("h100-x1-ubuntu2404", "nodriver"): dict(
        driver_state="not_installed", gpus=0, pci_gpus=1, pci_device="2331", nvswitches=0),
    ("h100-x1-ubuntu2404", "olddriver"): dict(
        driver_state="working", gpus=1, mem_mib=81559, cc=(9, 0), driver="535.183.01", cuda="12.2"),
    ("h100-x1-ubuntu2404", "converged"): dict(
        driver_state="working", gpus=1, name="NVIDIA H100 PCIe", mem_mib=81559, cc=(9, 0), driver="575.57.08",
        cuda="12.9", kind="single", module="575.57.08", module_open=True, docker="ok", nvidia_runtime=True),
    ("debian12-cpu", "converged"): dict(
        driver_state="no_gpu", gpus=0, pci_gpus=0, os=("debian", "12", "bookworm"), mem_gib=23, nproc=2,
        docker="daemon_down", modules="missing", secure_boot="unknown", port_22=False,
        package=("python3-venv", "3.11.2-1+b1")),
}


def _gather(profile: str, state: str, extra: dict[str, Any] | None = None) -> HostFacts:
    pyinfra_state = make_fake_state([("h", fake_host_data(profile, state, extra))])
    return gather_host_facts(pyinfra_state.inventory.get_host("@fake/h"), model_dir=MODEL_DIR, ports=[8000])


def test_every_recorded_state_has_expectations() -> None:
    recorded = {(p, s) for p in profiles() for s in states(p)}
    assert recorded == set(EXPECTED)


@pytest.mark.parametrize(("profile", "state"), sorted(EXPECTED))
def test_gathered_facts_match_the_recording(profile: str, state: str) -> None:
    facts = _gather(profile, state)
    want = EXPECTED[(profile, state)]
    assert facts.driver_state == want["driver_state"]
    assert len(facts.gpus) == want["gpus"]
    checks = {
        "pci_gpus": lambda: len(facts.pci_gpus),
        "pci_device": lambda: {d.device_id for d in facts.pci_gpus} == {want["pci_device"]} and want["pci_device"],
        "pci_driver": lambda: {d.driver_in_use for d in facts.pci_gpus} == {want["pci_driver"]} and want["pci_driver"],
        "nouveau": lambda: facts.modules.nouveau,
        "modules": lambda: facts.modules.status,
        "os": lambda: (facts.os.id, facts.os.version_id, facts.os.codename) if facts.os else None,
        "mem_gib": lambda: facts.mem_total_bytes // GIB if facts.mem_total_bytes else None,
        "nproc": lambda: facts.cpu_count,
        "docker": lambda: facts.docker.status,
        "nvidia_runtime": lambda: facts.docker.nvidia_runtime,
        "name": lambda: set(facts.gpu_names) == {want["name"]} and want["name"],
        "mem_mib": lambda: facts.min_gpu_memory_mib,
        "cc": lambda: facts.compute_capability,
        "legacy": lambda: facts.gpu_query.legacy_fields,
        "driver": lambda: facts.driver_version,
        "cuda": lambda: facts.cuda_version,
        "kind": lambda: facts.topology.kind,
        "p2p": lambda: facts.p2p,
        "nvlink": lambda: facts.all_nvlink,
        "module": lambda: facts.nvidia_module.version if facts.nvidia_module else None,
        "module_open": lambda: facts.nvidia_module.open_module if facts.nvidia_module else None,
        "nvswitches": lambda: len(facts.pci.nvswitches),
        "secure_boot": lambda: facts.secure_boot,
        "reboot": lambda: facts.reboot_pending,
        "port_9100": lambda: facts.port_in_use(9100),
        "port_22": lambda: facts.port_in_use(22),
        "package": lambda: (want["package"][0], facts.package_version(want["package"][0])),
    }
    for key, expected in want.items():
        if key in ("driver_state", "gpus"):
            continue
        assert checks[key]() == expected, f"{profile}/{state}: {key}"


@pytest.mark.parametrize("profile", [p for p in profiles() if p != "debian12-cpu"])
def test_gpu_profiles_have_disk_shm_and_ports(profile: str) -> None:
    facts = _gather(profile, "converged")
    assert facts.disk_free(MODEL_DIR) is not None and facts.disk_free(MODEL_DIR) > 100 * GIB
    assert facts.shm_bytes is not None and facts.shm_bytes > GIB
    assert facts.port_in_use(22) and not facts.port_in_use(8000)
    assert facts.model_config is None
    assert facts.reboot_pending is False


def test_debian12_cpu_is_this_machine_as_recorded() -> None:
    facts = _gather("debian12-cpu", "converged")
    assert facts.disk_free(MODEL_DIR) == 80735584256
    assert facts.shm_bytes == 25276502016
    assert facts.port_in_use(2024)
    assert facts.pci.message.startswith("read from sysfs")
    assert facts.gpu_query.status == "missing" and facts.smi.status == "missing"


def test_extra_responses_override_the_recording() -> None:
    extra = {"fake_responses": {
        commands.LISTENING_TCP: ["LISTEN 0      4096         0.0.0.0:8000 0.0.0.0:*"],
        **model_config_response({"architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 36}),
    }}
    facts = _gather("t4-x1-ubuntu2204", "converged", extra)
    assert facts.port_in_use(8000) and not facts.port_in_use(22)
    assert facts.model_config == {"architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 36}


def test_each_fact_class_reads_its_own_command() -> None:
    state = make_fake_state([("h", fake_host_data("a100sxm-x8-ubuntu2204", "converged"))])
    host = state.inventory.get_host("@fake/h")
    assert host.get_fact(fact.NvidiaGpus).gpus[7].pci_bus_id == "00000000:CA:00.0"
    assert host.get_fact(fact.NvidiaSmi).driver_version == "570.172.08"
    assert host.get_fact(fact.NvidiaTopology).links[(0, 7)] == "NV12"
    assert len(host.get_fact(fact.NvidiaPciDevices).devices) == 14
    assert host.get_fact(fact.NvidiaKernelModule).version == "570.172.08"
    assert host.get_fact(fact.OsRelease).codename == "jammy"
    assert host.get_fact(fact.MemTotal) == 2113400060 * 1024
    assert host.get_fact(fact.CpuCount) == 192
    assert host.get_fact(fact.DiskSpace, path="/data/models").avail_bytes == 6612958142464
    assert host.get_fact(fact.ShmSize) == 1082060831744
    assert host.get_fact(fact.ListeningPorts).in_use(9100)
    assert host.get_fact(fact.KernelModules).nvidia
    assert host.get_fact(fact.SecureBoot) == "unsupported"
    assert host.get_fact(fact.DebPackageVersions)["docker-ce"].version == "5:28.2.2-1~ubuntu.22.04~jammy"
    assert host.get_fact(fact.DockerInfo).server_version == "28.2.2"
    assert host.get_fact(fact.ModelConfig, path=MODEL_DIR) is None
    connector = host.connector
    assert any("nvidia-smi --query-gpu=" in c for c in connector.executed_commands)


def test_unknown_profile_or_state_is_named() -> None:
    with pytest.raises(ProfileError, match="recorded profiles: 2080ti"):
        recorded_outputs("v100-x8")
    with pytest.raises(ProfileError, match="no state 'broken'; recorded: converged, nodriver"):
        recorded_outputs("t4-x1-ubuntu2204", "broken")


def test_fact_files_all_match_a_command() -> None:
    for profile in profiles():
        for state in states(profile):
            assert set(recorded_outputs(profile, state)) >= {"os_release", "meminfo", "nproc", "disk"}


def test_cli_dry_run_against_fake_hosts(tmp_path: Path) -> None:
    """The pyinfra CLI path: an inventory of fake hosts and a deploy that reads the facts."""
    inventory = write_inventory(tmp_path / "inventory.py", [("gpu1", "2080ti-x4-ubuntu2404", "converged"),
                                                            ("cpu1", "debian12-cpu", "converged")])
    deploy = tmp_path / "deploy.py"
    deploy.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pyinfra import host, logger
        from facts.gather import gather_host_facts
        facts = gather_host_facts(host, model_dir={MODEL_DIR!r}, ports=[8000])
        logger.info("FACTS %s gpus=%d state=%s", host.name, len(facts.gpus), facts.driver_state)
    """))
    result = subprocess.run([str(Path(sys.executable).parent / "pyinfra"), str(inventory), str(deploy), "--dry", "-y"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FACTS @fake/gpu1 gpus=4 state=working" in output
    assert "FACTS @fake/cpu1 gpus=0 state=no_gpu" in output
