"""Collect every host fact the planner needs into one pure HostFacts value."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from facts import commands
from facts import pyinfra_facts as fact
from facts.model import DiskUsage, HostFacts, InstallFacts, OsRelease
from facts.pyinfra_facts import FactSection


@dataclass(frozen=True)
class InstallQuery:
    """The install stages' facts to ask in the same round trip as the host's: their sections (keys other than
    host_sections'), and how their values and the host's os-release make InstallFacts."""

    sections: tuple[FactSection, ...]
    build: Callable[[Mapping[str, Any], OsRelease | None], InstallFacts]


# One section per fact without arguments, keyed by HostFacts' field.
_PLAIN: tuple[FactSection, ...] = (
    FactSection("os", fact.OsRelease),
    FactSection("mem_total_bytes", fact.MemTotal),
    FactSection("cpu_count", fact.CpuCount),
    FactSection("gpu_query", fact.NvidiaGpus),
    FactSection("smi", fact.NvidiaSmi),
    FactSection("topology", fact.NvidiaTopology),
    FactSection("pci", fact.NvidiaPciDevices),
    FactSection("shm_bytes", fact.ShmSize),
    FactSection("listening", fact.ListeningPorts),
    FactSection("modules", fact.KernelModules),
    FactSection("nvidia_module", fact.NvidiaKernelModule),
    FactSection("secure_boot", fact.SecureBoot),
    FactSection("packages", fact.DebPackageVersions),
    FactSection("docker", fact.DockerInfo),
    FactSection("kernel_release", fact.KernelRelease),
)


def _paths(model_dir: str, model_dirs: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([model_dir, commands.DOCKER_ROOT, *model_dirs]))


def host_sections(model_dir: str, model_dirs: Sequence[str] = ()) -> tuple[FactSection, ...]:
    """The host's facts as sections: the plain ones, then the disk of every path and the config.json of every
    model directory (each path asked once)."""
    disks = tuple(FactSection(f"disk:{i}", fact.DiskSpace, {"path": path})
                  for i, path in enumerate(_paths(model_dir, model_dirs)))
    configs = tuple(FactSection(f"config:{i}", fact.ModelConfig, {"path": path})
                    for i, path in enumerate(dict.fromkeys([model_dir, *model_dirs])))
    return _PLAIN + disks + configs


def gather_host_facts(host: Any, model_dir: str, ports: list[int], model_dirs: Sequence[str] = (),
                      install: InstallFacts | InstallQuery | None = None) -> HostFacts:
    """Ask the host for every fact in one round trip (FactSections); `host` is pyinfra's current Host.

    `ports` are the ports the deploy wants; all listeners are gathered anyway so
    port_in_use() answers for any port without another round trip. `model_dirs` are
    every instance's model directory (disk and config.json of each). `install` is the
    install stages' facts: gathered already by the caller, or an InstallQuery asked in
    the same round trip.
    """
    sections = host_sections(model_dir, model_dirs)
    if isinstance(install, InstallQuery):
        sections += install.sections
    values = fact.gather_sections(host, sections)
    disk_of = {path: values[f"disk:{i}"] for i, path in enumerate(_paths(model_dir, model_dirs))}
    config_of = {path: values[f"config:{i}"] for i, path in enumerate(dict.fromkeys([model_dir, *model_dirs]))}
    disks: dict[str, DiskUsage] = {}
    if disk_of[model_dir] is not None:
        disks[model_dir] = disk_of[model_dir]
    if disk_of[commands.DOCKER_ROOT] is not None:
        disks.setdefault(commands.DOCKER_ROOT, disk_of[commands.DOCKER_ROOT])
    return HostFacts(
        **{section.key: values[section.key] for section in _PLAIN},
        disks=disks,
        model_config=config_of[model_dir],
        model_disks={path: disk_of[path] for path in model_dirs},
        model_configs={path: config_of[path] for path in model_dirs},
        install=install.build(values, values["os"]) if isinstance(install, InstallQuery) else install,
    )
