"""The host plan: every vLLM instance of one host, how they share GPUs, and the host's API key files.

Pure data like the service plan. It is where instance-level decisions meet:
GPU fractions are checked against the memory that is free at start-up (vLLM
refuses to start when utilization x total exceeds free memory, which is what
users hit when two instances share a card), and instances that share a GPU are
ordered so that each starts only when the previous one holds its memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from facts.model import HostFacts, InstallFacts, OsRelease
from plan.apt_mirror import AptMirrorError, AptMirrorPlan, plan_apt_mirror
from plan.cluster import ClusterPlan, member_service, port_conflicts
from plan.conda import CondaPlan, plan_conda
from plan.docker_engine import DockerEngineError, DockerEnginePlan, plan_docker_engine
from plan.driver import DriverPlan
from plan.gateway import GatewayPlan
from plan.monitoring import ExportersPlan, Member, MonitoringPlan, build_exporters_plan, build_monitoring_plan
from plan.preflight import host_checks
from plan.service import (
    CONFIG_DIR,
    InstallPlan,
    ModelPlan,
    PlanError,
    ServicePlan,
    build_plan,
    resolve_device,
)
from plan.settings import InstanceSettings, Settings
from plan.watchdog import WatchdogPlan, build_watchdog_plan

KEY_ENV_FILE = f"{CONFIG_DIR}/api-key.env"
KEY_HEADER_FILE = f"{CONFIG_DIR}/api-key.header"
# Memory kept out of the fractions on a shared GPU: the CUDA context of each process and the driver's share.
SHARED_GPU_MARGIN = 0.02
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class HostSetup:
    """What every instance of a host shares: the device, the runtime and its install, the service account
    and its paths (those of the first instance; the settings behind them are host-level)."""

    device: str
    runtime: str
    user: str
    prefix: str
    venv: str
    python: str
    state_dir: str
    config_dir: str
    install: InstallPlan
    docker_image: str | None = None

    @classmethod
    def of(cls, instance: ServicePlan) -> HostSetup:
        return cls(device=instance.device, runtime=instance.runtime, user=instance.user, prefix=instance.prefix,
                   venv=instance.venv, python=instance.python, state_dir=instance.state_dir,
                   config_dir=instance.config_dir, install=instance.install, docker_image=instance.docker_image)


@dataclass(frozen=True)
class HostPlan:
    """All instances of one host, the gateway it runs (if any), and where the API key lives."""

    host: str
    instances: tuple[ServicePlan, ...]
    setup: HostSetup
    gateway: GatewayPlan | None = None
    require_api_key: bool = False
    key_env_file: str | None = None
    key_header_file: str | None = None
    warnings: tuple[str, ...] = ()
    driver: DriverPlan | None = None
    # The install stages' decisions from the host's packages and files; None where the stage does not run.
    apt: AptMirrorPlan | None = None
    docker_engine: DockerEnginePlan | None = None
    conda: CondaPlan | None = None
    # Operate: the deployment's Prometheus/Alertmanager (on its monitoring host), this host's exporters,
    # and the watchdog over this host's instances; None where off.
    monitoring: MonitoringPlan | None = None
    exporters: ExportersPlan | None = None
    watchdog: WatchdogPlan | None = None
    # Input, not decision: kept out of repr, to_dict and the summary so it is never printed.
    api_key: str | None = field(default=None, repr=False, compare=False)
    # What the plan was computed from, for stages that decide more later (the model stage re-sizes
    # after a download) without validating or asking again.
    settings: tuple[InstanceSettings, ...] = field(default=(), repr=False, compare=False)
    facts: HostFacts = field(default_factory=HostFacts, repr=False, compare=False)

    @property
    def host_settings(self) -> Settings:
        """Settings every instance shares (runtime, mirrors, driver): those of the first instance."""
        return self.settings[0].settings

    @property
    def first(self) -> ServicePlan:
        return self.instances[0]

    @property
    def models(self) -> tuple[ModelPlan, ...]:
        """Each model directory once, whatever number of instances serve it."""
        seen: dict[str, ModelPlan] = {}
        for instance in self.instances:
            seen.setdefault(instance.model.host_dir, instance.model)
        return tuple(seen.values())

    def summary(self) -> str:
        parts = [instance.summary() for instance in self.instances]
        for stage in (self.gateway, self.watchdog, self.exporters, self.monitoring):
            if stage is not None:
                parts.append(stage.summary())
        parts += [f"  warning   {warning}" for warning in self.warnings]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Everything but secrets (the key itself never enters the plan)."""
        return {
            "host": self.host,
            "instances": [instance.to_dict() for instance in self.instances],
            "gateway": self.gateway.to_dict() if self.gateway else None,
            "monitoring": self.monitoring.to_dict() if self.monitoring else None,
            "exporters": self.exporters.to_dict() if self.exporters else None,
            "watchdog": self.watchdog.to_dict() if self.watchdog else None,
            "require_api_key": self.require_api_key,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _check_models(instances: Iterable[ServicePlan]) -> None:
    by_dir: dict[str, ServicePlan] = {}
    for instance in instances:
        other = by_dir.setdefault(instance.model.host_dir, instance)
        if (other.model.name, other.model.source, other.model.local_path) != (
                instance.model.name, instance.model.source, instance.model.local_path):
            raise PlanError(f"model_dir: instances '{other.name}' and '{instance.name}' put different models in "
                            f"{instance.model.host_dir}; give each model its own model_dir")


def _shared_gpu_order(instances: list[ServicePlan], explicit: set[str], facts: HostFacts,
                      active_units: set[str]) -> list[ServicePlan]:
    """Check fractions per GPU and order the start of instances that share one; returns updated plans.

    `explicit` names the instances whose gpu_memory_utilization the user set: a shared GPU needs it.
    """
    gpus = list(facts.gpus)
    if not gpus or len(instances) < 2:
        return instances
    users: dict[int, list[ServicePlan]] = {}
    for instance in instances:
        for index in instance.gpus if instance.gpus is not None else [g.index for g in gpus]:
            users.setdefault(index, []).append(instance)
    after: dict[str, list[str]] = {i.unit: [] for i in instances}
    for gpu in gpus:
        sharing = users.get(gpu.index, [])
        if len(sharing) < 2:
            continue
        names = ", ".join(i.name for i in sharing)
        fractions = []
        for instance in sharing:
            fraction = instance.sizing.get("gpu_memory_utilization")
            if instance.name not in explicit:
                raise PlanError(f"vllm_instances ({instance.name}).gpu_memory_utilization: instances {names} share "
                                f"GPU {gpu.index}; give each its fraction of the GPU's memory, e.g. "
                                f"{round((1 - SHARED_GPU_MARGIN) / len(sharing) - 0.005, 2)} each")
            fractions.append(float(fraction))
        total = gpu.memory_total_mib or 0
        free = gpu.memory_free_mib if gpu.memory_free_mib is not None else total
        # Memory our own running instances hold will be free again when they restart.
        ours = sum(f for i, f in zip(sharing, fractions, strict=True) if i.unit in active_units) * total
        available = min(total, free + ours) / total - SHARED_GPU_MARGIN if total else 1.0
        if sum(fractions) > available + 1e-9:
            detail = " + ".join(f"{i.name} {f:g}" for i, f in zip(sharing, fractions, strict=True))
            raise PlanError(
                f"vllm_instances: GPU {gpu.index} is over-committed: {detail} = {sum(fractions):.2f} of its "
                f"{total / 1024:.1f} GiB, but only {max(available, 0):.2f} is free at start-up "
                f"({free / 1024:.1f} GiB free now, {SHARED_GPU_MARGIN:.0%} kept for CUDA contexts); lower the "
                "fractions (vLLM takes utilization x total memory and refuses to start above free memory)")
        for position, instance in enumerate(sharing):
            for earlier in sharing[:position]:
                if earlier.unit not in after[instance.unit]:
                    after[instance.unit].append(earlier.unit)
    return [replace(i, after=tuple(after[i.unit])) for i in instances]


def apt_plan(mirror: str | None, os_release: OsRelease | None, files: Mapping[str, str | None]) -> AptMirrorPlan:
    """The apt sources stage from the host's source files: `mirror`, or None for the host's own sources."""
    try:
        return plan_apt_mirror(mirror, os_release, files)
    except AptMirrorError as error:
        raise PlanError(f"apt_mirror: {error}") from None


def _docker_engine(settings: Settings, facts: HostFacts, install: InstallFacts, device: str) -> DockerEnginePlan:
    """The engine stage; the NVIDIA toolkit only where the containers get GPUs (`device` cuda)."""
    try:
        return plan_docker_engine(
            docker_ce_repo=settings.docker_ce_repo,
            nvidia_container_repo=settings.nvidia_container_repo,
            registry_mirrors=settings.docker_registry_mirrors,
            os_release=facts.os,
            packages=install.docker_packages,
            files=install.docker_files,
            hashes=install.docker_hashes,
            daemon=install.docker_daemon,
            gpus=device == "cuda",
        )
    except DockerEngineError as error:
        raise PlanError(str(error)) from None


def build_host_plan(instances: tuple[InstanceSettings, ...], facts: HostFacts, host: str,
                    active_units: set[str] | None = None, gateway: GatewayPlan | None = None,
                    api_key: str | None = None, members: Sequence[Member] | None = None,
                    cluster: ClusterPlan | None = None) -> HostPlan:
    """Plan every instance of the host, check how they share it, and attach the stages it runs: one pure call.

    `active_units` names the running units among this host's instances (and "nginx" when it runs).
    Each instance sees the facts of its own model directory (`facts.for_model`). `members` are the
    deployment's hosts with their settings, for the monitoring stack and this host's exporters (none
    planned when not given). The apt sources and runtime install stages are planned from
    `facts.install` (none when it was not gathered). The host-level checks (GPUs, driver) run once. `cluster`:
    this host is a member of that multi-node instance (its one instance is sized for all the nodes).
    """
    active = active_units or set()
    host_settings = instances[0].settings
    key = host_settings.vllm_require_api_key
    key_files = (KEY_ENV_FILE, KEY_HEADER_FILE) if key else None
    listen = LOOPBACK if gateway is not None else None
    if gateway is not None and facts.port_in_use(gateway.port) and "nginx" not in active:
        raise PlanError(f"vllm_gateway_port: {gateway.port} is already in use on {host} by a program other than "
                        "nginx; choose a free port or stop that program")
    if key and not api_key:
        raise PlanError("vllm_api_key: vllm_require_api_key is on but no key was given or generated")
    device = resolve_device(host_settings, facts)  # a host-level setting: the same for every instance
    checks = host_checks(host_settings, facts, device)
    plans = [build_plan(i.settings, facts.for_model(i.settings.model_dir), host, service_active=i.unit in active,
                        name=i.name, unit=i.unit, gpus=i.gpus, listen_host=listen, key_files=key_files,
                        checks=checks, nodes=cluster.nnodes if cluster else 1) for i in instances]
    if cluster is not None and cluster.executor != "mp":
        raise PlanError(f"vllm_version: {host_settings.vllm_version} predates vLLM's own multi-node executor "
                        "(0.11.1); deploying a Ray cluster is not supported: use vllm_version 0.11.1 or later, or "
                        "start the Ray cluster the plan above shows by hand")
    if cluster is not None:
        conflicts = port_conflicts(cluster, host, facts, instances[0].unit in active)
        if conflicts:
            raise PlanError("\n".join(conflicts))
        plans = [member_service(plan, cluster, host_settings.vllm_env) for plan in plans]
    _check_models(plans)
    explicit = {i.name for i in instances if i.settings.vllm_gpu_memory_utilization is not None}
    plans = _shared_gpu_order(plans, explicit, facts, active)
    setup = HostSetup.of(plans[0])
    # A follower has no API to probe: the head's watchdog sees the whole cluster through it.
    watchdog = build_watchdog_plan(host_settings, tuple(p for p in plans if not p.headless),
                                   KEY_HEADER_FILE if key else None)
    monitoring = exporters = None
    if members is not None:
        monitoring = build_monitoring_plan(host_settings, host, members)
        exporters = build_exporters_plan(host_settings, host, members, setup.device, host_settings.vllm_gateway)
    install = facts.install
    return HostPlan(
        host=host,
        instances=tuple(plans),
        setup=setup,
        gateway=gateway,
        monitoring=monitoring,
        exporters=exporters,
        watchdog=watchdog,
        require_api_key=key,
        key_env_file=KEY_ENV_FILE if key else None,
        key_header_file=KEY_HEADER_FILE if key else None,
        driver=checks.driver,
        apt=apt_plan(host_settings.apt_mirror, facts.os, install.apt_files) if install else None,
        docker_engine=_docker_engine(host_settings, facts, install, setup.device)
        if install and setup.runtime == "docker" else None,
        conda=plan_conda(host_settings, setup.install, install.conda, install.conda_files, install.conda_packages)
        if install and setup.runtime == "conda" else None,
        api_key=api_key if key else None,
        settings=tuple(instances),
        facts=facts,
    )
