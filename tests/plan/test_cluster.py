"""The cluster plan on recorded GPU servers: layout from the same fit as `sizing fit --nodes`, per-node argv and
environment, start order, port checks, and every refusal at once with its field."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import sizing
from facts import parsers as p
from facts.model import HostFacts
from plan.cluster import (
    LAUNCHER,
    ClusterError,
    ClusterMember,
    NetworkFacts,
    build_cluster_plan,
    choose_interface,
    clusters,
    member_address,
    route_target,
)
from plan.service import PlanError
from plan.settings import SettingsError, load_instances, load_settings
from sizing.multinode import internal_ports
from tests.fakehosts import PROFILES_DIR
from tests.plan.test_preflight import recorded

R1 = {"model": "deepseek-ai/DeepSeek-R1", "model_source": "huggingface", "vllm_cluster": "r1"}
LLAMA = {"model": "meta-llama/Llama-3.1-70B-Instruct", "model_source": "huggingface", "vllm_cluster": "l70"}


@cache
def facts(profile: str) -> HostFacts:
    return recorded(profile)


@cache
def four_4090() -> HostFacts:
    """The recorded 4090 workstation with four cards: its own query rows and PHB links, repeated."""
    base = facts("4090-x2-ubuntu2204")
    row = base.gpus[0]
    gpus = tuple(replace(row, index=i, pci_bus_id=f"00000000:{0x21 + i * 0x20:02X}:00.0") for i in range(4))
    header = "\t" + "\t".join(f"GPU{i}" for i in range(4)) + "\tCPU Affinity\tNUMA Affinity"
    rows = [f"GPU{i}\t" + "\t".join(" X " if i == j else "PHB" for j in range(4)) + "\t0-31\t0" for i in range(4)]
    return replace(base, gpu_query=replace(base.gpu_query, gpus=gpus),
                   topology=p.parse_topology("\n".join([header, *rows])))


def network(profile: str, route: str | None = None) -> NetworkFacts:
    base = PROFILES_DIR / profile / "converged"

    def read(fact: str) -> str | None:
        path = base / f"{fact}.out"
        return path.read_text() if path.is_file() else None

    return NetworkFacts(route=p.parse_ip_route_get(route or read("ip_route") or ""),
                        addresses=p.parse_ip_addr(read("ip_addr") or ""),
                        ibstat=p.parse_ibstat(read("ibstat") or ""),
                        acs=p.parse_lspci_acs(read("pci_acs") or ""))


def member(name: str, data: dict[str, Any], host_facts: Any, net: NetworkFacts | None = None,
           instances: int = 1) -> ClusterMember:
    settings = load_settings(data)
    return ClusterMember(name, settings, host_facts, member_address(name, settings), net, instances)


def r1_pair(version: str = "0.32.0") -> list[ClusterMember]:
    a100 = facts("a100sxm-x8-ubuntu2204")
    route_b = "10.10.0.11 dev ib0 src 10.10.0.12 uid 0 \\    cache "
    return [
        member("gpu-b", {**R1, "vllm_version": version, "vllm_cluster_address": "10.10.0.12"}, a100,
               network("a100sxm-x8-ubuntu2204", route_b)),
        member("gpu-a", {**R1, "vllm_version": version, "vllm_cluster_head": True,
                         "vllm_cluster_address": "10.10.0.11"}, a100, network("a100sxm-x8-ubuntu2204")),
    ]


def test_r1_on_two_a100_nodes_takes_the_layout_sizing_fit_nodes_computes() -> None:
    plan = build_cluster_plan(r1_pair())
    a100 = facts("a100sxm-x8-ubuntu2204")
    cli = sizing.fit(sizing.FitRequest(model="deepseek-ai/DeepSeek-R1", gpu=a100.gpus[0].name, gpus=8, nodes=2))
    assert plan.fit is not None and plan.fit["fits"] and cli.fits
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (cli.tensor_parallel_size,
                                                                         cli.pipeline_parallel_size)
    assert plan.tensor_parallel_size * plan.pipeline_parallel_size == 8 * plan.nnodes  # every GPU of both nodes
    assert plan.ranks_per_node == 8
    assert plan.fit["vllm_args"] == cli.vllm_args


def test_ranks_head_first_then_followers_by_name_and_followers_start_first() -> None:
    plan = build_cluster_plan(r1_pair())
    assert [(n.rank, n.host, n.head) for n in plan.nodes] == [(0, "gpu-a", True), (1, "gpu-b", False)]
    assert plan.start_order == (("gpu-b", "vllm"), ("gpu-a", "vllm"))
    assert plan.verify_after == (("gpu-b", "vllm"),)
    head, follower = plan.nodes
    assert head.serve_args == ("--nnodes", "2", "--master-addr", "10.10.0.11", "--master-port", "29500",
                               "--node-rank", "0")
    assert follower.serve_args == ("--nnodes", "2", "--master-addr", "10.10.0.11", "--master-port", "29500",
                                   "--node-rank", "1", "--headless")


def test_each_node_pins_the_interface_that_routes_to_its_peer_and_uses_infiniband() -> None:
    plan = build_cluster_plan(r1_pair())
    for node, own in zip(plan.nodes, ("10.10.0.11", "10.10.0.12"), strict=True):
        assert node.env["NCCL_SOCKET_IFNAME"] == node.env["GLOO_SOCKET_IFNAME"] == "ib0"
        assert node.env["VLLM_HOST_IP"] == own
        assert node.env["NCCL_IB_HCA"] == "mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1"
        assert node.env["VLLM_PORT"] == str(internal_ports(29500).start)
        assert "NCCL_P2P_DISABLE" not in node.env  # NVLink: the doctor leaves NCCL alone
        assert node.interconnect is not None and not node.interconnect.disable_custom_all_reduce


def test_argv_starts_the_single_host_command_through_the_serve_launcher() -> None:
    plan = build_cluster_plan(r1_pair())
    service = ["/opt/vllm/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/srv/m"]
    argv = plan.argv("gpu-b", service, "/opt/vllm")
    assert argv[:2] == ("/opt/vllm/venv/bin/python", f"/opt/vllm/{LAUNCHER}")
    assert argv[2:4] == ("--model", "/srv/m") and argv[-1] == "--headless"


def test_ports_to_check_free_and_reachable() -> None:
    plan = build_cluster_plan(r1_pair())
    shown = {(c.host, c.shown, c.peers) for c in plan.ports}
    assert ("gpu-a", "29500", ("gpu-b",)) in shown
    assert ("gpu-a", "8000", ()) in shown
    internal = internal_ports(29500)
    assert ("gpu-b", f"{internal.start}-{internal.stop - 1}", ("gpu-a",)) in shown
    assert "29500" in plan.summary() and "gpu-b:vllm -> gpu-a:vllm" in plan.summary()


def test_versions_before_the_multinode_executor_plan_a_ray_cluster() -> None:
    plan = build_cluster_plan(r1_pair("0.10.1"))
    assert plan.executor == "ray" and plan.install_packages == ("ray[default]",)
    head, follower = plan.nodes
    assert head.ray_start == ("ray", "start", "--head", "--port=29500", "--node-ip-address", "10.10.0.11", "--block")
    assert follower.ray_start == ("ray", "start", "--address=10.10.0.11:29500", "--node-ip-address", "10.10.0.12",
                                  "--block")
    assert head.serve_args == ("--distributed-executor-backend", "ray") and follower.serve_args is None
    assert plan.start_order == (("gpu-a", "vllm-ray"), ("gpu-b", "vllm-ray"), ("gpu-a", "vllm"))
    assert any(c.why == "Ray's worker ports" for c in plan.ports)


def test_70b_bf16_on_two_4x4090_nodes_over_roce_with_p2p_off() -> None:
    net = network("4090-x2-ubuntu2204")
    plan = build_cluster_plan([
        member("ws1", {**LLAMA, "vllm_cluster_head": True, "vllm_cluster_address": "10.30.0.21"}, four_4090(),
               replace(net, route=p.parse_ip_route_get("10.30.0.22 dev enp65s0f0np0 src 10.30.0.21"))),
        member("ws2", {**LLAMA, "vllm_cluster_address": "10.30.0.22"}, four_4090(),
               replace(net, route=p.parse_ip_route_get("10.30.0.21 dev enp65s0f0np0 src 10.30.0.22"))),
    ])
    cli = sizing.fit(sizing.FitRequest(model="meta-llama/Llama-3.1-70B-Instruct", gpu="4090", gpus=4, nodes=2,
                                       p2p=False))
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (cli.tensor_parallel_size,
                                                                         cli.pipeline_parallel_size) == (4, 2)
    assert plan.fit is not None and plan.fit["fits"] and plan.fit["dtype"] == "bfloat16"
    for node in plan.nodes:
        assert node.env["NCCL_IB_HCA"] == "mlx5_0:1" and node.env["NCCL_SOCKET_IFNAME"] == "enp65s0f0np0"
        assert node.env["NCCL_P2P_DISABLE"] == "1"
        assert node.interconnect is not None and node.interconnect.args == ("--disable-custom-all-reduce",)
    assert any("RoCE" in reason for reason in plan.reasons)
    assert "--disable-custom-all-reduce" in plan.fit["vllm_args"]


def test_a_member_without_rdma_sends_every_member_over_sockets() -> None:
    a100 = facts("a100sxm-x8-ubuntu2204")
    pair = r1_pair()
    no_ib = replace(pair[0], network=replace(pair[0].network, ibstat=p.parse_ibstat("sh: 1: ibstat: not found")))
    plan = build_cluster_plan([no_ib, pair[1]])
    assert all(n.env.get("NCCL_IB_DISABLE") == "1" and "NCCL_IB_HCA" not in n.env for n in plan.nodes)
    assert a100.gpus and any("gpu-b has no active InfiniBand" in r for r in plan.reasons)


def refusals(members: list[ClusterMember]) -> dict[str, str]:
    with pytest.raises(ClusterError) as caught:
        build_cluster_plan(members)
    assert "nothing was changed" in str(caught.value)
    return dict(caught.value.problems)


def test_every_settings_mismatch_is_refused_at_once_naming_the_field() -> None:
    a100 = facts("a100sxm-x8-ubuntu2204")
    problems = refusals([
        member("gpu-a", {**R1, "vllm_version": "0.31.0", "model_revision": "main"}, a100),
        member("gpu-b", {**R1, "vllm_runtime": "conda", "vllm_served_model_name": "r1", "vllm_port": 8001}, a100,
               instances=2),
    ])
    assert "no head" in problems["vllm_cluster_head"]
    for name in ("vllm_version", "model_revision", "vllm_runtime", "vllm_served_model_name", "vllm_port"):
        assert "gpu-a" in problems[name] and "gpu-b" in problems[name], name
    assert "gpu-b declares 2 instances" in problems["vllm_instances"]


def test_several_heads_one_member_and_docker_are_refused() -> None:
    a100 = facts("a100sxm-x8-ubuntu2204")
    two_heads = refusals([member(n, {**R1, "vllm_cluster_head": True}, a100) for n in ("gpu-a", "gpu-b")])
    assert "2 heads (gpu-a, gpu-b)" in two_heads["vllm_cluster_head"]
    alone = refusals([member("gpu-a", {**R1, "vllm_cluster_head": True, "vllm_runtime": "docker"}, a100)])
    assert "one member" in alone["vllm_cluster"] and "host's network" in alone["vllm_runtime"]


def test_mixed_gpu_models_and_unequal_counts_are_refused() -> None:
    mixed = refusals([member("a", {**R1, "vllm_cluster_head": True}, facts("a100sxm-x8-ubuntu2204")),
                      member("b", R1, facts("4090-x2-ubuntu2204"))])
    assert "NVIDIA A100-SXM4-80GB" in mixed["gpus"] and "NVIDIA GeForce RTX 4090" in mixed["gpus"]
    unequal = refusals([member("a", {**LLAMA, "vllm_cluster_head": True}, four_4090()),
                        member("b", LLAMA, facts("4090-x2-ubuntu2204"))])
    assert "unequal GPU counts" in unequal["gpus"] and "a: 4, b: 2" in unequal["gpus"]


def test_a_model_too_big_for_the_cluster_is_refused_with_the_fit_reasons() -> None:
    problems = refusals([member("ws1", {**R1, "vllm_cluster_head": True}, facts("4090-x2-ubuntu2204")),
                         member("ws2", R1, facts("4090-x2-ubuntu2204"))])
    assert "does not fit on 2 nodes" in problems["model"]


def test_before_facts_the_plan_has_ranks_and_arguments_but_no_layout() -> None:
    plan = build_cluster_plan([member("b", R1, None), member("a", {**R1, "vllm_cluster_head": True}, None)])
    assert plan.fit is None and plan.tensor_parallel_size is None
    assert [n.host for n in plan.nodes] == ["a", "b"] and plan.master_addr == "a"
    assert "NCCL_SOCKET_IFNAME" not in plan.nodes[0].env


def test_cpu_cluster_spreads_tensor_parallel_across_nodes_and_refuses_pipeline() -> None:
    cpu = {"model": "Qwen/Qwen3-0.6B", "vllm_device": "cpu", "vllm_cluster": "lab", "vllm_max_model_len": 1024}
    host = HostFacts(mem_total_bytes=16 << 30, cpu_count=2)
    plan = build_cluster_plan([member("h1", {**cpu, "vllm_cluster_head": True}, host),
                               member("h2", cpu, host)])
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size, plan.ranks_per_node) == (2, 1, 1)
    piped = refusals([member("h1", {**cpu, "vllm_cluster_head": True, "vllm_pipeline_parallel_size": 2}, host),
                      member("h2", {**cpu, "vllm_pipeline_parallel_size": 2}, host)])
    assert "CPU backend" in piped["vllm_pipeline_parallel_size"]


def test_route_targets_and_the_interface_override() -> None:
    pair = r1_pair()
    assert route_target(pair, "gpu-b") == "10.10.0.11" and route_target(pair, "gpu-a") == "10.10.0.12"
    addrs = p.parse_ip_addr((PROFILES_DIR / "a100sxm-x8-ubuntu2204/converged/ip_addr.out").read_text())
    chosen = choose_interface(p.parse_ip_route_get("10.10.0.12 dev ib0 src 10.10.0.11"), addrs, "eno1", "10.10.0.12")
    assert (chosen.ifname, chosen.address) == ("eno1", "10.20.0.11")
    assert choose_interface(None, (), None, "x").ifname is None
    assert set(clusters(pair)) == {"r1"}


def test_settings_refuse_several_instances_on_a_member_and_a_head_outside_a_cluster() -> None:
    with pytest.raises(SettingsError) as caught:
        load_instances({"vllm_cluster": "r1", "vllm_instances": [{"name": "a", "port": 8001},
                                                                 {"name": "b", "port": 8002}]})
    assert "vllm_instances" in dict(caught.value.problems)
    with pytest.raises(SettingsError) as caught:
        load_settings({"vllm_cluster_head": True})
    assert "vllm_cluster" in dict(caught.value.problems)["vllm_cluster_head"]
    with pytest.raises(SettingsError) as caught:
        load_settings({"vllm_cluster_master_port": 80})
    assert "vllm_cluster_master_port" in dict(caught.value.problems)
    assert load_settings({"vllm_cluster": "r1"}).vllm_cluster_master_port == 29500


def test_the_launcher_the_plan_names_exists() -> None:
    assert (Path(__file__).resolve().parents[2] / "remote" / LAUNCHER).is_file()


def _member_plan(cluster: Any, name: str, data: dict[str, Any], host_facts: HostFacts,
                 active: set[str] | None = None) -> Any:
    from plan.host import build_host_plan

    return build_host_plan(load_instances(data), host_facts, name, active_units=active, cluster=cluster,
                           api_key="sk-plan-only-0123456789")


def test_a_member_host_plan_is_its_cluster_part_sized_for_every_node() -> None:
    pair = r1_pair()
    cluster = build_cluster_plan(pair)
    a100 = facts("a100sxm-x8-ubuntu2204")
    for m in pair:
        data = {**R1, "vllm_version": "0.32.0", "vllm_cluster_head": m.settings.vllm_cluster_head,
                "vllm_cluster_address": m.address}
        plan = _member_plan(cluster, m.name, data, a100)
        service = plan.first
        node = cluster.node(m.name)
        assert service.cluster is not None and service.cluster.rank == node.rank
        assert service.headless == (not node.head)
        assert service.argv[1].endswith(f"/{LAUNCHER}") and service.argv[-len(node.serve_args):] == node.serve_args
        # The one-host fit would refuse R1 on 8 GPUs: the member is sized for both nodes, TP 8 x PP 2.
        assert service.sizing["tensor_parallel_size"] * service.sizing["pipeline_parallel_size"] == 16
        assert {k: service.env[k] for k in node.env} == node.env
        # A follower has no API: no watchdog probes it; the head's watches the whole engine.
        assert (plan.watchdog is None) == service.headless


def test_a_cluster_port_held_by_another_program_is_refused_unless_ours_runs() -> None:
    pair = r1_pair()
    cluster = build_cluster_plan(pair)
    a100 = facts("a100sxm-x8-ubuntu2204")
    taken = internal_ports(29500).start + 3
    listening = p.parse_ss_listening(f"LISTEN 0 128 0.0.0.0:{taken} 0.0.0.0:*\n")
    busy = replace(a100, listening=listening)
    data = {**R1, "vllm_cluster_address": "10.10.0.12"}
    with pytest.raises(PlanError, match=rf"vllm_cluster_master_port: {taken} on gpu-b \(vLLM's own ports"):
        _member_plan(cluster, "gpu-b", data, busy)
    assert _member_plan(cluster, "gpu-b", data, busy, active={"vllm"}).first.headless


def test_a_ray_cluster_is_planned_but_not_deployed() -> None:
    cluster = build_cluster_plan(r1_pair("0.10.2"))
    assert cluster.executor == "ray"
    data = {**R1, "vllm_version": "0.10.2", "vllm_cluster_head": True, "vllm_cluster_address": "10.10.0.11"}
    with pytest.raises(PlanError, match="vllm_version: 0.10.2 predates vLLM's own multi-node executor"):
        _member_plan(cluster, "gpu-a", data, facts("a100sxm-x8-ubuntu2204"))


def test_an_inventory_name_that_is_no_address_is_refused_naming_the_setting() -> None:
    settings = load_settings({**R1, "vllm_cluster_head": True})
    with pytest.raises(ClusterError) as raised:
        member_address("gpu a;reboot", settings)
    assert raised.value.problems[0][0] == "vllm_cluster_address"
    assert member_address("gpu-a.example", settings) == "gpu-a.example"
