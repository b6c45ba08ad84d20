"""Parsers for the raw text of host commands, into small frozen dataclasses.

Pure Python (no pyinfra import) so the plan can be computed and tested from
recorded outputs alone. Every parser takes the command's text as printed and
never raises on odd input: a missing tool, an unloaded driver or a field the
driver does not know becomes a status or None, which the plan turns into a
decision (install the driver, reboot, refuse) with a reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Text = str | Iterable[str]

# What nvidia-smi prints for a value it cannot report.
_UNREPORTED = frozenset({"", "N/A", "[N/A]", "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]",
                         "[GPU requires reset]", "[GPU is lost]"})
_NOT_FOUND = re.compile(r"(?:command not found|: not found|No such file or directory)\s*$")
_VERSION = re.compile(r"\b(\d{3}\.\d+(?:\.\d+)?)\b")

ToolStatus = Literal["ok", "missing", "no_driver", "mismatch", "no_devices", "error", "empty"]


def _lines(text: Text) -> list[str]:
    if isinstance(text, str):
        return text.splitlines()
    return [line.rstrip("\n") for line in text]


def _is_missing(lines: list[str]) -> bool:
    """The shell's own 'not found' for the tool itself (sh: 1: X: not found / bash: X: command not found)."""
    return any(_NOT_FOUND.search(line) for line in lines[:2]) and len(lines) <= 4


def _nvidia_failure(lines: list[str]) -> tuple[ToolStatus, str] | None:
    """Classify the ways nvidia-smi fails before it can report anything."""
    joined = "\n".join(lines)
    if not joined.strip():
        return "empty", ""
    if _is_missing(lines):
        return "missing", lines[0].strip()
    if "Driver/library version mismatch" in joined:
        return "mismatch", next(line for line in lines if "mismatch" in line).strip()
    if "couldn't communicate with the NVIDIA driver" in joined or "NVIDIA driver is not loaded" in joined:
        return "no_driver", next(line for line in lines if line.strip()).strip()
    if "No devices were found" in joined:
        return "no_devices", "No devices were found"
    return None


def _value(cell: str) -> str | None:
    cell = cell.strip()
    return None if cell in _UNREPORTED else cell


def _int(cell: str | None) -> int | None:
    if cell is None:
        return None
    try:
        return int(float(cell))
    except ValueError:
        return None


# --- nvidia-smi --query-gpu ------------------------------------------------------------------------------------


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


def parse_gpu_query(text: Text) -> GpuQuery:
    """Rows of `nvidia-smi --query-gpu=<GPU_QUERY_FIELDS> --format=csv,noheader,nounits`.

    Accepts the legacy row shape (no compute_cap) printed by the fallback query on
    drivers that reject the field, and skips that driver's error line.
    """
    lines = _lines(text)
    failure = _nvidia_failure(lines)
    if failure and failure[0] != "empty":
        return GpuQuery(status=failure[0], message=failure[1])
    gpus: list[GpuInfo] = []
    legacy = False
    notes: list[str] = []
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 9:
            index, name, uuid, total, used, free, cap, driver, bus = cells
        elif len(cells) == 8:
            index, name, uuid, total, used, free, driver, bus = cells
            cap = ""
            legacy = True
        else:
            if line.strip():
                notes.append(line.strip())
            continue
        if not index.isdigit():
            notes.append(line.strip())
            continue
        gpus.append(GpuInfo(
            index=int(index), name=name, uuid=_value(uuid),
            memory_total_mib=_int(_value(total)), memory_used_mib=_int(_value(used)),
            memory_free_mib=_int(_value(free)), compute_cap=_value(cap),
            driver_version=_value(driver), pci_bus_id=_value(bus),
        ))
    if gpus:
        return GpuQuery(status="ok", gpus=tuple(gpus), legacy_fields=legacy)
    if not notes:
        return GpuQuery(status="empty")
    return GpuQuery(status="error", message=notes[0])


# --- plain nvidia-smi -------------------------------------------------------------------------------------------


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


_SMI_HEADER = re.compile(r"NVIDIA-SMI\s+(\S+)\s+(?:Driver|KMD) Version:\s+(\S+)\s+(?:CUDA|CUDA UMD) Version:\s+(\S+)")


def parse_nvidia_smi(text: Text) -> SmiSummary:
    """`nvidia-smi` with no arguments, any driver generation (470's 79-column and 5xx's wide table)."""
    lines = _lines(text)
    failure = _nvidia_failure(lines)
    if failure:
        return SmiSummary(status=failure[0], message=failure[1])
    for line in lines:
        match = _SMI_HEADER.search(line)
        if match:
            cuda = _value(match.group(3))
            return SmiSummary(status="ok", smi_version=match.group(1), driver_version=match.group(2),
                              cuda_version=cuda)
    return SmiSummary(status="error", message=next((line.strip() for line in lines if line.strip()), ""))


# --- nvidia-smi topo -m -----------------------------------------------------------------------------------------

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


def parse_topology(text: Text) -> Topology:
    """The matrix of `nvidia-smi topo -m`, whether columns are tab- or space-separated; NIC rows are ignored."""
    lines = _lines(text)
    failure = _nvidia_failure(lines)
    if failure:
        return Topology(status=failure[0], message=failure[1])
    header: list[str] | None = None
    rows: dict[int, list[str]] = {}
    for line in lines:
        tokens = line.split()
        if not tokens:
            continue
        if header is None and tokens[0].startswith("GPU0") and "X" not in tokens[:2]:
            columns: list[str] = []
            for token in tokens:
                if token in ("CPU", "NUMA", "GPU") or token.startswith("Affinity"):
                    break
                columns.append(token)
            header = columns
            continue
        match = re.fullmatch(r"GPU(\d+)", tokens[0])
        if header is not None and match:
            rows[int(match.group(1))] = tokens[1:]
    if header is None:
        return Topology(status="error", message=next((line.strip() for line in lines if line.strip()), ""))
    gpu_columns = [i for i, name in enumerate(header) if re.fullmatch(r"GPU\d+", name)]
    links: dict[tuple[int, int], str] = {}
    cpu: dict[int, str] = {}
    numa: dict[int, str] = {}
    for row_gpu, cells in rows.items():
        for col in gpu_columns:
            if col < len(cells):
                links[(row_gpu, int(header[col][3:]))] = cells[col]
        rest = cells[len(header):]
        if rest:
            cpu[row_gpu] = rest[0]
        if len(rest) > 1:
            numa[row_gpu] = rest[1]
    return Topology(status="ok", gpus=tuple(header[i] for i in gpu_columns), links=links,
                    cpu_affinity=cpu, numa_affinity=numa)


# --- lspci -nnk -d 10de: ----------------------------------------------------------------------------------------


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


_PCI_LINE = re.compile(
    r"^(?P<slot>[0-9a-fA-F:.]+)\s+(?P<cname>[^\[]+?)\s*\[(?P<ccode>[0-9a-fA-F]{4})\]:\s*"
    r"(?P<desc>.*?)\s*\[(?P<vendor>[0-9a-fA-F]{4}):(?P<device>[0-9a-fA-F]{4})\](?:\s*\(rev [0-9a-fA-F]+\))?\s*$"
)


def parse_lspci(text: Text) -> PciScan:
    """`lspci -nnk -d 10de:` (also plain `-nn`): device lines plus indented driver/module lines."""
    lines = _lines(text)
    if not "".join(lines).strip():
        return PciScan(status="ok")
    if lines[0].startswith("lspci: not found, reading sysfs"):
        return _parse_pci_sysfs(lines[1:])
    if _is_missing(lines):
        return PciScan(status="missing", message=lines[0].strip())
    devices: list[dict[str, Any]] = []
    for line in lines:
        match = _PCI_LINE.match(line.strip()) if not line[:1].isspace() else None
        if match:
            devices.append(dict(
                slot=match["slot"], class_code=match["ccode"], class_name=match["cname"].strip(),
                vendor_id=match["vendor"].lower(), device_id=match["device"].lower(), description=match["desc"],
            ))
            continue
        if not devices or not line[:1].isspace():
            continue
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "Subsystem":
            devices[-1]["subsystem"] = value
        elif key == "Kernel driver in use":
            devices[-1]["driver_in_use"] = value
        elif key == "Kernel modules":
            devices[-1]["kernel_modules"] = tuple(m.strip() for m in value.split(",") if m.strip())
    if not devices:
        return PciScan(status="error", message=lines[0].strip())
    return PciScan(status="ok", devices=tuple(PciDevice(**d) for d in devices))


def _parse_pci_sysfs(lines: list[str]) -> PciScan:
    """The sysfs fallback: `sysfs SLOT 0xCCSSPP 0xDEVICE [DRIVER]` per NVIDIA function."""
    devices = []
    for line in lines:
        tokens = line.split()
        if len(tokens) < 4 or tokens[0] != "sysfs":
            continue
        slot, pci_class, device = tokens[1], tokens[2].removeprefix("0x"), tokens[3].removeprefix("0x")
        devices.append(PciDevice(
            slot=slot.removeprefix("0000:"), class_code=pci_class[:4], class_name="", vendor_id="10de",
            device_id=device.lower(), description="", driver_in_use=tokens[4] if len(tokens) > 4 else None,
        ))
    return PciScan(status="ok", devices=tuple(devices), message="read from sysfs (lspci not installed)")


# --- small system files -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsRelease:
    """/etc/os-release: which package names, driver branches and repos apply."""

    id: str
    version_id: str | None
    codename: str | None
    pretty_name: str | None
    id_like: tuple[str, ...] = ()


def parse_os_release(text: Text) -> OsRelease | None:
    values: dict[str, str] = {}
    for line in _lines(text):
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip('"').strip("'")
    if "ID" not in values:
        return None
    return OsRelease(
        id=values["ID"],
        version_id=values.get("VERSION_ID"),
        codename=values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME"),
        pretty_name=values.get("PRETTY_NAME"),
        id_like=tuple(values.get("ID_LIKE", "").split()),
    )


def parse_meminfo_total(text: Text) -> int | None:
    """MemTotal from /proc/meminfo, in bytes (the file says kB, meaning KiB)."""
    for line in _lines(text):
        match = re.match(r"MemTotal:\s+(\d+)\s*kB", line)
        if match:
            return int(match.group(1)) * 1024
    return None


def parse_nproc(text: Text) -> int | None:
    for line in _lines(text):
        if line.strip().isdigit():
            return int(line.strip())
    return None


@dataclass(frozen=True)
class DiskUsage:
    """Free and total bytes of the filesystem holding `path` (the nearest existing parent)."""

    path: str
    avail_bytes: int
    size_bytes: int


def parse_df(text: Text, path: str = "") -> DiskUsage | None:
    """`df -B1 --output=avail,size P`, optionally preceded by the resolved path on its own line."""
    resolved = path
    for line in _lines(text):
        tokens = line.split()
        if len(tokens) == 1 and tokens[0].startswith("/"):
            resolved = tokens[0]
        elif len(tokens) == 2 and all(t.isdigit() for t in tokens):
            return DiskUsage(path=resolved, avail_bytes=int(tokens[0]), size_bytes=int(tokens[1]))
    return None


def parse_df_size(text: Text) -> int | None:
    """`df -B1 --output=size P`: the size in bytes (used for /dev/shm, which NCCL needs for TP)."""
    for line in _lines(text):
        if line.strip().isdigit():
            return int(line.strip())
    return None


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


def parse_ss_listening(text: Text) -> ListeningPorts:
    """`ss -ltnH` lines: State Recv-Q Send-Q Local:Port Peer:Port [Process]; IPv6 as [::]:22, zones as %lo."""
    lines = _lines(text)
    if _is_missing(lines):
        return ListeningPorts(status="missing")
    sockets: list[ListeningSocket] = []
    for line in lines:
        tokens = line.split()
        if len(tokens) < 4 or tokens[0] == "State":
            continue
        address, sep, port = tokens[3].rpartition(":")
        if sep and port.isdigit():
            sockets.append(ListeningSocket(address=address.strip("[]"), port=int(port)))
    return ListeningPorts(status="ok", sockets=tuple(sockets))


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


def parse_modules(text: Text) -> KernelModules:
    """/proc/modules or `lsmod` (header line skipped)."""
    lines = _lines(text)
    if _is_missing(lines):
        return KernelModules(status="missing")
    names = {line.split()[0] for line in lines if line.split() and line.split()[0] != "Module"}
    return KernelModules(status="ok", modules=frozenset(names))


@dataclass(frozen=True)
class NvidiaModule:
    """The loaded kernel module; a version other than nvidia-smi's means a reboot is pending."""

    version: str
    open_module: bool | None


def parse_nvidia_module_version(text: Text) -> NvidiaModule | None:
    """/proc/driver/nvidia/version (proprietary or open module), or the bare /sys/module/nvidia/version."""
    lines = [line for line in _lines(text) if line.strip()]
    if not lines:
        return None
    first = lines[0]
    match = _VERSION.search(first)
    if not match:
        return None
    if first.startswith("NVRM"):
        return NvidiaModule(version=match.group(1), open_module="Open Kernel Module" in first)
    return NvidiaModule(version=match.group(1), open_module=None)


SecureBoot = Literal["enabled", "disabled", "unsupported", "unknown"]


def parse_secure_boot(text: Text) -> SecureBoot:
    """`mokutil --sb-state`; with Secure Boot on, an unsigned DKMS module will not load."""
    joined = "\n".join(_lines(text))
    if "SecureBoot enabled" in joined:
        return "enabled"
    if "SecureBoot disabled" in joined:
        return "disabled"
    if "doesn't support Secure Boot" in joined or "EFI variables are not supported" in joined:
        return "unsupported"
    return "unknown"


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    status: str

    @property
    def installed(self) -> bool:
        """'ii' (or 'hi' when held); 'rc' leaves only config files and still prints a version."""
        return len(self.status) >= 2 and self.status[1] == "i"


def parse_dpkg_versions(text: Text) -> dict[str, DebPackage]:
    """`dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\\n'`: installed and known packages by name."""
    packages: dict[str, DebPackage] = {}
    for line in _lines(text):
        tokens = line.split()
        if not tokens or line.startswith("dpkg-query:"):
            continue
        name = tokens[0]
        version = tokens[1] if len(tokens) > 2 else ""
        status = tokens[-1] if len(tokens) >= 2 else ""
        if len(tokens) == 2 and not re.fullmatch(r"[a-zA-Z]{2,3}", tokens[1]):
            version, status = tokens[1], ""
        packages[name] = DebPackage(name=name, version=version, status=status)
    return packages


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


def parse_docker_info(text: Text) -> DockerState:
    """`docker info --format '{{json .}}'` with stderr merged: JSON first, then any daemon error line."""
    lines = _lines(text)
    if not "".join(lines).strip():
        return DockerState(status="empty")
    if _is_missing(lines):
        return DockerState(status="missing", message=lines[0].strip())
    data: dict[str, Any] | None = None
    errors: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("{") and data is None:
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError:
                errors.append(stripped[:200])
        elif stripped:
            errors.append(stripped)
    if data is None:
        return DockerState(status="error", message=errors[0] if errors else "")
    client = (data.get("ClientInfo") or {}).get("Version")
    server = data.get("ServerVersion") or None
    server_errors = data.get("ServerErrors") or []
    if not server:
        message = next(iter(server_errors), None) or next(iter(errors), "")
        return DockerState(status="daemon_down", client_version=client, message=message)
    return DockerState(
        status="ok", server_version=server, client_version=client,
        runtimes=tuple(sorted((data.get("Runtimes") or {}).keys())),
        default_runtime=data.get("DefaultRuntime") or None,
        cdi_spec_dirs=tuple(data.get("CDISpecDirs") or ()),
    )


def parse_json_object(text: Text) -> dict[str, Any] | None:
    """A model's config.json; None when absent or not a JSON object (e.g. a half-written download)."""
    raw = "\n".join(_lines(text)).strip()
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def parse_kernel_release(text: Text) -> str | None:
    """`uname -r`, e.g. 6.8.0-60-generic; None when the output is not a release string."""
    for line in _lines(text):
        token = line.strip()
        if re.fullmatch(r"\d+\.\d+[\w.+~-]*", token):
            return token
    return None


# --- docker daemon.json, small files, keyrings, conda -------------------------------------------------------------


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


def parse_daemon_json(text: Text) -> DaemonConfig:
    """`cat /etc/docker/daemon.json` with stderr merged."""
    lines = _lines(text)
    raw = "\n".join(lines).strip()
    if not raw:
        return DaemonConfig(status="empty")
    if _is_missing(lines):
        return DaemonConfig(status="missing", message=lines[0].strip())
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        return DaemonConfig(status="invalid", message=f"not JSON: {error}")
    if not isinstance(data, dict):
        return DaemonConfig(status="invalid", message="not a JSON object")
    return DaemonConfig(status="ok", data=data)


_TAIL_HEADER = re.compile(r"^==> (.+) <==$")
_TAIL_ERROR = re.compile(r"^tail: cannot open '(.+)' for reading: ")


def parse_tail_files(text: Text) -> dict[str, str | None]:
    """`tail -v -n +1 -- FILES 2>&1`: path -> content ('\\n'-terminated), None for a file tail cannot open.

    tail separates files with a blank line, which is dropped; its error lines may land anywhere
    (stderr is unbuffered), so they are recognised wherever they appear.
    """
    files: dict[str, str | None] = {}
    current: str | None = None
    body: dict[str, list[str]] = {}
    for line in _lines(text):
        error = _TAIL_ERROR.match(line)
        if error:
            files[error.group(1)] = None
            continue
        header = _TAIL_HEADER.match(line)
        if header:
            current = header.group(1)
            body[current] = []
            continue
        if current is not None:
            body[current].append(line)
    for path, lines in body.items():
        content = "\n".join(lines).rstrip("\n")
        files[path] = content + "\n" if content else ""
    return files


def parse_sha256sum(text: Text) -> dict[str, str | None]:
    """`sha256sum -- FILES 2>&1`: path -> hex digest, None for a file that does not exist."""
    hashes: dict[str, str | None] = {}
    for line in _lines(text):
        match = re.match(r"^([0-9a-f]{64}) [ *](.+)$", line.strip())
        if match:
            hashes[match.group(2)] = match.group(1)
            continue
        missing = re.match(r"^sha256sum: (.+): No such file or directory$", line.strip())
        if missing:
            hashes[missing.group(1)] = None
    return hashes


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


def normalize_dist(name: str) -> str:
    """PEP 503 normalised distribution name, so 'ModelScope' and 'modelscope' compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_conda_state(text: Text) -> CondaState:
    """`conda --version; python --version; pip list --format=freeze` of facts.commands.conda_state."""
    conda = python = None
    packages: dict[str, str] = {}
    for line in _lines(text):
        token = line.strip()
        if match := re.fullmatch(r"conda (\d+[\w.]*)", token):
            conda = match.group(1)
        elif match := re.fullmatch(r"Python (\d+\.\d+[\w.+]*)", token):
            python = match.group(1)
        elif match := re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", token):
            packages[normalize_dist(match.group(1))] = match.group(2)
    return CondaState(conda_version=conda, python_version=python, packages=packages)


# --- everything together ----------------------------------------------------------------------------------------

DriverState = Literal["working", "not_installed", "not_loaded", "mismatch", "no_gpu", "unknown"]


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


# --- multi-node: ip route/addr, ibstat, PCIe ACS -----------------------------------------------------------------


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


def parse_ip_route_get(text: Text) -> Route:
    """One route line (`10.0.0.2 via 10.0.0.1 dev eth0 src 10.0.0.5 uid 0 \\    cache`), or why there is none."""
    lines = [line for line in _lines(text) if line.strip()]
    if not lines:
        return Route(status="empty")
    if _is_missing(lines):
        return Route(status="missing", message=lines[0].strip())
    joined = " ".join(lines)
    if "unreachable" in joined.lower() or "RTNETLINK answers" in joined:
        return Route(status="unreachable", message=lines[0].strip())
    tokens = joined.replace("\\", " ").split()
    local = tokens[0] in ("local", "broadcast", "multicast")
    if local:
        tokens = tokens[1:]
    values: dict[str, str] = {}
    for key, value in zip(tokens, tokens[1:], strict=False):
        if key in ("dev", "src", "via") and key not in values:
            values[key] = value
    if "dev" not in values:
        return Route(status="error", message=lines[0].strip())
    return Route(status="ok", destination=tokens[0], dev=values["dev"], src=values.get("src"),
                 via=values.get("via"), local=local)


@dataclass(frozen=True)
class InterfaceAddress:
    """One IPv4 address of `ip -o -4 addr show`."""

    ifname: str
    address: str
    prefixlen: int
    scope: str = "global"


def parse_ip_addr(text: Text) -> tuple[InterfaceAddress, ...]:
    """`2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\ valid_lft ...` lines; others skipped."""
    found: list[InterfaceAddress] = []
    for line in _lines(text):
        match = re.match(r"\s*\d+:\s+(\S+?)(?:@\S+)?\s+inet\s+(\d+\.\d+\.\d+\.\d+)/(\d+)(.*)", line)
        if not match:
            continue
        scope = re.search(r"\bscope\s+(\S+)", match.group(4))
        found.append(InterfaceAddress(match.group(1), match.group(2), int(match.group(3)),
                                      scope.group(1) if scope else "global"))
    return tuple(found)


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


def parse_ibstat(text: Text) -> IbStat:
    """`CA 'mlx5_0'` blocks with `Port N:` sub-blocks of `State`, `Physical state`, `Rate`, `Link layer`."""
    lines = _lines(text)
    if not any(line.strip() for line in lines):
        return IbStat(status="empty")
    if _is_missing(lines):
        return IbStat(status="missing", message=lines[0].strip())
    if any("No IB devices found" in line or "couldn't find any" in line.lower() for line in lines):
        return IbStat(status="no_devices", message=next(line.strip() for line in lines if line.strip()))
    ports: list[IbPort] = []
    ca: str | None = None
    port: dict[str, Any] | None = None

    def close() -> None:
        if ca and port is not None:
            ports.append(IbPort(ca, port["number"], port.get("State", ""), port.get("Physical state", ""),
                                port.get("Link layer", "InfiniBand"), _int(port.get("Rate"))))

    for line in lines:
        stripped = line.strip()
        ca_match = re.fullmatch(r"CA '([^']+)'", stripped)
        port_match = re.fullmatch(r"Port (\d+):", stripped)
        if ca_match:
            close()
            ca, port = ca_match.group(1), None
        elif port_match:
            close()
            port = {"number": int(port_match.group(1))}
        elif port is not None and ":" in stripped:
            key, _, value = stripped.partition(":")
            port[key.strip()] = value.strip()
    close()
    if not ports:
        return IbStat(status="error", message=next(line.strip() for line in lines if line.strip()))
    return IbStat(status="ok", ports=tuple(ports))


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


def parse_lspci_acs(text: Text) -> PciAcs:
    """Each bridge's `ACSCtl:` line (`SrcValid+ TransBlk- ReqRedir+ ...`); bridges without ACS are left out."""
    lines = _lines(text)
    if not any(line.strip() for line in lines):
        return PciAcs(status="empty")
    if _is_missing(lines):
        return PciAcs(status="missing")
    bridges: list[AcsBridge] = []
    slot, description, denied = "", "", False
    for line in lines:
        header = re.match(r"([0-9a-fA-F:.]+)\s+(.*)", line) if line and not line[0].isspace() else None
        if header:
            slot, description = header.group(1), header.group(2).strip()
            continue
        if "Capabilities: <access denied>" in line:
            denied = True
        match = re.match(r"\s*ACSCtl:\s*(.*)", line)
        if match and slot:
            bits = frozenset(token[:-1] for token in match.group(1).split() if token.endswith("+"))
            bridges.append(AcsBridge(slot, description, bits))
    if denied and not bridges:
        return PciAcs(status="denied")
    return PciAcs(status="ok", bridges=tuple(bridges))
