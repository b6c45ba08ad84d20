"""The bridge from pyinfra to the pure planner: settings + facts of the current host -> host plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from typing import Any

from gevent.lock import Semaphore
from pyinfra import host, logger, state
from pyinfra.api.connectors import get_all_connectors
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import Host
from pyinfra.facts.systemd import SystemdStatus

from facts import pyinfra_facts as fact
from facts.gather import InstallQuery, gather_host_facts
from facts.model import HostFacts, InstallFacts, OsRelease
from facts.pyinfra_facts import FactSection
from plan.apt_mirror import AptMirrorPlan, every_watched_path, watched_paths
from plan.cluster import (
    ClusterError,
    ClusterMember,
    ClusterPlan,
    NetworkFacts,
    build_cluster_plan,
    member_address,
    route_target,
)
from plan.conda import condarc_path, pip_conf_path
from plan.docker_engine import DOCKER_KEY, DOCKER_SOURCES, DPKG_NAMES, NVIDIA_KEY, NVIDIA_SOURCES
from plan.gateway import GatewayPlan, build_gateway_plan
from plan.host import HostPlan, apt_plan, build_host_plan
from plan.keys import resolve_api_key
from plan.packages import PREREQUISITES
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
            first = instances[0].settings
            # A cluster follower serves nothing itself: its head is the deployment's upstream and scrape target.
            follower = bool(first.vllm_cluster) and not first.vllm_cluster_head
            members.append((other.name, first, () if follower else instances))
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


# One plan per cluster and one set of facts per host for the whole run: every member's deploy needs the plan,
# and the plan needs every member's facts. deploy.py runs once per host, in one process, the hosts' runs in
# parallel greenlets: a lock per key makes the second one wait for the first one's result.
_CLUSTERS: dict[str, ClusterPlan | PlanError] = {}
_FACTS: dict[str, HostFacts] = {}
_LOCKS: dict[str, Semaphore] = {}


def _once(key: str) -> Semaphore:
    return _LOCKS.setdefault(key, Semaphore())


def _cluster_plan(settings: Settings) -> ClusterPlan:
    """The plan of this host's cluster from every member's settings and facts, each refusal named at once:
    settings first (nothing is asked of a host whose cluster cannot be planned), then the facts."""
    name = settings.vllm_cluster or ""
    with _once(f"cluster {name}"):
        if name not in _CLUSTERS:
            try:
                _CLUSTERS[name] = _plan_cluster(name)
            except PlanError as error:
                _CLUSTERS[name] = error
    planned = _CLUSTERS[name]
    if isinstance(planned, PlanError):
        raise planned
    return planned


def _plan_cluster(name: str) -> ClusterPlan:
    found = []
    for other in state.inventory:
        data = other.data.dict()
        if data.get("vllm_cluster") != name:
            continue
        try:
            instances = load_instances(data, pyinfra_data_keys())
        except SettingsError as error:
            raise PlanError(f"vllm_cluster: member {other.name} of cluster {name!r} has invalid settings:\n"
                            f"{error}") from None
        found.append((other, instances))
    problems: list[tuple[str, str]] = []
    members = []
    for other, instances in found:
        try:
            reached = member_address(other.name, instances[0].settings)
        except ClusterError as error:
            problems += [(f, f"{other.name}: {m}") for f, m in error.problems]
            reached = other.name
        members.append(ClusterMember(other.name, instances[0].settings, None, reached, instances=len(instances)))
    try:
        build_cluster_plan(members)  # the settings alone: refused here, no member is asked anything
    except ClusterError as error:
        problems += error.problems
    if problems:
        raise PlanError(str(ClusterError(name, problems)))
    try:
        gathered = []
        for (other, instances), member in zip(found, members, strict=True):
            facts = gather_facts(instances, other)
            peer = route_target(members, other.name)
            gpus = bool(facts.gpus)
            network = NetworkFacts(route=other.get_fact(fact.RouteTo, address=peer) if peer else None,
                                   addresses=other.get_fact(fact.InterfaceAddresses),
                                   ibstat=other.get_fact(fact.IbStat) if gpus else None,
                                   acs=other.get_fact(fact.PciAcs) if gpus else None)
            gathered.append(replace(member, facts=facts, network=network))
        plan = build_cluster_plan(gathered)
    except ClusterError as error:
        raise PlanError(str(error)) from None
    logger.info(plan.summary())
    return plan


def _install_query(settings: Settings) -> InstallQuery:
    """What the apt sources and runtime install stages decide from; only the running runtime's part is asked.

    Asked with the host's facts, before its os-release is known: the apt files of every distribution, of
    which only the host's are kept (what watched_paths(os_id) alone would have asked).
    """
    docker, conda = settings.vllm_runtime == "docker", settings.vllm_runtime == "conda"
    sections = [FactSection("stage.apt_files", fact.TextFiles, {"paths": every_watched_path()})]
    if docker:
        # A CPU host's containers get no GPUs: the NVIDIA toolkit's files are not asked for.
        toolkit = settings.vllm_device != "cpu"
        sections += [
            FactSection("stage.docker_packages", fact.DebPackageVersions, {"packages": DPKG_NAMES}),
            FactSection("stage.docker_files", fact.TextFiles,
                        {"paths": (DOCKER_SOURCES, NVIDIA_SOURCES) if toolkit else (DOCKER_SOURCES,)}),
            FactSection("stage.docker_hashes", fact.FileHashes,
                        {"paths": (DOCKER_KEY, NVIDIA_KEY) if toolkit else (DOCKER_KEY,)}),
            FactSection("stage.docker_daemon", fact.DockerDaemonConfig),
        ]
    if conda:
        sections += [
            FactSection("stage.conda", fact.CondaState,
                        {"prefix": settings.conda_prefix, "env": settings.conda_env_prefix}),
            FactSection("stage.conda_files", fact.TextFiles, {"paths": (condarc_path(settings.conda_prefix),
                                                                        pip_conf_path(settings.conda_env_prefix))}),
            FactSection("stage.conda_packages", fact.DebPackageVersions, {"packages": PREREQUISITES}),
        ]
    if settings.vllm_runtime in ("venv", "conda"):
        sections.append(FactSection("stage.account", fact.PasswdEntry, {"user": settings.vllm_user}))
    if settings.vllm_runtime == "venv":
        sections.append(FactSection("stage.venv_packages", fact.VenvDistributions,
                                    {"venv": f"{settings.vllm_prefix}/venv"}))

    def build(values: Mapping[str, Any], os_release: OsRelease | None) -> InstallFacts:
        os_id = os_release.id if os_release else ""
        wanted = watched_paths(os_id)
        apt_files = {path: text for path, text in values["stage.apt_files"].items() if path in wanted}
        runtime = {s.key.removeprefix("stage."): values[s.key] for s in sections[1:]}
        return InstallFacts(apt_files=apt_files if settings.apt_mirror or os_id else {}, **runtime)

    return InstallQuery(tuple(sections), build)


def plan_apt_sources(mirror: str | None, os_release: OsRelease | None) -> AptMirrorPlan:
    """The apt sources stage on its own (e.g. the apt-only test deploy): the host's source files, then the plan."""
    os_id = os_release.id if os_release else ""
    current = host.get_fact(fact.TextFiles, paths=watched_paths(os_id)) if mirror or os_id else {}
    return apt_plan(mirror, os_release, current)


def gather_facts(instances: tuple[InstanceSettings, ...], target: Host | None = None) -> HostFacts:
    """Every fact the host plan needs, asked before it is computed: the host's, each model directory's and
    the install stages'. `target`: another inventory host (a cluster member); once per host and run."""
    target = target or host
    with _once(f"facts {target.name}"):
        if target.name not in _FACTS:
            settings = instances[0].settings
            _FACTS[target.name] = gather_host_facts(
                target, model_dir=settings.model_dir, ports=[i.settings.vllm_port for i in instances],
                model_dirs=tuple(dict.fromkeys(i.settings.model_dir for i in instances)),
                install=_install_query(settings))
    return _FACTS[target.name]


def plan_for_current_host() -> HostPlan:
    """Validate the host's data, gather its facts and plan; bad input stops the run before any change."""
    try:
        instances = load_instances(host.data.dict(), pyinfra_data_keys())
        settings = instances[0].settings
        cluster = _cluster_plan(settings) if settings.vllm_cluster else None
        facts = gather_facts(instances)
        statuses = host.get_fact(SystemdStatus)
        units = [i.unit for i in instances] + ["nginx"]
        up = host.get_fact(fact.UnitsUp, services=[f"{unit}.service" for unit in units])
        active = {unit for unit in units if statuses.get(f"{unit}.service") or up.get(f"{unit}.service")}
        try:
            api_key = resolve_api_key(settings)
        except (OSError, ValueError) as error:
            raise PlanError(f"vllm_api_key_file: {error}") from None
        return build_host_plan(instances, facts, host.name, active_units=active, gateway=_gateway(settings),
                               api_key=api_key, members=_deployment_members(settings), cluster=cluster)
    except (SettingsError, PlanError) as error:
        raise DeployError(f"{host.name}: {error}") from None
