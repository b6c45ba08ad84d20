"""The cluster plan: one model served by several hosts together, as pure data.

Hosts with the same `vllm_cluster` form one instance: the `vllm_cluster_head` member (node rank 0) runs the
API server, the others (ranks 1.., ordered by inventory name so the ranks never depend on inventory order)
run vLLM headless. The layout comes from the same sizing call as `python -m sizing fit --nodes N`: the
single-host fit request of the head (plan.service), for N nodes of the tightest member. Every refusal is
collected and raised at once, naming the field and the fix, before anything is changed on any member.

What each node runs (sizing.multinode): vLLM's own multi-node executor from 0.11.1 (`--nnodes --node-rank
--master-addr --master-port`, followers `--headless`, started through remote/vllm_serve.py because
`--headless` is honoured only on the `serve` path), a Ray cluster before it. Start order: followers first,
then the head, whose verify runs once every follower is up. Pure: no pyinfra import.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sizing
from facts.model import HostFacts, IbStat, InterfaceAddress, PciAcs, Route
from plan.interconnect import InterconnectPlan, diagnose, path_verdict
from plan.settings import Settings
from plan.validators import Invalid, address
from sizing.multinode import executor_for, internal_ports, node_launches

LAUNCHER = "vllm_serve.py"  # remote/vllm_serve.py, installed under vllm_prefix
RAY_UNIT = "vllm-ray"
SERVE_UNIT = "vllm"
RAY_WORKER_PORTS = range(10002, 20000)  # `ray start`'s default --min/max-worker-port
# Settings that must be equal on every member: one engine, one model, one API.
SAME_ON_EVERY_MEMBER = (
    "vllm_version", "vllm_runtime", "vllm_package", "vllm_device", "model", "model_source", "model_revision",
    "model_dir", "vllm_served_model_name", "vllm_port", "vllm_cluster_master_port", "vllm_tensor_parallel_size",
    "vllm_pipeline_parallel_size", "vllm_dtype", "vllm_quantization", "vllm_kv_cache_dtype",
    "vllm_max_model_len", "vllm_max_num_seqs", "vllm_max_num_batched_tokens", "vllm_enforce_eager",
    "vllm_gpu_memory_utilization", "vllm_cpu_kv_cache_memory", "vllm_extra_args", "vllm_trust_remote_code",
)


class ClusterError(ValueError):
    """The cluster cannot be planned; `problems` are (field, message), every one found."""

    def __init__(self, cluster: str, problems: list[tuple[str, str]]):
        self.cluster = cluster
        self.problems = problems
        lines = [f"  {name}: {message}" for name, message in problems]
        super().__init__(f"cluster {cluster!r} cannot be planned (nothing was changed on any member):\n"
                         + "\n".join(lines))


@dataclass(frozen=True)
class NetworkFacts:
    """What a member's network looks like: the route to its peer, its addresses, RDMA adapters, PCIe ACS."""

    route: Route | None = None  # `ip -o route get <peer>`: the head's address, or the first follower's on the head
    addresses: tuple[InterfaceAddress, ...] = ()
    ibstat: IbStat | None = None
    acs: PciAcs | None = None


@dataclass(frozen=True)
class ClusterMember:
    """One host of a cluster: inventory name, settings, facts (None before they are gathered), the address
    the other members reach it by, its network facts, and how many instances its settings declare."""

    name: str
    settings: Settings
    facts: HostFacts | None
    address: str
    network: NetworkFacts | None = None
    instances: int = 1


@dataclass(frozen=True)
class CommInterface:
    """The interface NCCL and gloo use on one node, and the address vLLM advertises (VLLM_HOST_IP)."""

    ifname: str | None
    address: str | None
    reason: str


@dataclass(frozen=True)
class PortCheck:
    """A port (range) that must be free on `host` and reachable from `peers`, for a later preflight."""

    host: str
    ports: range
    why: str
    peers: tuple[str, ...]

    @property
    def shown(self) -> str:
        return str(self.ports.start) if len(self.ports) == 1 else f"{self.ports.start}-{self.ports.stop - 1}"


@dataclass(frozen=True)
class NodePlan:
    """One member's part: its rank, what it starts, the environment that pins its network, and why."""

    host: str
    rank: int
    head: bool
    address: str
    serve_args: tuple[str, ...] | None  # appended to the service's vLLM arguments; None: no vLLM here (Ray)
    ray_start: tuple[str, ...] | None
    units: tuple[str, ...]  # in start order on this node
    env: dict[str, str]
    interface: CommInterface
    interconnect: InterconnectPlan | None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterPlan:
    """Every member's part of one multi-node instance, the shared layout and the order of bring-up."""

    name: str
    head: str
    executor: str  # mp | ray
    device: str
    master_addr: str
    master_port: int
    nodes: tuple[NodePlan, ...]  # by rank
    tensor_parallel_size: int | None
    pipeline_parallel_size: int | None
    ranks_per_node: int | None
    fit: dict[str, Any] | None  # sizing.FitResult.to_dict(); None before facts
    ports: tuple[PortCheck, ...]
    reasons: tuple[str, ...] = ()
    install_packages: tuple[str, ...] = field(default_factory=tuple)

    @property
    def nnodes(self) -> int:
        return len(self.nodes)

    @property
    def followers(self) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if not n.head)

    @property
    def start_order(self) -> tuple[tuple[str, str], ...]:
        """(host, unit) pairs: Ray daemons head first (the followers join it), then vLLM followers before the
        head, whose API server only answers once every rank has joined."""
        head = self.node(self.head)
        order: list[tuple[str, str]] = []
        if self.executor == "ray":
            order += [(n.host, RAY_UNIT) for n in (head, *self.followers)]
        order += [(n.host, SERVE_UNIT) for n in self.followers if n.serve_args is not None]
        order.append((head.host, SERVE_UNIT))
        return tuple(order)

    @property
    def verify_after(self) -> tuple[tuple[str, str], ...]:
        """What must be up before the head's verify: every follower unit."""
        return tuple(step for step in self.start_order if step[0] != self.head)

    def node(self, host: str) -> NodePlan:
        return next(n for n in self.nodes if n.host == host)

    def argv(self, host: str, service_argv: Sequence[str], prefix: str) -> tuple[str, ...]:
        """The member's ExecStart: the single-host argv (venv python -m api_server ...) started through the
        serve launcher (`--headless` works only on the `serve` path), plus the node's own arguments."""
        node = self.node(host)
        if node.serve_args is None:
            raise ValueError(f"{host} runs no vLLM process (a Ray follower)")
        args = list(service_argv)
        if args[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]:
            args[1:3] = [f"{prefix.rstrip('/')}/{LAUNCHER}"]
        return (*args, *node.serve_args)

    def summary(self) -> str:
        """The plan in a few lines, printed before any change."""
        layout = (f"tp={self.tensor_parallel_size} pp={self.pipeline_parallel_size}"
                  if self.tensor_parallel_size else "layout chosen once facts are gathered")
        lines = [f"cluster {self.name}: {self.nnodes} nodes, head {self.head} ({self.master_addr}:{self.master_port}),"
                 f" {'vLLM multi-node executor' if self.executor == 'mp' else 'Ray'}, {layout}"]
        for node in self.nodes:
            role = "head" if node.head else "headless" if node.serve_args is not None else "Ray worker"
            lines.append(f"  rank {node.rank}  {node.host} ({role})  {node.interface.ifname or '?'} "
                         f"{node.address}  units {', '.join(node.units)}")
            lines += [f"    why  {reason}" for reason in node.reasons]
        lines += [f"  why  {reason}" for reason in self.reasons]
        lines += [f"  port {check.shown} on {check.host}: {check.why}" for check in self.ports]
        order = " -> ".join(f"{host}:{unit}" for host, unit in self.start_order)
        lines.append(f"  start {order}; the head verifies after every follower is up")
        return "\n".join(lines)


def clusters(members: Iterable[ClusterMember]) -> dict[str, list[ClusterMember]]:
    """Members grouped by `vllm_cluster`; hosts without one are not in any cluster."""
    out: dict[str, list[ClusterMember]] = {}
    for member in members:
        if member.settings.vllm_cluster:
            out.setdefault(member.settings.vllm_cluster, []).append(member)
    return out


def member_address(name: str, settings: Settings) -> str:
    """How the other members reach a host: vllm_cluster_address, else vllm_advertise_address, else its inventory
    name, which is then held to the address validator (it reaches commands and unit files): ClusterError if not."""
    chosen = settings.vllm_cluster_address or settings.vllm_advertise_address
    if chosen:
        return chosen
    try:
        return address(name)
    except Invalid:
        raise ClusterError(settings.vllm_cluster or "?", [(
            "vllm_cluster_address", f"the inventory name {name!r} is how the other members reach this host when "
            "vllm_cluster_address is unset, and it is not a host name or IP address; set vllm_cluster_address")]
        ) from None


def route_target(members: Sequence[ClusterMember], member: str) -> str | None:
    """The address `ip route get` must be asked for on `member`: the head's, or on the head the first
    follower's (a route to one's own address goes through `lo` and names no interface)."""
    heads = [m for m in members if m.settings.vllm_cluster_head]
    if len(heads) != 1:
        return None
    followers = sorted((m for m in members if m is not heads[0]), key=lambda m: m.name)
    if member == heads[0].name:
        return followers[0].address if followers else None
    return heads[0].address


def _check_members(name: str, members: Sequence[ClusterMember]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    names = ", ".join(sorted(m.name for m in members))
    heads = [m.name for m in members if m.settings.vllm_cluster_head]
    if len(members) < 2:
        problems.append(("vllm_cluster", f"cluster {name!r} has one member ({names}); give the other hosts "
                         f"vllm_cluster = {name!r}, or remove vllm_cluster"))
    if not heads:
        problems.append(("vllm_cluster_head", f"cluster {name!r} has no head; set vllm_cluster_head = True on "
                         f"exactly one of {names}"))
    elif len(heads) > 1:
        problems.append(("vllm_cluster_head", f"cluster {name!r} has {len(heads)} heads ({', '.join(sorted(heads))});"
                         " exactly one member answers the API: keep vllm_cluster_head = True on one"))
    for member in members:
        if member.instances > 1:
            problems.append(("vllm_instances", f"{member.name} declares {member.instances} instances; a member of "
                             f"cluster {name!r} runs exactly one (all its GPUs serve the one model): remove "
                             "vllm_instances there"))
    for setting in SAME_ON_EVERY_MEMBER:
        values = {m.name: getattr(m.settings, setting) for m in members}
        if len({repr(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{host}: {value!r}" for host, value in sorted(values.items()))
            problems.append((setting, f"differs between the members of cluster {name!r} ({shown}); one engine "
                             "needs one value: set it once for the cluster (e.g. in its group_data file)"))
    runtimes = {m.settings.vllm_runtime for m in members}
    if "docker" in runtimes:
        problems.append(("vllm_runtime", f"cluster {name!r}: the docker runtime publishes one port, but NCCL, gloo "
                         "and vLLM's own ports need the host's network on every member; use 'venv' or 'conda'"))
    return problems


def _check_gpus(name: str, members: Sequence[ClusterMember]) -> list[tuple[str, str]]:
    """Same GPU model, same count on every member (vLLM gives every node the same number of ranks)."""
    problems: list[tuple[str, str]] = []
    models = {m.name: sorted({g.name for g in m.facts.gpus} if m.facts else ()) for m in members}
    counts = {m.name: len(m.facts.gpus) if m.facts else 0 for m in members}
    if len({tuple(v) for v in models.values()}) > 1 or any(len(v) > 1 for v in models.values()):
        shown = ", ".join(f"{host}: {' + '.join(v) or 'no GPU'}" for host, v in sorted(models.items()))
        problems.append(("gpus", f"mixed GPU models in cluster {name!r} ({shown}); every rank must be the same "
                         "card: serve with hosts of one GPU model (or set CUDA_VISIBLE_DEVICES in vllm_env)"))
    elif len(set(counts.values())) > 1:
        shown = ", ".join(f"{host}: {count}" for host, count in sorted(counts.items()))
        problems.append(("gpus", f"unequal GPU counts in cluster {name!r} ({shown}); vLLM runs the same number of "
                         "ranks on every node: use members with equal counts, or limit the larger ones with "
                         "CUDA_VISIBLE_DEVICES in vllm_env"))
    return problems


def choose_interface(route: Route | None, addresses: Sequence[InterfaceAddress], override: str | None,
                     peer: str | None) -> CommInterface:
    """The interface that routes to the peer (head), or the one the setting names; its address for VLLM_HOST_IP."""
    if override:
        owned = next((a.address for a in addresses if a.ifname == override), None)
        return CommInterface(override, owned or (route.src if route else None),
                             f"vllm_cluster_interface names {override}")
    if route is None or route.status != "ok" or not route.dev:
        return CommInterface(None, None, "no route to the peer gathered yet: the interface is chosen once it is")
    return CommInterface(route.dev, route.src, f"{route.dev} routes to {peer or route.destination}"
                         + (f" via {route.via}" if route.via else "") + f" (source {route.src})")


def _rdma_env(members: Sequence[ClusterMember]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """NCCL_IB_* per member: the active InfiniBand (else RoCE) ports, only when every member has some."""
    per_host: dict[str, tuple[Any, ...]] = {}
    unknown = False
    for member in members:
        ib = member.network.ibstat if member.network else None
        if ib is None or ib.status in ("empty", "error"):
            unknown = True
            continue
        per_host[member.name] = ib.active_infiniband or ib.active_roce
    if unknown:
        return {}, ["RDMA adapters not gathered yet: NCCL picks its transport itself"]
    if all(per_host.values()):
        env: dict[str, dict[str, str]] = {}
        reasons = []
        for host, ports in sorted(per_host.items()):
            env[host] = {"NCCL_IB_HCA": ",".join(p.name for p in ports)}
            kind = "InfiniBand" if ports[0].link_layer == "InfiniBand" else "RoCE (link layer Ethernet)"
            reasons.append(f"{host}: NCCL over {kind} on {', '.join(p.name for p in ports)} "
                           f"({ports[0].rate or '?'} Gb/s, from ibstat)")
        return env, reasons
    without = sorted(host for host, ports in per_host.items() if not ports)
    return ({host: {"NCCL_IB_DISABLE": "1"} for host in per_host},
            [f"NCCL_IB_DISABLE=1: {', '.join(without)} has no active InfiniBand/RoCE port (ibstat), so NCCL "
             "crosses nodes over TCP sockets on every member"])


def _address_ok(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _size(head: ClusterMember, members: Sequence[ClusterMember], device: str) -> Any:
    """FitResult for N nodes of the tightest member, through the single host's request (plan.service)."""
    from plan.service import _fit_request, resolve_model_spec

    def tightest(member: ClusterMember) -> float:
        if device == "cpu":
            return float(member.facts.mem_total_bytes or 0) if member.facts else 0.0
        sizes = [g.memory_total_mib or 0 for g in member.facts.gpus] if member.facts else []
        return float(min(sizes) if sizes else 0)

    facts = min(members, key=tightest).facts
    model = resolve_model_spec(head.settings, facts)
    request = replace(_fit_request(head.settings, facts, device, model), nodes=len(members))
    return sizing.fit(request)


def build_cluster_plan(members: Sequence[ClusterMember]) -> ClusterPlan:
    """Plan one cluster, or raise ClusterError listing every problem with its field and fix."""
    if not members:
        raise ValueError("a cluster needs members")
    name = members[0].settings.vllm_cluster or "?"
    problems = _check_members(name, members)
    have_facts = all(m.facts is not None for m in members)
    device = members[0].settings.vllm_device
    if have_facts and not problems:
        from plan.service import PlanError, resolve_device

        try:
            device = resolve_device(members[0].settings, members[0].facts)
        except PlanError as error:
            problems.append(("vllm_device", str(error)))
        if device == "cuda":
            problems += _check_gpus(name, members)
    if problems:
        raise ClusterError(name, problems)
    head = next(m for m in members if m.settings.vllm_cluster_head)
    ordered = [head, *sorted((m for m in members if m is not head), key=lambda m: m.name)]
    settings = head.settings
    master_port = settings.vllm_cluster_master_port
    version = settings.vllm_version
    executor = executor_for(version)
    reasons: list[str] = []
    fit = None
    if have_facts:
        from plan.service import PlanError

        try:
            fit = _size(head, ordered, device)
        except sizing.SizingError as error:
            raise ClusterError(name, [(f"vllm_{error.field}", error.message)]) from error
        except PlanError as error:
            raise ClusterError(name, [("model", str(error))]) from error
        if not fit.fits:
            ways = [f"way out: {s}" for s in fit.suggestions]
            raise ClusterError(name, [("model", f"{settings.model} does not fit on {len(ordered)} nodes "
                                       f"({fit.outcome}): " + "; ".join([*fit.reasons, *ways]))])
        reasons += fit.reasons[:1] if fit.nodes > 1 else []
    else:
        reasons.append("sized once every member's facts are gathered")
    if device == "cpu" and executor == "ray":
        raise ClusterError(name, [("vllm_version", f"{version} predates vLLM's own multi-node executor (0.11.1), "
                                   "and the CPU build ships no Ray: use 0.11.1 or later")])
    reasons.append(f"vLLM {version}: " + ("its own multi-node executor (--nnodes/--node-rank/--master-addr, "
                                         "followers --headless; PR #23691, 0.11.1)" if executor == "mp" else
                                         "before 0.11.1 several nodes need a Ray cluster (ray start --head / "
                                         "--address, --distributed-executor-backend ray)"))
    rdma_env, rdma_reasons = _rdma_env(ordered) if device == "cuda" else ({}, [])
    reasons += rdma_reasons
    master_addr = head.address
    interfaces: dict[str, CommInterface] = {}
    for member in ordered:
        peer = route_target(ordered, member.name)
        network = member.network or NetworkFacts()
        interface = choose_interface(network.route, network.addresses, member.settings.vllm_cluster_interface, peer)
        if network.route is not None and network.route.status == "unreachable" and not interface.ifname:
            problems.append(("vllm_cluster_address", f"{member.name} has no route to {peer} "
                             f"({network.route.message}); fix the network or set the reachable address"))
        interfaces[member.name] = interface
    if problems:
        raise ClusterError(name, problems)
    addresses = tuple(interfaces[m.name].address or m.address for m in ordered)
    launches = node_launches(len(ordered), master_addr, master_port, version,
                             addresses if all(_address_ok(a) for a in addresses) else None)
    internal = internal_ports(master_port)
    nodes: list[NodePlan] = []
    for member, launch in zip(ordered, launches, strict=True):
        interface = interfaces[member.name]
        env = {"VLLM_PORT": str(internal.start)}
        if interface.address:
            env["VLLM_HOST_IP"] = interface.address
        if interface.ifname:
            env["GLOO_SOCKET_IFNAME"] = interface.ifname
            if device == "cuda":
                env["NCCL_SOCKET_IFNAME"] = interface.ifname
        env.update(rdma_env.get(member.name, {}))
        doctor = None
        node_reasons = [f"interface {interface.reason}"]
        if device == "cuda" and fit is not None:
            net = member.network or NetworkFacts()
            gpus = member.facts.gpus if member.facts else ()
            path = path_verdict(member.facts.topology if member.facts else None, gpus[0].name if gpus else None,
                                net.acs)
            doctor = diagnose(path, fit.tensor_parallel_size, device)  # TP stays within a node on GPUs
            env.update(doctor.env)
            node_reasons += list(doctor.reasons)
        units = ((RAY_UNIT,) if launch.ray_start else ()) + ((SERVE_UNIT,) if launch.serve_args is not None else ())
        nodes.append(NodePlan(member.name, launch.rank, launch.head, interface.address or member.address,
                              launch.serve_args, launch.ray_start, units, env, interface, doctor,
                              tuple(node_reasons)))
    ports = _port_checks(ordered, settings, executor, master_port)
    return ClusterPlan(
        name=name, head=head.name, executor=executor, device=device, master_addr=master_addr,
        master_port=master_port, nodes=tuple(nodes),
        tensor_parallel_size=fit.tensor_parallel_size if fit else None,
        pipeline_parallel_size=fit.pipeline_parallel_size if fit else None,
        ranks_per_node=fit.ranks_per_node if fit else None,
        fit=fit.to_dict() if fit else None, ports=ports, reasons=tuple(reasons),
        install_packages=("ray[default]",) if executor == "ray" else (),
    )


def _port_checks(ordered: Sequence[ClusterMember], settings: Settings, executor: str,
                 master_port: int) -> tuple[PortCheck, ...]:
    """What preflight must find free (and reachable from the other members) before a cluster start."""
    head, followers = ordered[0].name, tuple(m.name for m in ordered[1:])
    everyone = tuple(m.name for m in ordered)
    checks = [PortCheck(head, range(master_port, master_port + 1),
                        "the master port (torch.distributed rendezvous)" if executor == "mp" else "Ray's GCS port",
                        followers),
              PortCheck(head, range(settings.vllm_port, settings.vllm_port + 1), "the API port", ())]
    internal = internal_ports(master_port)
    for member in everyone:
        others = tuple(m for m in everyone if m != member)
        checks.append(PortCheck(member, internal, "vLLM's own ports (VLLM_PORT upward: message queues, stores)",
                                others))
        if executor == "ray":
            checks.append(PortCheck(member, RAY_WORKER_PORTS, "Ray's worker ports", others))
    return tuple(checks)


def plan_clusters(members: Mapping[str, ClusterMember]) -> dict[str, ClusterPlan]:
    """Every cluster of a deployment, by name; ClusterError for the first that cannot be planned."""
    return {name: build_cluster_plan(group) for name, group in sorted(clusters(members.values()).items())}


def probe_ports(ports: range) -> tuple[int, ...]:
    """The ports of a range a reachability probe tries: its ends (a firewall opens a range or none of it)."""
    return tuple(dict.fromkeys((ports.start, ports.stop - 1)))


def member_service(service: Any, cluster: ClusterPlan, user_env: Mapping[str, str] | None = None) -> Any:
    """A member's single-host service plan (plan.service.ServicePlan) made its cluster part: started through the
    serve launcher with the node's arguments and network environment (`vllm_env`, `user_env`, still has the last
    word), and marked with its role."""
    from plan.service import ClusterRole

    node = cluster.node(service.host)
    role = ClusterRole(name=cluster.name, rank=node.rank, head=node.head, nnodes=cluster.nnodes,
                       head_host=cluster.head, master=f"{cluster.master_addr}:{cluster.master_port}",
                       listen_ports=tuple(sorted({port for check in cluster.ports if check.host == service.host
                                                  and check.peers for port in check.ports})),
                       reach=tuple((check.host, cluster.node(check.host).address, probe_ports(check.ports), check.why)
                                   for check in cluster.ports if service.host in check.peers))
    return replace(service, argv=cluster.argv(service.host, service.argv, service.prefix),
                   env={**service.env, **node.env, **(user_env or {})}, cluster=role)


def port_conflicts(cluster: ClusterPlan, host: str, facts: HostFacts, own_running: bool) -> list[str]:
    """The cluster ports `host` must have free that another program holds (ours may hold them while running)."""
    if own_running:
        return []
    problems = []
    for check in cluster.ports:
        if check.host != host or check.why == "the API port":  # the API port: the single-host preflight's
            continue
        taken = [port for port in check.ports if facts.port_in_use(port)]
        if taken:
            problems.append(f"vllm_cluster_master_port: {', '.join(map(str, taken))} on {host} ({check.why}) "
                            f"already in use by another program; choose another vllm_cluster_master_port (vLLM "
                            f"takes it and the {len(internal_ports(cluster.master_port))} ports above it) or stop "
                            "that program")
    return problems
