"""Collect every host fact the planner needs into one pure HostFacts value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from facts import commands
from facts import pyinfra_facts as fact
from facts.model import DiskUsage, HostFacts, InstallFacts


def gather_host_facts(host: Any, model_dir: str, ports: list[int], model_dirs: Sequence[str] = (),
                      install: InstallFacts | None = None) -> HostFacts:
    """Ask the host once for each fact; `host` is pyinfra's current Host.

    `ports` are the ports the deploy wants; all listeners are gathered anyway so
    port_in_use() answers for any port without another round trip. `model_dirs` are
    every instance's model directory (disk and config.json of each), `install` the
    install stages' facts, gathered by the caller that knows which stages run.
    """
    disks: dict[str, DiskUsage] = {}
    usage = host.get_fact(fact.DiskSpace, path=model_dir)
    if usage is not None:
        disks[model_dir] = usage
    docker_root = host.get_fact(fact.DiskSpace, path=commands.DOCKER_ROOT)
    if docker_root is not None:
        disks.setdefault(commands.DOCKER_ROOT, docker_root)
    return HostFacts(
        os=host.get_fact(fact.OsRelease),
        mem_total_bytes=host.get_fact(fact.MemTotal),
        cpu_count=host.get_fact(fact.CpuCount),
        gpu_query=host.get_fact(fact.NvidiaGpus),
        smi=host.get_fact(fact.NvidiaSmi),
        topology=host.get_fact(fact.NvidiaTopology),
        pci=host.get_fact(fact.NvidiaPciDevices),
        disks=disks,
        shm_bytes=host.get_fact(fact.ShmSize),
        listening=host.get_fact(fact.ListeningPorts),
        modules=host.get_fact(fact.KernelModules),
        nvidia_module=host.get_fact(fact.NvidiaKernelModule),
        secure_boot=host.get_fact(fact.SecureBoot),
        packages=host.get_fact(fact.DebPackageVersions),
        docker=host.get_fact(fact.DockerInfo),
        model_config=host.get_fact(fact.ModelConfig, path=model_dir),
        kernel_release=host.get_fact(fact.KernelRelease),
        model_disks={path: host.get_fact(fact.DiskSpace, path=path) for path in model_dirs},
        model_configs={path: host.get_fact(fact.ModelConfig, path=path) for path in model_dirs},
        install=install,
    )
