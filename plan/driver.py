"""The NVIDIA driver stage as pure data: what to install on this OS for these GPUs, and whether to reboot.

Decided from the facts before any change, like the service plan, so `--dry` prints it and the
tests check it without a host. The rule is NVIDIA's Ansible role's (a pinned branch, nouveau
blacklisted, persistence daemon enabled, reboot after an install) with one guard added: a host
whose working driver is the pinned branch or newer is left exactly as it is.

Also here: which GPUs a host has before any driver answers (lspci ids through the GPU catalog,
else the chip's code name), and the table of what CUDA each vLLM release is built for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from facts.model import HostFacts
from plan.settings import Settings
from sizing.catalog import CatalogError, GpuSpec, find_gpu, find_gpu_by_pci
from sizing.versions import parse_version

Version = tuple[int, ...]

# vLLM release (first release of the row) -> the CUDA its default wheels on the package index are built for.
# 0.32.0: the "GPU installation" page: "vLLM contains pre-compiled C++ and CUDA (12.9) binaries"; 0.11.0
# wheels already target 12.9 (vllm-project/vllm#30633); 0.9 moved to torch 2.7 / CUDA 12.8 (verl#1993);
# older releases shipped 12.1 / 12.4 builds. Only the CUDA major decides the driver floor below.
VLLM_CUDA: tuple[tuple[Version, str], ...] = (
    ((0, 11, 0), "12.9"),
    ((0, 9, 0), "12.8"),
    ((0, 0, 0), "12.1"),
)
# CUDA major -> the oldest driver that runs every toolkit of that major (NVIDIA's "CUDA Minor Version
# Compatibility": 12.x >= 525.60.13, 13.x >= 580; 11.x >= 450.80.02). A 12.9 build runs on a 535 driver
# this way (measured by others: torch cu129 on a 12.2 driver), not on 470 (CUDA 11.4).
CUDA_DRIVER_FLOOR: dict[int, Version] = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}
# CUDA major -> the oldest compute capability vLLM's kernels are built for (CUDA 13 dropped Volta, sm_70).
CUDA_MIN_COMPUTE: dict[int, tuple[int, int]] = {11: (7, 0), 12: (7, 0), 13: (7, 5)}

# Chip code names as lspci prints them ("TU102", "GA100", "AD102") -> architecture, its lowest compute capability.
CODENAMES: dict[str, tuple[str, tuple[int, int]]] = {
    "GK": ("kepler", (3, 0)), "GM": ("maxwell", (5, 0)), "GP": ("pascal", (6, 0)), "GV": ("volta", (7, 0)),
    "TU": ("turing", (7, 5)), "GA": ("ampere", (8, 0)), "AD": ("ada", (8, 9)), "GH": ("hopper", (9, 0)),
    "GB": ("blackwell", (10, 0)),
}
# NVIDIA's open kernel modules support Turing and newer; Blackwell supports only them.
OPEN_MODULE_ARCHITECTURES = ("turing", "ampere", "ada", "hopper", "blackwell")

BLACKLIST_FILE = "/etc/modprobe.d/blacklist-nouveau.conf"
BLACKLIST = ("# Written by vllm-deploy: nouveau must not bind the GPUs before the NVIDIA driver.\n"
             "blacklist nouveau\noptions nouveau modeset=0\n")
CUDA_REPO = "https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64"
CUDA_KEYRING = "cuda-keyring_1.1-1_all.deb"
SUPPORTED_DRIVER_OS = {("ubuntu", "22.04"), ("ubuntu", "24.04"), ("debian", "12")}


def _version(text: str | None) -> Version | None:
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g or 0) for g in match.groups()) if match else None


def _dotted(version: Version) -> str:
    return ".".join(f"{part:02d}" if i else str(part) for i, part in enumerate(version))


def vllm_cuda(vllm_version: str) -> str:
    """The CUDA the default wheels of this vLLM release are built for."""
    version = parse_version(vllm_version)
    return next(cuda for first, cuda in VLLM_CUDA if version >= first)


def driver_floor(vllm_version: str) -> tuple[str, Version]:
    """(CUDA version, oldest driver that runs it) for this vLLM release."""
    cuda = vllm_cuda(vllm_version)
    return cuda, CUDA_DRIVER_FLOOR[int(cuda.split(".")[0])]


def min_compute_capability(vllm_version: str) -> tuple[int, int]:
    return CUDA_MIN_COMPUTE[int(vllm_cuda(vllm_version).split(".")[0])]


@dataclass(frozen=True)
class HostGpu:
    """One GPU as far as it can be known: from nvidia-smi when the driver works, else from lspci."""

    name: str
    architecture: str | None
    compute_capability: tuple[int, int] | None
    source: str
    spec: GpuSpec | None = None
    index: int | None = None  # nvidia-smi's index; None for a card seen on the PCI bus only


def _architecture_of(cc: tuple[int, int]) -> str:
    for architecture, low in sorted(CODENAMES.values(), key=lambda item: item[1], reverse=True):
        if cc >= low:
            return architecture
    return "unknown"


def host_gpus(facts: HostFacts) -> list[HostGpu]:
    """The host's GPUs; before any driver, from the PCI ids in the catalog or the chip code name."""
    found: list[HostGpu] = []
    for gpu in facts.gpus:
        try:
            spec: GpuSpec | None = find_gpu(gpu.name)
        except CatalogError:
            spec = None
        cc = gpu.compute_capability or (spec.compute_capability if spec else None)
        architecture = spec.architecture if spec else (_architecture_of(cc) if cc else None)
        found.append(HostGpu(gpu.name, architecture, cc, "nvidia-smi", spec, gpu.index))
    if found:
        return found
    for device in facts.pci_gpus:
        spec = find_gpu_by_pci(device.device_id)
        if spec:
            found.append(HostGpu(spec.name, spec.architecture, spec.compute_capability, "lspci", spec))
            continue
        match = re.search(r"\b(GK|GM|GP|GV|TU|GA|AD|GH|GB)\d{3}", device.description)
        architecture, cc = CODENAMES[match.group(1)] if match else (None, None)
        label = device.description or f"[10de:{device.device_id}]"
        found.append(HostGpu(f"{label} [10de:{device.device_id}]", architecture, cc, "lspci"))
    return found


@dataclass(frozen=True)
class DriverPlan:
    """What the driver stage does on one host. action: none, keep, install, upgrade or reboot."""

    action: str
    reason: str
    branch: str | None = None
    installed: str | None = None
    open_modules: bool | None = None
    os_id: str | None = None
    packages: tuple[str, ...] = ()
    keyring_url: str | None = None
    services: tuple[str, ...] = ()
    reboot: bool = False
    reboot_allowed: bool = True
    reboot_delay: int = 10
    reboot_timeout: int = 900
    expect_gpus: int = 0
    expect_branch: str | None = None
    secure_boot: bool = False
    blacklist_file: str = BLACKLIST_FILE
    blacklist: str = BLACKLIST
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def changes(self) -> bool:
        """Whether the stage touches the host at all (a right driver gets nothing)."""
        return self.action in ("install", "upgrade", "reboot")

    @property
    def installs(self) -> bool:
        return self.action in ("install", "upgrade")

    def summary(self) -> str:
        if not self.changes:
            return f"  driver    {self.action}: {self.reason}"
        steps = []
        if self.installs:
            flavor = "open" if self.open_modules else "proprietary"
            steps.append(f"install {', '.join(self.packages)} ({flavor} kernel modules)")
            steps.append(f"blacklist nouveau in {self.blacklist_file}")
            steps.append(f"enable {', '.join(self.services)}")
        steps.append("reboot and continue" if self.reboot_allowed else "stop for a manual reboot")
        return f"  driver    {self.action}: {self.reason}\n  driver    " + "; ".join(steps)


def installed_driver(facts: HostFacts) -> str | None:
    """The newest installed driver package version (dpkg), for a host whose nvidia-smi cannot answer."""
    versions = [_version(p.version) for prefix in ("nvidia-driver-", "cuda-drivers-")
                for p in facts.installed_packages(prefix)]
    best = max((v for v in versions if v), default=None)
    return _dotted(best) if best else None


def _open_modules(settings: Settings, gpus: list[HostGpu]) -> tuple[bool, list[tuple[str, str]]]:
    architectures = {g.architecture for g in gpus}
    supported = bool(gpus) and architectures <= set(OPEN_MODULE_ARCHITECTURES)
    if settings.nvidia_driver_flavor == "auto":
        return supported, []
    wanted = settings.nvidia_driver_flavor == "open"
    if wanted and not supported:
        return True, [("nvidia_driver_flavor", "'open' needs Turing or newer GPUs; this host has "
                       f"{', '.join(sorted(a or 'unknown' for a in architectures))}: use 'auto' or 'proprietary'")]
    if not wanted and "blackwell" in architectures:
        return False, [("nvidia_driver_flavor", "Blackwell GPUs run only with the open kernel modules: use 'auto' "
                        "or 'open'")]
    return wanted, []


def _packages(settings: Settings, facts: HostFacts, os_id: str, open_modules: bool) -> tuple[str, ...]:
    branch = settings.nvidia_driver_branch
    if os_id == "ubuntu":
        driver = f"nvidia-driver-{branch}-server" + ("-open" if open_modules else "")
    else:
        driver = f"nvidia-open-{branch}" if open_modules else f"cuda-drivers-{branch}"
    packages = [f"linux-headers-{facts.kernel_release}", driver]
    if facts.needs_fabric_manager:
        packages.append(f"nvidia-fabricmanager-{branch}")
    return tuple(packages)


def plan_driver(settings: Settings, facts: HostFacts, device: str,
                known: list[HostGpu] | None = None) -> DriverPlan:
    """The driver stage for this host; problems come back in `errors` for preflight to report.

    `known` are the host's GPUs when the caller has them already (`host_gpus(facts)`).
    """
    if device != "cuda":
        return DriverPlan("none", "CPU backend: no GPU driver needed")
    if not settings.nvidia_driver_manage:
        return DriverPlan("none", "nvidia_driver_manage is False: the driver is left as it is")
    state = facts.driver_state
    if state == "no_gpu":
        return DriverPlan("none", "no NVIDIA GPU on the PCI bus")
    branch = settings.nvidia_driver_branch
    pinned = int(branch)
    common: dict[str, Any] = dict(branch=branch, reboot_allowed=settings.nvidia_driver_reboot,
                                  reboot_delay=settings.nvidia_driver_reboot_delay,
                                  reboot_timeout=settings.nvidia_driver_reboot_timeout,
                                  expect_gpus=facts.gpu_count, secure_boot=facts.secure_boot == "enabled")
    working = facts.driver_version if state == "working" else None
    installed = working or installed_driver(facts)
    installed_branch = (_version(installed) or (0,))[0]
    if state == "working" and not facts.reboot_pending and installed_branch >= pinned:
        return DriverPlan("keep", f"driver {installed} works and is branch {installed_branch} >= {branch}",
                          installed=installed)
    if state in ("working", "mismatch") and facts.reboot_pending and installed_branch >= pinned:
        loaded = facts.nvidia_module.version if facts.nvidia_module else "an older module"
        return DriverPlan("reboot", f"driver {installed} is installed but {loaded} is loaded", installed=installed,
                          reboot=True, expect_branch=str(installed_branch), **common)

    action = "upgrade" if installed_branch else "install"
    reason = (f"driver {installed} is older than branch {branch}" if installed_branch
              else f"no working NVIDIA driver ({state.replace('_', ' ')})")
    os_release = facts.os
    os_id = os_release.id if os_release else None
    errors: list[tuple[str, str]] = []
    if (os_id, os_release.version_id if os_release else None) not in SUPPORTED_DRIVER_OS:
        name = os_release.pretty_name if os_release else "an unknown OS"
        errors.append(("nvidia_driver_manage", f"the driver stage installs on Ubuntu 22.04/24.04 and Debian 12, "
                       f"not {name}; install driver {branch} yourself and set nvidia_driver_manage = False"))
    if not facts.kernel_release:
        errors.append(("nvidia_driver_manage", "`uname -r` gave no kernel release, so the kernel headers DKMS "
                       "needs cannot be named; check the host, or install the driver yourself"))
    gpus = known if known is not None else host_gpus(facts)
    open_modules, flavor_errors = _open_modules(settings, gpus)
    errors += flavor_errors
    packages = _packages(settings, facts, os_id or "", open_modules) if not errors else ()
    services = ("nvidia-persistenced.service",) + (
        ("nvidia-fabricmanager.service",) if facts.needs_fabric_manager else ())
    keyring = (f"{CUDA_REPO.format(distro='debian12')}/{CUDA_KEYRING}" if os_id == "debian" else None)
    return DriverPlan(action, reason, installed=installed, open_modules=open_modules, os_id=os_id,
                      packages=packages, keyring_url=keyring, services=services, reboot=True,
                      expect_branch=branch, errors=tuple(errors), **common)


def check_driver_output(driver: DriverPlan, lines: list[str]) -> str | None:
    """What is wrong after the driver stage, from DRIVER_CHECK's output (index, name, driver_version rows)."""
    rows = [[cell.strip() for cell in line.split(",")] for line in lines if line.strip()]
    gpus = [row for row in rows if len(row) == 3 and row[0].isdigit()]
    if not gpus:
        said = next((line.strip() for line in lines if line.strip()), "nothing")
        hint = (" Secure Boot is on: an unsigned module is refused (mokutil --sb-state; enroll the DKMS key "
                "or disable Secure Boot)." if driver.secure_boot else "")
        return (f"nvidia-smi lists no GPU after the driver stage (it said: {said}). On the host: `dkms status`, "
                f"`journalctl -b -k | grep -i -e nvidia -e nouveau`.{hint}")
    if len(gpus) < driver.expect_gpus:
        return (f"nvidia-smi lists {len(gpus)} GPU(s), lspci showed {driver.expect_gpus}: a card is not bound to the "
                "driver; check `lspci -nnk -d 10de:` and the kernel log on the host")
    versions = sorted({row[2] for row in gpus})
    if driver.expect_branch and any(not v.startswith(f"{driver.expect_branch}.") for v in versions):
        return (f"nvidia-smi reports driver {', '.join(versions)}, the stage installed branch {driver.expect_branch}: "
                "another driver package wins (remove it, e.g. `apt purge` the old nvidia-driver-*), then deploy again")
    return None
