"""The bridge from pyinfra to the pure planner: settings + facts of the current host -> host plan."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from pyinfra import host, logger, state
from pyinfra.api.connectors import get_all_connectors
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.systemd import SystemdStatus

from facts import host as fact
from facts.gather import gather_host_facts
from plan.apt_mirror import AptMirrorError, AptMirrorPlan, plan_apt_mirror, watched_paths
from plan.cluster import ClusterError, ClusterMember, build_cluster_plan, member_address
from plan.conda import CondaPlan, condarc_path, pip_conf_path, plan_conda
from plan.docker_engine import (
    DOCKER_KEY,
    DOCKER_SOURCES,
    DPKG_NAMES,
    NVIDIA_KEY,
    NVIDIA_SOURCES,
    PREREQUISITES,
    DockerEngineError,
    DockerEnginePlan,
    plan_docker_engine,
)
from plan.gateway import GatewayPlan, build_gateway_plan
from plan.host import HostPlan, build_host_plan
from plan.keys import resolve_api_key
from plan.monitoring import ExportersPlan, MonitoringPlan, build_exporters_plan, build_monitoring_plan
from plan.schema import BY_NAME
from plan.service import PlanError
from plan.settings import InstanceSettings, Settings, SettingsError, load_instances, load_settings


@cache
def pyinfra_data_keys() -> frozenset[str]:
    """Host data names that belong to pyinfra's connectors (`ssh_user`, `fake_responses`, ...), not to us."""
    keys: set[str] = set()
    for connector in get_all_connectors().values():
        keys |= set(getattr(connector, "data_meta", None) or {})
    return frozenset(keys)


def settings_of(data: dict[str, Any]) -> Settings:
    """A host's validated settings from its pyinfra data (for stages run on their own, e.g. the apt one)."""
    return load_settings(data, pyinfra_data_keys())


def _deployment_members(settings: Settings) -> list[tuple[str, Settings, tuple[InstanceSettings, ...]]]:
    """Every inventory host of this host's deployment, with its instances (from settings alone)."""
    members = []
    for other in state.inventory:
        data = other.data.dict()
        try:
            instances = load_instances(data, pyinfra_data_keys())
        except SettingsError as error:
            if data.get("vllm_deployment", BY_NAME["vllm_deployment"].default) != settings.vllm_deployment:
                continue
            raise PlanError(f"gateway: host {other.name} of deployment '{settings.vllm_deployment}' has invalid "
                            f"settings:\n{error}") from None
        if instances[0].settings.vllm_deployment == settings.vllm_deployment:
            members.append((other.name, instances[0].settings, instances))
    return members


def _gateway(settings: Settings) -> GatewayPlan | None:
    if not settings.vllm_gateway:
        return None
    members = _deployment_members(settings)
    gateways = [name for name, member, _ in members if member.vllm_gateway]
    if len(gateways) > 1:
        raise PlanError(f"vllm_gateway: deployment '{settings.vllm_deployment}' has gateways on "
                        f"{', '.join(gateways)}; give it one (it is the deployment's single entry point)")
    return build_gateway_plan(settings, host.name, members)


def _refuse_cluster(settings: Settings) -> None:
    """A `vllm_cluster` member: plan the cluster from every member's settings (every refusal named at once),
    print it, and stop before any change: the stages that bring a cluster up are not built yet."""
    members = []
    for other in state.inventory:
        data = other.data.dict()
        if data.get("vllm_cluster") != settings.vllm_cluster:
            continue
        instances = load_instances(data, pyinfra_data_keys())
        member = instances[0].settings
        members.append(ClusterMember(other.name, member, None, member_address(other.name, member),
                                     instances=len(instances)))
    try:
        plan = build_cluster_plan(members)
    except ClusterError as error:
        raise PlanError(str(error)) from None
    logger.info(plan.summary())
    raise PlanError(f"vllm_cluster: cluster {settings.vllm_cluster!r} is planned above, but deploying a multi-node "
                    "instance is not built yet; nothing was changed. Size it with `python -m sizing fit --nodes N`, "
                    "or remove vllm_cluster to serve the model on each host alone")


def _operate(settings: Settings, device: str) -> tuple[MonitoringPlan | None, ExportersPlan | None]:
    """The monitoring stack this host runs and what it exports, from its deployment's members."""
    members = _deployment_members(settings)
    return (build_monitoring_plan(settings, host.name, members),
            build_exporters_plan(settings, host.name, members, device, settings.vllm_gateway))


def _facts_for_model(base: Any) -> Any:
    """Facts seen from another model directory: its disk and its config.json."""
    def view(model_dir: str) -> Any:
        usage = host.get_fact(fact.DiskSpace, path=model_dir)
        disks = dict(base.disks)
        if usage is not None:
            disks[model_dir] = usage
        return replace(base, disks=disks, model_config=host.get_fact(fact.ModelConfig, path=model_dir))
    return view


def plan_apt_sources(mirror: str | None, os_release: Any) -> AptMirrorPlan:
    """The apt sources stage from the host's source files: `mirror`, or None for the host's own sources."""
    os_id = getattr(os_release, "id", "") or ""
    current = host.get_fact(fact.TextFiles, paths=watched_paths(os_id)) if mirror or os_id else {}
    try:
        return plan_apt_mirror(mirror, os_release, current)
    except AptMirrorError as error:
        raise PlanError(f"apt_mirror: {error}") from None


def _docker_engine(settings: Settings, os_release: Any) -> DockerEnginePlan:
    try:
        return plan_docker_engine(
            docker_ce_repo=settings.docker_ce_repo,
            nvidia_container_repo=settings.nvidia_container_repo,
            registry_mirrors=settings.docker_registry_mirrors,
            os_release=os_release,
            packages=host.get_fact(fact.DebPackageVersions, packages=DPKG_NAMES),
            files=host.get_fact(fact.TextFiles, paths=(DOCKER_SOURCES, NVIDIA_SOURCES)),
            hashes=host.get_fact(fact.FileHashes, paths=(DOCKER_KEY, NVIDIA_KEY)),
            daemon=host.get_fact(fact.DockerDaemonConfig),
        )
    except DockerEngineError as error:
        raise PlanError(str(error)) from None


def _conda(plan: HostPlan) -> CondaPlan:
    settings = plan.host_settings
    return plan_conda(
        settings,
        plan.setup.install,
        host.get_fact(fact.CondaState, prefix=settings.conda_prefix, env=settings.conda_env_prefix),
        host.get_fact(fact.TextFiles, paths=(condarc_path(settings.conda_prefix),
                                             pip_conf_path(settings.conda_env_prefix))),
        host.get_fact(fact.DebPackageVersions, packages=PREREQUISITES),
    )


def _with_install_stages(plan: HostPlan) -> HostPlan:
    """The apt sources and runtime install decisions, from the packages and files the host has now."""
    settings = plan.host_settings
    return replace(
        plan,
        apt=plan_apt_sources(settings.apt_mirror, plan.facts.os),
        docker_engine=_docker_engine(settings, plan.facts.os) if plan.setup.runtime == "docker" else None,
        conda=_conda(plan) if plan.setup.runtime == "conda" else None,
    )


def plan_for_current_host() -> HostPlan:
    """Validate the host's data, gather its facts and plan; bad input stops the run before any change."""
    try:
        instances = load_instances(host.data.dict(), pyinfra_data_keys())
        settings = instances[0].settings
        if settings.vllm_cluster:
            _refuse_cluster(settings)
        facts = gather_host_facts(host, model_dir=settings.model_dir,
                                  ports=[i.settings.vllm_port for i in instances])
        statuses = host.get_fact(SystemdStatus)
        active = {unit for unit in [i.unit for i in instances] + ["nginx"] if statuses.get(f"{unit}.service")}
        try:
            api_key = resolve_api_key(settings)
        except (OSError, ValueError) as error:
            raise PlanError(f"vllm_api_key_file: {error}") from None
        plan = build_host_plan(instances, facts, host.name, active_units=active, gateway=_gateway(settings),
                               api_key=api_key, facts_for_model=_facts_for_model(facts))
        monitoring, exporters = _operate(settings, plan.setup.device)
        plan = replace(plan, monitoring=monitoring, exporters=exporters)
        return _with_install_stages(plan)
    except (SettingsError, PlanError) as error:
        raise DeployError(f"{host.name}: {error}") from None
