"""pyinfra facts for GPU hosts: one command each, parsed by facts.parsers; FactSections asks many at once.

Thin on purpose: the command text lives in facts.commands and the parsing in
facts.parsers, so recorded outputs exercise exactly what a real host runs.
Every command succeeds even when its tool is missing (a fresh server has no
nvidia-smi), so gathering never fails a host; the parsed status says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import FactBase, StringCommand
from pyinfra.api.exceptions import FactProcessError
from pyinfra.facts.systemd import SystemdStatus

from facts import commands, parsers


class NvidiaGpus(FactBase[parsers.GpuQuery]):
    """GPUs the NVIDIA driver sees (memory, compute capability, driver), or why none."""

    def command(self) -> str:
        return commands.NVIDIA_GPUS

    @staticmethod
    def default() -> parsers.GpuQuery:
        return parsers.GpuQuery(status="empty")

    def process(self, output: list[str]) -> parsers.GpuQuery:
        return parsers.parse_gpu_query(output)


class NvidiaSmi(FactBase[parsers.SmiSummary]):
    """Driver version and the newest CUDA the driver supports, from plain nvidia-smi."""

    def command(self) -> str:
        return commands.NVIDIA_SMI

    @staticmethod
    def default() -> parsers.SmiSummary:
        return parsers.SmiSummary(status="empty")

    def process(self, output: list[str]) -> parsers.SmiSummary:
        return parsers.parse_nvidia_smi(output)


class NvidiaTopology(FactBase[parsers.Topology]):
    """GPU interconnect matrix (NVLink, PCIe switch, host bridge, cross-socket)."""

    def command(self) -> str:
        return commands.NVIDIA_TOPOLOGY

    @staticmethod
    def default() -> parsers.Topology:
        return parsers.Topology(status="empty")

    def process(self, output: list[str]) -> parsers.Topology:
        return parsers.parse_topology(output)


class NvidiaPciDevices(FactBase[parsers.PciScan]):
    """NVIDIA cards on the PCI bus and the kernel driver bound to each; works before any driver."""

    def command(self) -> str:
        return commands.NVIDIA_PCI

    @staticmethod
    def default() -> parsers.PciScan:
        return parsers.PciScan(status="ok")

    def process(self, output: list[str]) -> parsers.PciScan:
        return parsers.parse_lspci(output)


class NvidiaKernelModule(FactBase[parsers.NvidiaModule | None]):
    """Version of the loaded nvidia kernel module, None when it is not loaded."""

    def command(self) -> str:
        return commands.NVIDIA_MODULE_VERSION

    def process(self, output: list[str]) -> parsers.NvidiaModule | None:
        return parsers.parse_nvidia_module_version(output)


class OsRelease(FactBase[parsers.OsRelease | None]):
    """Distribution id, version and codename from /etc/os-release."""

    def command(self) -> str:
        return commands.OS_RELEASE

    def process(self, output: list[str]) -> parsers.OsRelease | None:
        return parsers.parse_os_release(output)


class MemTotal(FactBase[int | None]):
    """Physical memory in bytes."""

    def command(self) -> str:
        return commands.MEMINFO

    def process(self, output: list[str]) -> int | None:
        return parsers.parse_meminfo_total(output)


class CpuCount(FactBase[int | None]):
    """CPUs available to processes (nproc honours cgroup/affinity limits)."""

    def command(self) -> str:
        return commands.NPROC

    def process(self, output: list[str]) -> int | None:
        return parsers.parse_nproc(output)


class DiskSpace(FactBase[parsers.DiskUsage | None]):
    """Free and total bytes where `path` will live (its nearest existing parent)."""

    def command(self, path: str) -> str:
        return commands.disk_space(path)

    def process(self, output: list[str]) -> parsers.DiskUsage | None:
        return parsers.parse_df(output)


class ShmSize(FactBase[int | None]):
    """Size of /dev/shm in bytes (NCCL and the docker runtime need room there)."""

    def command(self) -> str:
        return commands.SHM_SIZE

    def process(self, output: list[str]) -> int | None:
        return parsers.parse_df_size(output)


class ListeningPorts(FactBase[parsers.ListeningPorts]):
    """TCP ports something already listens on."""

    def command(self) -> str:
        return commands.LISTENING_TCP

    @staticmethod
    def default() -> parsers.ListeningPorts:
        return parsers.ListeningPorts(status="ok")

    def process(self, output: list[str]) -> parsers.ListeningPorts:
        return parsers.parse_ss_listening(output)


class KernelModules(FactBase[parsers.KernelModules]):
    """Loaded kernel modules (nouveau must go before the NVIDIA driver can bind)."""

    def command(self) -> str:
        return commands.KERNEL_MODULES

    @staticmethod
    def default() -> parsers.KernelModules:
        return parsers.KernelModules(status="ok")

    def process(self, output: list[str]) -> parsers.KernelModules:
        return parsers.parse_modules(output)


class SecureBoot(FactBase[str]):
    """enabled / disabled / unsupported / unknown (no mokutil)."""

    def command(self) -> str:
        return commands.SECURE_BOOT

    @staticmethod
    def default() -> str:
        return "unknown"

    def process(self, output: list[str]) -> str:
        return parsers.parse_secure_boot(output)


class DebPackageVersions(FactBase[dict[str, parsers.DebPackage]]):
    """Versions and dpkg states of the packages of interest (glob patterns allowed)."""

    def command(self, packages: tuple[str, ...] = commands.DPKG_PACKAGES) -> str:
        return commands.dpkg_versions(packages)

    @staticmethod
    def default() -> dict[str, parsers.DebPackage]:
        return {}

    def process(self, output: list[str]) -> dict[str, parsers.DebPackage]:
        return parsers.parse_dpkg_versions(output)


class DockerInfo(FactBase[parsers.DockerState]):
    """Docker engine state and runtimes (is the nvidia runtime registered?)."""

    def command(self) -> str:
        return commands.DOCKER_INFO

    @staticmethod
    def default() -> parsers.DockerState:
        return parsers.DockerState(status="empty")

    def process(self, output: list[str]) -> parsers.DockerState:
        return parsers.parse_docker_info(output)


class ModelConfig(FactBase[dict[str, Any] | None]):
    """config.json of a model directory on the host, None when the model is not there yet."""

    def command(self, path: str) -> str:
        return commands.model_config(path)

    def process(self, output: list[str]) -> dict[str, Any] | None:
        return parsers.parse_json_object(output)


class KernelRelease(FactBase[str | None]):
    """The running kernel's release (`uname -r`): which headers DKMS needs for the NVIDIA module."""

    def command(self) -> str:
        return commands.KERNEL_RELEASE

    def process(self, output: list[str]) -> str | None:
        return parsers.parse_kernel_release(output)


class DockerDaemonConfig(FactBase[parsers.DaemonConfig]):
    """/etc/docker/daemon.json: the nvidia runtime and registry mirrors, next to the user's own keys."""

    def command(self) -> str:
        return commands.DOCKER_DAEMON_JSON

    @staticmethod
    def default() -> parsers.DaemonConfig:
        return parsers.DaemonConfig(status="empty")

    def process(self, output: list[str]) -> parsers.DaemonConfig:
        return parsers.parse_daemon_json(output)


class TextFiles(FactBase[dict[str, str | None]]):
    """Contents of small text files (apt sources, .condarc, pip.conf); None for a missing one."""

    def command(self, paths: tuple[str, ...]) -> str:
        return commands.text_files(paths)

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        return parsers.parse_tail_files(output)


class FileHashes(FactBase[dict[str, str | None]]):
    """SHA-256 of files (apt keyrings); None for a missing one."""

    def command(self, paths: tuple[str, ...]) -> str:
        return commands.file_hashes(paths)

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        return parsers.parse_sha256sum(output)


class PasswdEntry(FactBase[parsers.Account | None]):
    """A local account (home, shell) or None: the service user's, so a re-run skips pyinfra's slower user check."""

    def command(self, user: str) -> str:
        return commands.passwd_entry(user)

    def process(self, output: list[str]) -> parsers.Account | None:
        return parsers.parse_passwd_entry(output)


class VenvDistributions(FactBase[dict[str, set[str]]]):
    """The distributions installed in a venv (name -> versions), from its .dist-info directories; empty without
    the venv. What `pip freeze --all` says, without pip's ~0.8 s start."""

    def command(self, venv: str) -> str:
        return commands.venv_distributions(venv)

    @staticmethod
    def default() -> dict[str, set[str]]:
        return {}

    def process(self, output: list[str]) -> dict[str, set[str]]:
        return parsers.parse_dist_info_names(output)


class DirectoryListing(FactBase[dict[str, parsers.FileStamp]]):
    """Every file under a directory (relative path -> size and modification time); empty when it is missing."""

    def command(self, path: str) -> str:
        return commands.directory_listing(path)

    @staticmethod
    def default() -> dict[str, parsers.FileStamp]:
        return {}

    def process(self, output: list[str]) -> dict[str, parsers.FileStamp]:
        return parsers.parse_directory_listing(output)


class CondaState(FactBase[parsers.CondaState]):
    """Miniconda under `prefix` and its environment `env`: versions and pip packages."""

    def command(self, prefix: str, env: str) -> str:
        return commands.conda_state(prefix, env)

    @staticmethod
    def default() -> parsers.CondaState:
        return parsers.CondaState()

    def process(self, output: list[str]) -> parsers.CondaState:
        return parsers.parse_conda_state(output)


class RouteTo(FactBase[parsers.Route]):
    """The interface and source address this host reaches `address` by (`ip -o route get`)."""

    def command(self, address: str) -> str:
        return commands.ip_route_get(address)

    @staticmethod
    def default() -> parsers.Route:
        return parsers.Route(status="empty")

    def process(self, output: list[str]) -> parsers.Route:
        return parsers.parse_ip_route_get(output)


class InterfaceAddresses(FactBase[tuple[parsers.InterfaceAddress, ...]]):
    """Every IPv4 address and the interface holding it (`ip -o -4 addr show`)."""

    def command(self) -> str:
        return commands.IP_ADDRS

    @staticmethod
    def default() -> tuple[parsers.InterfaceAddress, ...]:
        return ()

    def process(self, output: list[str]) -> tuple[parsers.InterfaceAddress, ...]:
        return parsers.parse_ip_addr(output)


class IbStat(FactBase[parsers.IbStat]):
    """RDMA adapters, their ports' state and link layer (InfiniBand or Ethernet for RoCE)."""

    def command(self) -> str:
        return commands.IBSTAT

    @staticmethod
    def default() -> parsers.IbStat:
        return parsers.IbStat(status="empty")

    def process(self, output: list[str]) -> parsers.IbStat:
        return parsers.parse_ibstat(output)


class PciAcs(FactBase[parsers.PciAcs]):
    """PCIe bridges' ACS control bits (P2P redirected to the root complex or not)."""

    def command(self) -> str:
        return commands.PCI_ACS

    @staticmethod
    def default() -> parsers.PciAcs:
        return parsers.PciAcs(status="empty")

    def process(self, output: list[str]) -> parsers.PciAcs:
        return parsers.parse_lspci_acs(output)


class UnitsUp(SystemdStatus):
    """Units running or on their way: starting (the health wait included), waiting to restart, reloading or
    stopping. The port such a unit listens on is its own: a re-run while an instance starts or crash-loops must not
    take its listener (or its container's docker-proxy) for another program's."""

    state_key = "ActiveState"
    state_values = ["active", "activating", "reloading", "deactivating"]


@dataclass(frozen=True)
class FactSection:
    """One fact of a FactSections request: its key in the result, its class and the class's command arguments."""

    key: str
    fact: type[FactBase[Any]]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # pyinfra logs a fact's arguments: the key is enough
        return self.key

    def command(self) -> str:
        """The fact's own command, guarded by its required tool as pyinfra's get_fact would."""
        fact = self.fact()
        if fact.shell_executable or type(fact).check_preconditions is not FactBase.check_preconditions:
            raise ValueError(f"{self.fact.__name__}: a fact with its own shell or preconditions cannot be a section")
        command = fact.command(**self.kwargs)
        text = command.get_raw_value() if isinstance(command, StringCommand) else command
        tool = fact.requires_command(**self.kwargs)
        return commands.requiring(tool, text) if tool else text

    def value(self, status: int | None, lines: list[str]) -> Any:
        """The fact's value from its section, as get_fact makes it: process() of a successful non-empty output,
        default() otherwise; a failure (status not 0, or cut short) raises FactProcessError."""
        fact = self.fact()
        if status is None:
            raise FactProcessError(f"{self.key}: no answer (output cut short)")
        if status != 0:
            raise FactProcessError(f"{self.key}: exit status {status}")
        if not lines or lines == [commands.MISSING_TOOL]:
            return fact.default()
        try:
            return fact.process(lines)
        except FactProcessError as error:
            raise FactProcessError(f"{self.key}: {error}") from error


class FactSections(FactBase[dict[str, Any]]):
    """Several facts in one command, so one SSH round trip instead of one per fact.

    Each section runs its fact's own command between delimiter lines (facts.commands.composite) and its output
    goes to that fact's own process(), so every value is the one host.get_fact would give. A failed section does
    not stop the following ones; it fails this fact (and the host) afterwards, as a failed get_fact does.
    Result: section key -> value. pyinfra calls command() and process() on one instance, which is how
    process() knows the sections.
    """

    sections: tuple[FactSection, ...] = ()

    def command(self, sections: tuple[FactSection, ...]) -> str:
        keys = [section.key for section in sections]
        if len(set(keys)) != len(keys):
            raise ValueError(f"fact sections: duplicate keys in {keys}")
        self.sections = tuple(sections)
        return commands.composite((section.key, section.command()) for section in sections)

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def process(self, output: list[str]) -> dict[str, Any]:
        found = commands.split_sections(output)
        values: dict[str, Any] = {}
        failed: list[str] = []
        for section in self.sections:
            try:
                values[section.key] = section.value(*found.get(section.key, (None, [])))
            except FactProcessError as error:
                failed.append(str(error))
        if failed:
            raise FactProcessError("; ".join(failed))
        return values


def gather_sections(host: Any, sections: tuple[FactSection, ...]) -> dict[str, Any]:
    """Every section's value from one FactSections round trip; each one the host did not answer (the whole
    fact failed, and pyinfra failed the host) gets its fact's default(), as get_fact would give."""
    values = host.get_fact(FactSections, sections=sections)
    return {s.key: values[s.key] if s.key in values else s.fact().default() for s in sections}
