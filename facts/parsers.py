"""Parsers for the raw text of host commands, into the small frozen dataclasses of facts.model.

Pure Python (no pyinfra import) so the plan can be computed and tested from
recorded outputs alone. Every parser takes the command's text as printed and
never raises on odd input: a missing tool, an unloaded driver or a field the
driver does not know becomes a status or None, which the plan turns into a
decision (install the driver, reboot, refuse) with a reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from facts.model import (
    Account,
    AcsBridge,
    CondaState,
    DaemonConfig,
    DebPackage,
    DiskUsage,
    DockerState,
    FileStamp,
    GpuInfo,
    GpuQuery,
    IbPort,
    IbStat,
    InterfaceAddress,
    KernelModules,
    ListeningPorts,
    ListeningSocket,
    NvidiaModule,
    OsRelease,
    PciAcs,
    PciDevice,
    PciScan,
    Route,
    SecureBoot,
    SmiSummary,
    ToolStatus,
    Topology,
)

Text = str | Iterable[str]

# What nvidia-smi prints for a value it cannot report.
_UNREPORTED = frozenset({"", "N/A", "[N/A]", "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]",
                         "[GPU requires reset]", "[GPU is lost]"})
_NOT_FOUND = re.compile(r"(?:command not found|: not found|No such file or directory)\s*$")
_VERSION = re.compile(r"\b(\d{3}\.\d+(?:\.\d+)?)\b")


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


def parse_modules(text: Text) -> KernelModules:
    """/proc/modules or `lsmod` (header line skipped)."""
    lines = _lines(text)
    if _is_missing(lines):
        return KernelModules(status="missing")
    names = {line.split()[0] for line in lines if line.split() and line.split()[0] != "Module"}
    return KernelModules(status="ok", modules=frozenset(names))


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


def parse_directory_listing(text: Text) -> dict[str, FileStamp]:
    """`find DIR -type f -printf '%P\\t%s\\t%T@\\n'`: relative path -> size and whole-second modification time.
    A line that is not three tab-separated fields (an error, a name with a tab or newline) is left out: such a
    file then counts as missing, and a copy sends it again."""
    listing: dict[str, FileStamp] = {}
    for line in _lines(text):
        match = re.fullmatch(r"([^\t]+)\t(\d+)\t(\d+)(?:\.\d+)?", line)
        if match:
            listing[match.group(1)] = FileStamp(size=int(match.group(2)), mtime=int(match.group(3)))
    return listing


def parse_passwd_entry(text: Text) -> Account | None:
    """`getent passwd USER`: its name, uid, home and shell; None for no (or no well-formed) entry."""
    for line in _lines(text):
        fields = line.strip().split(":")
        if len(fields) == 7 and fields[2].isdigit():
            return Account(name=fields[0], uid=int(fields[2]), home=fields[5], shell=fields[6])
    return None


def parse_dist_info_names(text: Text) -> dict[str, set[str]]:
    """`NAME-VERSION.dist-info` lines (a venv's site-packages): name -> versions, as pyinfra's `pip freeze` fact
    gives them. Neither part holds a `-` (wheels escape it), so the first one splits them."""
    found: dict[str, set[str]] = {}
    for line in _lines(text):
        match = re.fullmatch(r"([^-/\s]+)-([^-/\s]+)\.dist-info", line.strip())
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


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


# --- multi-node: ip route/addr, ibstat, PCIe ACS -----------------------------------------------------------------


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
