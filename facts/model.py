"""What the planner knows about a host: the typed values the parsers return, and HostFacts, all of them.

Pure data (no pyinfra import, no parsing): facts.parsers turns command output into these values,
facts.gather collects them into one HostFacts before any change, and the plan reads typed fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

ToolStatus = Literal["ok", "missing", "no_driver", "mismatch", "no_devices", "error", "empty"]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the driver reports it; memory in MiB."""

    index: int
    name: str
    uuid: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    compute_cap: str | None
    driver_version: str | None
    pci_bus_id: str | None

    @property
    def compute_capability(self) -> tuple[int, int] | None:
        """(major, minor), e.g. (7, 5) for Turing: bfloat16 and FlashAttention-2 need >= (8, 0)."""
        if not self.compute_cap:
            return None
        match = re.fullmatch(r"(\d+)\.(\d+)", self.compute_cap)
        return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class GpuQuery:
    """Result of the GPU query: the GPUs, or why there are none."""

    status: ToolStatus
    gpus: tuple[GpuInfo, ...] = ()
    message: str = ""
    legacy_fields: bool = False


@dataclass(frozen=True)
class SmiSummary:
    """The header of plain `nvidia-smi`: user-space driver version and the newest CUDA it supports."""

    status: ToolStatus
    smi_version: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    message: str = ""

    @property
    def cuda_tuple(self) -> tuple[int, int] | None:
        if not self.cuda_version:
            return None
        major, _, minor = self.cuda_version.partition(".")
        return (int(major), int(minor or 0)) if major.isdigit() and (minor or "0").isdigit() else None


TopologyKind = Literal["nvlink", "pcie-switch", "host-bridge", "cross-socket", "single", "unknown"]


_LINK_RANK = {"PIX": 1, "PXB": 2, "PHB": 3, "NODE": 4, "SYS": 5}


@dataclass(frozen=True)
class Topology:
    """GPU-to-GPU links from `nvidia-smi topo -m` (X, NV#, PIX, PXB, PHB, NODE, SYS)."""

    status: ToolStatus
    gpus: tuple[str, ...] = ()
    links: Mapping[tuple[int, int], str] = field(default_factory=dict)
    cpu_affinity: Mapping[int, str] = field(default_factory=dict)
    numa_affinity: Mapping[int, str] = field(default_factory=dict)
    message: str = ""

    def _pairs(self) -> list[str]:
        n = len(self.gpus)
        return [self.links.get((i, j), "") for i in range(n) for j in range(n) if i < j]

    @property
    def all_nvlink(self) -> bool:
        """Every GPU pair is bonded by NVLink (directly or through NVSwitch)."""
        pairs = self._pairs()
        return bool(pairs) and all(link.startswith("NV") for link in pairs)

    @property
    def p2p(self) -> bool | None:
        """Whether peer-to-peer is likely: NVLink, or all pairs behind PCIe switches (PIX/PXB).

        None for a single GPU or an unreadable matrix. Consumer cards may still have
        P2P disabled by the driver on PIX/PXB; only NVLink is certain.
        """
        pairs = self._pairs()
        if not pairs:
            return None
        return all(link.startswith("NV") or link in ("PIX", "PXB") for link in pairs)

    @property
    def kind(self) -> TopologyKind:
        """The worst path between any two GPUs, named for the sizing explanation."""
        if self.status != "ok" or not self.gpus:
            return "unknown"
        pairs = self._pairs()
        if not pairs:
            return "single"
        if all(link.startswith("NV") for link in pairs):
            return "nvlink"
        worst = max((_LINK_RANK.get(link, 5) for link in pairs if not link.startswith("NV")), default=0)
        return {1: "pcie-switch", 2: "pcie-switch", 3: "host-bridge", 4: "host-bridge"}.get(worst, "cross-socket")


@dataclass(frozen=True)
class PciDevice:
    """One NVIDIA PCI function; seen before any driver is installed."""

    slot: str
    class_code: str
    class_name: str
    vendor_id: str
    device_id: str
    description: str
    subsystem: str | None = None
    driver_in_use: str | None = None
    kernel_modules: tuple[str, ...] = ()

    @property
    def is_gpu(self) -> bool:
        """VGA (0300) or 3D controller (0302); audio, USB and UCSI functions of consumer cards are not."""
        return self.class_code in ("0300", "0302")

    @property
    def is_nvswitch(self) -> bool:
        """NVSwitch bridges (0680): such systems need the fabric manager before CUDA works."""
        return self.class_code == "0680"


@dataclass(frozen=True)
class PciScan:
    """NVIDIA devices on the PCI bus, or 'missing' when lspci is not installed."""

    status: ToolStatus
    devices: tuple[PciDevice, ...] = ()
    message: str = ""

    @property
    def gpus(self) -> tuple[PciDevice, ...]:
        return tuple(d for d in self.devices if d.is_gpu)

    @property
    def nvswitches(self) -> tuple[PciDevice, ...]:
        return tuple(d for d in self.devices if d.is_nvswitch)


@dataclass(frozen=True)
class OsRelease:
    """/etc/os-release: which package names, driver branches and repos apply."""

    id: str
    version_id: str | None
    codename: str | None
    pretty_name: str | None
    id_like: tuple[str, ...] = ()


@dataclass(frozen=True)
class Account:
    """A local account as `getent passwd` shows it."""

    name: str
    uid: int
    home: str
    shell: str


@dataclass(frozen=True)
class FileStamp:
    """A file's size and whole-second modification time: what a copy compares, as rsync's quick check does."""

    size: int
    mtime: int


@dataclass(frozen=True)
class DiskUsage:
    """Free and total bytes of the filesystem holding `path` (the nearest existing parent)."""

    path: str
    avail_bytes: int
    size_bytes: int


@dataclass(frozen=True)
class ListeningSocket:
    address: str
    port: int


@dataclass(frozen=True)
class ListeningPorts:
    """TCP listeners from `ss -ltnH`; 'missing' means unknown, not free."""

    status: ToolStatus
    sockets: tuple[ListeningSocket, ...] = ()

    def in_use(self, port: int) -> bool:
        return any(s.port == port for s in self.sockets)


@dataclass(frozen=True)
class KernelModules:
    """Loaded kernel modules; 'missing' when /proc/modules cannot be read (containers, gVisor)."""

    status: ToolStatus
    modules: frozenset[str] = frozenset()

    @property
    def nouveau(self) -> bool:
        return "nouveau" in self.modules

    @property
    def nvidia(self) -> bool:
        return "nvidia" in self.modules


@dataclass(frozen=True)
class NvidiaModule:
    """The loaded kernel module; a version other than nvidia-smi's means a reboot is pending."""

    version: str
    open_module: bool | None


SecureBoot = Literal["enabled", "disabled", "unsupported", "unknown"]


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    status: str

    @property
    def installed(self) -> bool:
        """'ii' (or 'hi' when held); 'rc' leaves only config files and still prints a version."""
        return len(self.status) >= 2 and self.status[1] == "i"


@dataclass(frozen=True)
class DockerState:
    """`docker info`: whether the engine runs and which runtimes it has (nvidia for GPU containers)."""

    status: Literal["ok", "missing", "daemon_down", "error", "empty"]
    server_version: str | None = None
    client_version: str | None = None
    runtimes: tuple[str, ...] = ()
    default_runtime: str | None = None
    cdi_spec_dirs: tuple[str, ...] = ()
    message: str = ""

    @property
    def nvidia_runtime(self) -> bool:
        return "nvidia" in self.runtimes


@dataclass(frozen=True)
class DaemonConfig:
    """/etc/docker/daemon.json: 'missing' (no file), 'empty', 'invalid' (docker would refuse it) or 'ok'."""

    status: Literal["ok", "missing", "empty", "invalid"]
    data: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def nvidia_runtime(self) -> bool:
        """`nvidia-ctk runtime configure --runtime=docker` has registered the nvidia runtime."""
        runtimes = self.data.get("runtimes")
        return isinstance(runtimes, Mapping) and "nvidia" in runtimes


@dataclass(frozen=True)
class CondaState:
    """A Miniconda install and its environment: conda's version, the env's Python and pip packages."""

    conda_version: str | None = None
    python_version: str | None = None
    packages: Mapping[str, str] = field(default_factory=dict)

    @property
    def python_minor(self) -> str | None:
        """'3.12' from 'Python 3.12.11'."""
        if not self.python_version:
            return None
        return ".".join(self.python_version.split(".")[:2])


DriverState = Literal["working", "not_installed", "not_loaded", "mismatch", "no_gpu", "unknown"]


@dataclass(frozen=True)
class InstallFacts:
    """What the apt sources and runtime install stages decide from: the host's files, packages and state.

    Gathered for the stages the host runs (docker's for the docker runtime, conda's for conda); empty otherwise.
    """

    apt_files: Mapping[str, str | None] = field(default_factory=dict)
    docker_packages: Mapping[str, DebPackage] = field(default_factory=dict)
    docker_files: Mapping[str, str | None] = field(default_factory=dict)
    docker_hashes: Mapping[str, str | None] = field(default_factory=dict)
    docker_daemon: DaemonConfig = DaemonConfig(status="empty")
    conda: CondaState = CondaState()
    conda_files: Mapping[str, str | None] = field(default_factory=dict)
    conda_packages: Mapping[str, DebPackage] = field(default_factory=dict)
    # The venv runtime's installed distributions (name -> versions, from .dist-info); None where not asked.
    venv_packages: Mapping[str, Sequence[str]] | None = None
    # The service account (venv and conda runtimes); None where it does not exist or was not asked.
    account: Account | None = None


@dataclass(frozen=True)
class HostFacts:
    """Everything the planner reads about one host, gathered once before any change."""

    os: OsRelease | None = None
    mem_total_bytes: int | None = None
    cpu_count: int | None = None
    gpu_query: GpuQuery = GpuQuery(status="empty")
    smi: SmiSummary = SmiSummary(status="empty")
    topology: Topology = Topology(status="empty")
    pci: PciScan = PciScan(status="empty")
    disks: Mapping[str, DiskUsage] = field(default_factory=dict)
    shm_bytes: int | None = None
    listening: ListeningPorts = ListeningPorts(status="empty")
    modules: KernelModules = KernelModules(status="empty")
    nvidia_module: NvidiaModule | None = None
    secure_boot: SecureBoot = "unknown"
    packages: Mapping[str, DebPackage] = field(default_factory=dict)
    docker: DockerState = DockerState(status="empty")
    model_config: dict[str, Any] | None = None
    kernel_release: str | None = None
    # PCIe ACS of the bridges (multi-node gathering only; None where not gathered).
    pci_acs: PciAcs | None = None
    # config.json and free disk of every model directory of the host's instances, by path (empty: every
    # instance sees `model_config` and `disks`).
    model_configs: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)
    model_disks: Mapping[str, DiskUsage | None] = field(default_factory=dict)
    # The install stages' inputs; None where not gathered (a plan for inspection plans no install stage).
    install: InstallFacts | None = None

    def for_model(self, model_dir: str) -> HostFacts:
        """The facts as an instance serving from `model_dir` sees them: that directory's disk and config.json."""
        if model_dir not in self.model_configs:
            return self
        disks = dict(self.disks)
        usage = self.model_disks.get(model_dir)
        if usage is not None:
            disks[model_dir] = usage
        return replace(self, disks=disks, model_config=self.model_configs[model_dir])

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        return self.gpu_query.gpus

    @property
    def pci_gpus(self) -> tuple[PciDevice, ...]:
        return self.pci.gpus

    @property
    def gpu_count(self) -> int:
        """GPUs the driver sees, or else the cards on the PCI bus (before a driver is installed)."""
        return len(self.gpus) or len(self.pci_gpus)

    @property
    def gpu_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.gpus)

    @property
    def min_gpu_memory_mib(self) -> int | None:
        """The smallest card bounds tensor parallelism: every rank holds an equal share."""
        sizes = [g.memory_total_mib for g in self.gpus if g.memory_total_mib is not None]
        return min(sizes) if sizes else None

    @property
    def compute_capability(self) -> tuple[int, int] | None:
        """Lowest compute capability among the GPUs (decides dtype and attention backend)."""
        caps = [g.compute_capability for g in self.gpus if g.compute_capability is not None]
        return min(caps) if caps else None

    @property
    def all_nvlink(self) -> bool:
        return self.topology.all_nvlink

    @property
    def p2p(self) -> bool | None:
        return self.topology.p2p

    @property
    def driver_version(self) -> str | None:
        if self.smi.driver_version:
            return self.smi.driver_version
        versions = {g.driver_version for g in self.gpus if g.driver_version}
        return versions.pop() if len(versions) == 1 else None

    @property
    def cuda_version(self) -> str | None:
        return self.smi.cuda_version

    @property
    def needs_fabric_manager(self) -> bool:
        return bool(self.pci.nvswitches)

    @property
    def driver_state(self) -> DriverState:
        """What the NVIDIA driver is doing, from the nvidia-smi answers and the PCI bus."""
        if self.gpus:
            return "working"
        status = self.gpu_query.status if self.gpu_query.status != "empty" else self.smi.status
        if status == "mismatch":
            return "mismatch"
        if status in ("no_driver", "no_devices") and self.pci_gpus:
            return "not_loaded"
        if status == "missing":
            return "not_installed" if self.pci_gpus or self.pci.status != "ok" else "no_gpu"
        if self.pci.status == "ok" and not self.pci_gpus:
            return "no_gpu"
        return "unknown"

    @property
    def reboot_pending(self) -> bool:
        """The loaded kernel module differs from the installed user-space driver."""
        if self.driver_state == "mismatch":
            return True
        loaded = self.nvidia_module.version if self.nvidia_module else None
        return bool(loaded and self.driver_version and loaded != self.driver_version)

    def package_version(self, name: str) -> str | None:
        package = self.packages.get(name)
        return package.version if package and package.installed else None

    def installed_packages(self, prefix: str) -> tuple[DebPackage, ...]:
        return tuple(p for n, p in sorted(self.packages.items()) if n.startswith(prefix) and p.installed)

    def port_in_use(self, port: int) -> bool:
        """True when something listens on the port; unknown (no ss) counts as free."""
        return self.listening.in_use(port)

    def disk_free(self, path: str) -> int | None:
        """Free bytes where `path` lives: the gathered path itself or its nearest gathered parent."""
        best: DiskUsage | None = None
        best_len = -1
        for key, usage in self.disks.items():
            prefix = key.rstrip("/") + "/"
            if (path == key or path.startswith(prefix) or key == "/") and len(key) > best_len:
                best, best_len = usage, len(key)
        return best.avail_bytes if best else None


@dataclass(frozen=True)
class Route:
    """`ip -o route get ADDRESS`: the interface and source address the kernel uses to reach ADDRESS."""

    status: Literal["ok", "missing", "unreachable", "error", "empty"]
    destination: str | None = None
    dev: str | None = None
    src: str | None = None
    via: str | None = None
    local: bool = False  # ADDRESS is this host's own (the kernel answers through `lo`)
    message: str = ""


@dataclass(frozen=True)
class InterfaceAddress:
    """One IPv4 address of `ip -o -4 addr show`."""

    ifname: str
    address: str
    prefixlen: int
    scope: str = "global"


@dataclass(frozen=True)
class IbPort:
    """One port of an RDMA adapter as `ibstat` prints it."""

    ca: str
    number: int
    state: str
    physical_state: str
    link_layer: str
    rate: int | None = None

    @property
    def active(self) -> bool:
        return self.state == "Active" and self.physical_state == "LinkUp"

    @property
    def name(self) -> str:
        """How NCCL_IB_HCA names it: `mlx5_0:1`."""
        return f"{self.ca}:{self.number}"


@dataclass(frozen=True)
class IbStat:
    """RDMA adapters from `ibstat`: 'missing' when infiniband-diags is not installed (then no RDMA is assumed)."""

    status: Literal["ok", "missing", "no_devices", "error", "empty"]
    ports: tuple[IbPort, ...] = ()
    message: str = ""

    @property
    def active_infiniband(self) -> tuple[IbPort, ...]:
        return tuple(p for p in self.ports if p.active and p.link_layer == "InfiniBand")

    @property
    def active_roce(self) -> tuple[IbPort, ...]:
        return tuple(p for p in self.ports if p.active and p.link_layer == "Ethernet")


@dataclass(frozen=True)
class AcsBridge:
    """A PCI bridge with Access Control Services: which redirect bits its ACSCtl has on."""

    slot: str
    description: str
    enabled: frozenset[str]

    @property
    def redirects(self) -> bool:
        """P2P requests or completions are sent up to the root complex (what breaks or slows GPU P2P)."""
        return bool({"SrcValid", "ReqRedir", "CmpltRedir"} & self.enabled)


@dataclass(frozen=True)
class PciAcs:
    """ACS state of the PCI bridges from `lspci -vvv -d ::0604`; 'denied' when capabilities need root."""

    status: Literal["ok", "missing", "denied", "empty"]
    bridges: tuple[AcsBridge, ...] = ()

    @property
    def redirecting(self) -> tuple[AcsBridge, ...]:
        return tuple(b for b in self.bridges if b.redirects)
