"""The pure parsers on every recorded fixture and on the odd inputs real hosts produce."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from facts import parsers as p
from facts.model import HostFacts
from tests.fakehosts import PROFILES_DIR

FIXTURES = sorted(PROFILES_DIR.glob("**/*.txt"))

PARSERS: dict[str, Callable[[str], Any]] = {
    "gpus": p.parse_gpu_query,
    "nvidia_smi": p.parse_nvidia_smi,
    "topology": p.parse_topology,
    "lspci": p.parse_lspci,
    "nvidia_module": p.parse_nvidia_module_version,
    "os_release": p.parse_os_release,
    "meminfo": p.parse_meminfo_total,
    "nproc": p.parse_nproc,
    "disk": p.parse_df,
    "shm": p.parse_df_size,
    "ss": p.parse_ss_listening,
    "modules": p.parse_modules,
    "secure_boot": p.parse_secure_boot,
    "dpkg": p.parse_dpkg_versions,
    "docker_info": p.parse_docker_info,
    "daemon_json": p.parse_daemon_json,
    "files": p.parse_tail_files,
    "hashes": p.parse_sha256sum,
    "conda": p.parse_conda_state,
    "kernel": p.parse_kernel_release,
}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: str(path.relative_to(PROFILES_DIR)))
def test_every_fixture_parses_to_a_known_answer(path: Path) -> None:
    """No recorded output may fall through to 'error' or None: each is a state the plan can act on."""
    result = PARSERS[path.stem](path.read_text())
    assert result is not None
    status = getattr(result, "status", None)
    assert status not in ("error", "empty"), f"{path}: {result}"
    if path.stem in ("secure_boot",) and "debian12-cpu" not in str(path):
        assert result != "unknown"
    if path.stem == "dpkg":
        assert result and all(pkg.version for pkg in result.values())


# --- nvidia-smi --query-gpu -------------------------------------------------------------------------------------


def test_gpu_query_reads_all_fields() -> None:
    out = "0, NVIDIA GeForce RTX 2080 Ti, GPU-1a2b, 22528, 1, 22183, 7.5, 570.153.02, 00000000:18:00.0\n"
    gpu = p.parse_gpu_query(out).gpus[0]
    assert gpu == p.GpuInfo(0, "NVIDIA GeForce RTX 2080 Ti", "GPU-1a2b", 22528, 1, 22183, "7.5", "570.153.02",
                            "00000000:18:00.0")
    assert gpu.compute_capability == (7, 5)


def test_gpu_query_unreported_values_become_none() -> None:
    out = "0, NVIDIA GB10, GPU-9f, [N/A], [N/A], [N/A], 12.1, 580.95.05, 0000000F:01:00.0"
    gpu = p.parse_gpu_query(out).gpus[0]
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.memory_free_mib) == (None, None, None)
    assert gpu.compute_capability == (12, 1)
    facts = HostFacts(gpu_query=p.parse_gpu_query(out))
    assert facts.min_gpu_memory_mib is None and facts.gpu_count == 1


def test_gpu_query_old_driver_falls_back_without_compute_cap() -> None:
    out = ['Field "compute_cap" is not a valid field to query.',
           "0, Tesla T4, GPU-9a, 15109, 3, 15106, 470.256.02, 00000000:00:04.0"]
    query = p.parse_gpu_query(out)
    assert query.status == "ok" and query.legacy_fields
    assert query.gpus[0].compute_cap is None and query.gpus[0].compute_capability is None
    assert query.gpus[0].driver_version == "470.256.02"


@pytest.mark.parametrize(("out", "status"), [
    ("", "empty"),
    ("sh: 1: nvidia-smi: not found\nsh: 1: nvidia-smi: not found", "missing"),
    ("bash: line 1: nvidia-smi: command not found", "missing"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
     "NVIDIA driver is installed and running.\n", "no_driver"),
    ("Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 570.153", "mismatch"),
    ("No devices were found", "no_devices"),
    ("Unable to determine the device handle for GPU0000:18:00.0: Unknown Error", "error"),
])
def test_gpu_query_failures_are_classified(out: str, status: str) -> None:
    query = p.parse_gpu_query(out)
    assert query.status == status and query.gpus == ()


def test_compute_cap_garbage_is_none() -> None:
    gpu = p.parse_gpu_query("0, X, GPU-1, 1024, 0, 1024, sm75, 570.1, 0000:01:00.0").gpus[0]
    assert gpu.compute_cap == "sm75" and gpu.compute_capability is None


# --- plain nvidia-smi -------------------------------------------------------------------------------------------


def test_smi_header_variants() -> None:
    kmd = "| NVIDIA-SMI 610.88                 KMD Version: 610.88        CUDA UMD Version: 13.3     |"
    assert p.parse_nvidia_smi(kmd).cuda_version == "13.3"
    na = "| NVIDIA-SMI 470.256.02   Driver Version: 470.256.02   CUDA Version: N/A       |"
    summary = p.parse_nvidia_smi(na)
    assert summary.driver_version == "470.256.02" and summary.cuda_version is None and summary.cuda_tuple is None
    new = "| NVIDIA-SMI 575.57.08   Driver Version: 575.57.08   CUDA Version: 12.9 |"
    assert p.parse_nvidia_smi(new).cuda_tuple == (12, 9)
    assert p.parse_nvidia_smi("something else entirely").status == "error"


# --- nvidia-smi topo -m -----------------------------------------------------------------------------------------

SPACED_FIVE = """        GPU0    GPU1    GPU2    GPU3    GPU4    CPU Affinity    NUMA Affinity   GPU NUMA ID
GPU0     X      SYS     SYS     SYS     SYS     8-15,24-31      1               N/A
GPU1    SYS      X      PHB     NODE    NODE    0-7,16-23       0               N/A
GPU2    SYS     PHB      X      NODE    NODE    0-7,16-23       0               N/A
GPU3    SYS     NODE    NODE     X      PHB     0-7,16-23       0               N/A
GPU4    SYS     NODE    NODE    PHB      X      0-7,16-23       0               N/A
"""

WITH_NICS = """\tGPU0\tGPU1\tNIC0\tNIC1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tPXB\tPIX\tSYS\t0-23\t0\t\tN/A
GPU1\tPXB\t X \tPIX\tSYS\t0-23\t0\t\tN/A
NIC0\tPIX\tPIX\t X \tSYS
NIC1\tSYS\tSYS\tSYS\t X
"""


def test_topology_space_separated_copy() -> None:
    topo = p.parse_topology(SPACED_FIVE)
    assert topo.gpus == ("GPU0", "GPU1", "GPU2", "GPU3", "GPU4")
    assert topo.links[(1, 2)] == "PHB" and topo.links[(0, 4)] == "SYS"
    assert topo.cpu_affinity[0] == "8-15,24-31" and topo.numa_affinity[1] == "0"
    assert topo.kind == "cross-socket" and topo.p2p is False and not topo.all_nvlink


def test_topology_nic_columns_are_not_gpus() -> None:
    topo = p.parse_topology(WITH_NICS)
    assert topo.gpus == ("GPU0", "GPU1")
    assert topo.links == {(0, 0): "X", (0, 1): "PXB", (1, 0): "PXB", (1, 1): "X"}
    assert topo.p2p is True and topo.kind == "pcie-switch"
    assert topo.cpu_affinity == {0: "0-23", 1: "0-23"}


def test_topology_mixed_nvlink_pairs_are_not_all_nvlink() -> None:
    text = ("\tGPU0\tGPU1\tGPU2\tCPU Affinity\nGPU0\t X \tNV4\tSYS\t0-7\n"
            "GPU1\tNV4\t X \tSYS\t0-7\nGPU2\tSYS\tSYS\t X \t8-15\n")
    topo = p.parse_topology(text)
    assert not topo.all_nvlink and topo.p2p is False and topo.kind == "cross-socket"


def test_topology_single_and_failures() -> None:
    single = p.parse_topology("\tGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\nGPU0\t X \t0-7\tN/A\t\tN/A\n")
    assert single.kind == "single" and single.p2p is None and not single.all_nvlink
    assert p.parse_topology("sh: 1: nvidia-smi: not found").status == "missing"
    assert p.parse_topology("").kind == "unknown"
    assert p.parse_topology("garbage").status == "error"


# --- lspci ------------------------------------------------------------------------------------------------------


def test_lspci_plain_nn_without_driver_lines() -> None:
    scan = p.parse_lspci(
        "0000:1b:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)\n"
        "0000:07:00.0 Bridge [0680]: NVIDIA Corporation GH100 [H100 NVSwitch] [10de:22a3] (rev a1)\n"
        "01:00.1 Audio device [0403]: NVIDIA Corporation AD102 High Definition Audio Controller [10de:22ba]\n"
    )
    assert [d.device_id for d in scan.gpus] == ["2330"]
    assert scan.gpus[0].description == "NVIDIA Corporation GH100 [H100 SXM5 80GB]"
    assert scan.gpus[0].driver_in_use is None and len(scan.nvswitches) == 1
    assert scan.devices[2].class_name == "Audio device" and not scan.devices[2].is_gpu


def test_lspci_sysfs_fallback() -> None:
    scan = p.parse_lspci("lspci: not found, reading sysfs\nsysfs 0000:18:00.0 0x030000 0x1e07 nouveau\n"
                         "sysfs 0000:18:00.1 0x040300 0x10f7 \n")
    assert scan.status == "ok" and [(d.slot, d.device_id, d.driver_in_use) for d in scan.gpus] == [
        ("18:00.0", "1e07", "nouveau")]
    assert len(scan.devices) == 2


def test_lspci_missing_and_empty() -> None:
    assert p.parse_lspci("bash: lspci: command not found").status == "missing"
    empty = p.parse_lspci("")
    assert empty.status == "ok" and empty.gpus == ()


# --- small files ------------------------------------------------------------------------------------------------


def test_os_release_and_missing_id() -> None:
    assert p.parse_os_release('NAME="X"\nVERSION_ID="1"') is None
    rel = p.parse_os_release("ID=ubuntu\nVERSION_ID='22.04'\nUBUNTU_CODENAME=jammy\n# comment=1")
    assert rel == p.OsRelease(id="ubuntu", version_id="22.04", codename="jammy", pretty_name=None)


def test_meminfo_nproc_df() -> None:
    assert p.parse_meminfo_total("MemTotal:       2113400060 kB\n") == 2113400060 * 1024
    assert p.parse_meminfo_total("MemFree: 1 kB") is None
    assert p.parse_nproc("nproc: not found") is None
    assert p.parse_df("df: /x: No such file or directory") is None
    assert p.parse_df("     Avail  1B-blocks\n12 34", path="/given") == p.DiskUsage("/given", 12, 34)
    assert p.parse_df_size("") is None


def test_ss_ipv6_wildcards_and_process_column() -> None:
    ports = p.parse_ss_listening(
        "LISTEN 0      4096   127.0.0.53%lo:53        0.0.0.0:*    users:((\"systemd-resolve\",pid=1,fd=15))\n"
        "LISTEN 0      128             [::1]:8000           [::]:*\n"
        "LISTEN 0      511                 *:80                *:*\n"
    )
    assert [(s.address, s.port) for s in ports.sockets] == [("127.0.0.53%lo", 53), ("::1", 8000), ("*", 80)]
    assert ports.in_use(8000) and ports.in_use(80) and not ports.in_use(22)
    missing = p.parse_ss_listening("sh: 1: ss: not found")
    assert missing.status == "missing" and not missing.in_use(22)


def test_modules_from_lsmod_and_missing() -> None:
    mods = p.parse_modules("Module                  Size  Used by\nnvidia_uvm           2076672  0\n"
                           "nouveau 3096576 0\n")
    assert mods.nouveau and not mods.nvidia and "nvidia_uvm" in mods.modules and "Module" not in mods.modules
    assert p.parse_modules("cat: /proc/modules: No such file or directory").status == "missing"


def test_nvidia_module_versions() -> None:
    open_mod = p.parse_nvidia_module_version(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  575.57.08  Release Build  (dvs-builder@U16)  "
        "Sat May 24 07:21:25 UTC 2025\nGCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04) ")
    assert open_mod == p.NvidiaModule("575.57.08", True)
    assert p.parse_nvidia_module_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  515.76  Mon") == \
        p.NvidiaModule("515.76", False)
    assert p.parse_nvidia_module_version("570.153.02\n") == p.NvidiaModule("570.153.02", None)
    assert p.parse_nvidia_module_version("") is None


@pytest.mark.parametrize(("out", "state"), [
    ("SecureBoot enabled", "enabled"),
    ("SecureBoot disabled\nPlatform is in Setup Mode", "disabled"),
    ("This system doesn't support Secure Boot", "unsupported"),
    ("EFI variables are not supported on this system", "unsupported"),
    ("sh: 1: mokutil: not found", "unknown"),
])
def test_secure_boot(out: str, state: str) -> None:
    assert p.parse_secure_boot(out) == state


def test_dpkg_states() -> None:
    pkgs = p.parse_dpkg_versions(
        "nvidia-driver-570 570.153.02-0ubuntu0.24.04.1 ii \nnvidia-driver-535 535.183.01-0ubuntu0.24.04.1 rc \n"
        "nvidia-driver-550  un \ndocker-ce 5:28.2.2-1~ubuntu.24.04~noble hi \n"
        "dpkg-query: no packages found matching cuda-drivers*\n")
    assert pkgs["nvidia-driver-570"].installed and not pkgs["nvidia-driver-535"].installed
    assert pkgs["nvidia-driver-550"] == p.DebPackage("nvidia-driver-550", "", "un")
    assert pkgs["docker-ce"].installed and "dpkg-query:" not in pkgs
    facts = HostFacts(packages=pkgs)
    assert facts.package_version("nvidia-driver-535") is None
    assert [x.name for x in facts.installed_packages("nvidia-driver-")] == ["nvidia-driver-570"]


def test_docker_states() -> None:
    assert p.parse_docker_info("sh: 1: docker: not found").status == "missing"
    down = p.parse_docker_info('{"ServerVersion":"","ClientInfo":{"Version":"28.2.2"}}\n'
                               "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
    assert down.status == "daemon_down" and down.client_version == "28.2.2" and "Cannot connect" in down.message
    ok = p.parse_docker_info('{"ServerVersion":"28.2.2","Runtimes":{"runc":{},"nvidia":{}},"DefaultRuntime":"runc"}')
    assert ok.nvidia_runtime and ok.runtimes == ("nvidia", "runc")
    assert p.parse_docker_info("permission denied while trying to connect").status == "error"


def test_json_object() -> None:
    assert p.parse_json_object('{"a": 1}') == {"a": 1}
    assert p.parse_json_object('{"a": ') is None
    assert p.parse_json_object("[1, 2]") is None
    assert p.parse_json_object("") is None


# --- HostFacts helpers ------------------------------------------------------------------------------------------


def test_disk_free_uses_the_nearest_gathered_parent() -> None:
    facts = HostFacts(disks={"/": p.DiskUsage("/", 10, 100), "/data": p.DiskUsage("/data", 500, 1000)})
    assert facts.disk_free("/data/models/q") == 500
    assert facts.disk_free("/database") == 10
    assert facts.disk_free("/opt/x") == 10
    assert HostFacts().disk_free("/opt") is None


def test_driver_state_from_tool_answers() -> None:
    pci = p.parse_lspci("01:00.0 VGA compatible controller [0300]: NVIDIA Corporation AD102 [10de:2684]")
    no_driver = p.parse_gpu_query("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    assert HostFacts(gpu_query=no_driver, pci=pci).driver_state == "not_loaded"
    assert HostFacts(gpu_query=p.parse_gpu_query("sh: 1: nvidia-smi: not found"), pci=pci).driver_state == \
        "not_installed"
    assert HostFacts(gpu_query=p.parse_gpu_query("sh: 1: nvidia-smi: not found"),
                       pci=p.parse_lspci("")).driver_state == "no_gpu"
    assert HostFacts().driver_state == "unknown"


def test_reboot_pending_when_loaded_module_differs() -> None:
    smi = p.parse_nvidia_smi("| NVIDIA-SMI 570.153.02   Driver Version: 570.153.02   CUDA Version: 12.8 |")
    stale = HostFacts(smi=smi, nvidia_module=p.NvidiaModule("535.183.01", False))
    assert stale.reboot_pending
    assert not HostFacts(smi=smi, nvidia_module=p.NvidiaModule("570.153.02", False)).reboot_pending


def test_a_venvs_dist_info_listing_says_what_pip_freeze_says() -> None:
    """On this project's own virtualenv, run for real: the listing replaces `pip freeze` at planning."""
    import subprocess
    import sys

    from facts import commands
    from plan.packages import _pip_name

    venv = sys.prefix
    listing = subprocess.run(["sh", "-c", commands.venv_distributions(venv)], capture_output=True, text=True,
                             check=True).stdout
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                            check=True).stdout
    frozen: dict[str, set[str]] = {}
    for line in freeze.splitlines():
        if "==" in line:
            name, _, version = line.partition("==")
            frozen.setdefault(_pip_name(name), set()).add(version)
    listed = {_pip_name(name): versions for name, versions in p.parse_dist_info_names(listing).items()}
    assert listed and listed == frozen
    assert p.parse_dist_info_names(["ls: cannot access '/x': No such file", "README.txt", "a-1.0.dist-info/x"]) == {}


def test_a_passwd_entry_from_getent_parses_as_the_system_reads_it() -> None:
    import pwd
    import subprocess

    from facts import commands

    entry = pwd.getpwuid(0)
    out = subprocess.run(["sh", "-c", commands.passwd_entry(entry.pw_name)], capture_output=True, text=True,
                         check=True).stdout
    account = p.parse_passwd_entry(out)
    assert account is not None
    assert (account.name, account.uid, account.home, account.shell) == (entry.pw_name, 0, entry.pw_dir,
                                                                        entry.pw_shell)
    missing = subprocess.run(["sh", "-c", commands.passwd_entry("no-such-user-x")], capture_output=True,
                             text=True, check=True).stdout
    assert p.parse_passwd_entry(missing) is None and p.parse_passwd_entry("garbage:line") is None
