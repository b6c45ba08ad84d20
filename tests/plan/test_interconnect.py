"""The interconnect doctor on recorded topologies and ACS states, and its decisions in the single-host plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facts import parsers as p
from facts.model import HostFacts
from plan.interconnect import CUSTOM_ALL_REDUCE_SIZES, diagnose, host_path_verdict, path_verdict
from tests.fakehosts import PROFILES_DIR

A100 = PROFILES_DIR / "a100sxm-x8-ubuntu2204" / "converged"
RTX4090 = PROFILES_DIR / "4090-x2-ubuntu2204" / "converged"


def topology(base) -> p.Topology:
    return p.parse_topology((base / "topology.txt").read_text())


def acs(base) -> p.PciAcs:
    return p.parse_lspci_acs((base / "pci_acs.out").read_text())


def pcie_matrix(link: str, n: int = 4) -> p.Topology:
    """An n-GPU `nvidia-smi topo -m` with one link kind between every pair."""
    header = "\t" + "\t".join(f"GPU{i}" for i in range(n)) + "\tCPU Affinity\tNUMA Affinity"
    rows = [f"GPU{i}\t" + "\t".join(" X " if i == j else link for j in range(n)) + "\t0-31\t0" for i in range(n)]
    return p.parse_topology("\n".join([header, *rows]))


def test_nvlink_box_keeps_custom_all_reduce_and_nccl_p2p_even_with_acs_on() -> None:
    path = path_verdict(topology(A100), "NVIDIA A100-SXM4-80GB", acs(A100))
    assert path.p2p and path.nvlink and not path.nccl_unsafe
    assert "ACS on 4 PCIe bridges" in path.reason
    plan = diagnose(path, 8)
    assert not plan.disable_custom_all_reduce and plan.env == {} and plan.args == ()
    assert plan.reasons and plan.reasons[0].startswith("custom all-reduce on")


def test_4090_with_acs_turns_both_off_and_says_why() -> None:
    path = path_verdict(topology(RTX4090), "NVIDIA GeForce RTX 4090", acs(RTX4090))
    assert path.p2p is False and path.nccl_unsafe
    plan = diagnose(path, 2)
    assert plan.args == ("--disable-custom-all-reduce",)
    assert plan.env == {"NCCL_P2P_DISABLE": "1"}
    assert any("does not enable PCIe peer-to-peer" in r for r in plan.reasons)


def test_acs_redirect_alone_makes_datacenter_pcie_p2p_unsafe() -> None:
    bridges = acs(RTX4090)
    switch = pcie_matrix("PXB", 2)
    assert path_verdict(switch, "NVIDIA L40S", None).p2p is True  # behind a switch, no ACS: P2P works
    path = path_verdict(switch, "NVIDIA L40S", bridges)
    assert path.p2p is False and path.nccl_unsafe and "00:01.1, 00:03.1" in path.reason
    assert diagnose(path, 2).env == {"NCCL_P2P_DISABLE": "1"}


def test_datacenter_cards_through_the_cpu_need_no_nccl_override() -> None:
    path = path_verdict(pcie_matrix("SYS", 2), "NVIDIA L40S", None)
    assert path.p2p is False and not path.nccl_unsafe
    plan = diagnose(path, 2)
    assert plan.disable_custom_all_reduce and plan.env == {}


def test_more_than_two_pcie_gpus_lose_custom_all_reduce_as_vllm_decides() -> None:
    path = path_verdict(pcie_matrix("PIX", 4), "NVIDIA L40S", None)
    assert path.p2p is True
    assert not diagnose(path, 2).disable_custom_all_reduce
    four = diagnose(path, 4)
    assert four.disable_custom_all_reduce and "two GPUs without NVLink" in four.reasons[0]


@pytest.mark.parametrize("tp", [3, 5, 7])
def test_unsupported_group_sizes_turn_custom_all_reduce_off(tp: int) -> None:
    assert tp not in CUSTOM_ALL_REDUCE_SIZES
    nvlink = path_verdict(pcie_matrix("NV12", 8), "NVIDIA A100-SXM4-80GB", None)
    plan = diagnose(nvlink, tp)
    assert plan.disable_custom_all_reduce and f"not {tp}" in plan.reasons[0]


def test_one_gpu_or_the_cpu_backend_gets_nothing() -> None:
    path = path_verdict(topology(RTX4090), "NVIDIA GeForce RTX 4090", acs(RTX4090))
    assert diagnose(path, 1) == replace(diagnose(path, 1), reasons=(), env={})
    assert diagnose(path, 2, device="cpu").args == ()
    assert path_verdict(p.Topology(status="missing"), None).p2p is None


def test_host_facts_route_through_the_doctor() -> None:
    facts = HostFacts(topology=topology(RTX4090),
                        gpu_query=p.parse_gpu_query((RTX4090 / "gpus.txt").read_text()))
    assert host_path_verdict(facts).p2p is False
    assert host_path_verdict(facts, acs(RTX4090)).nccl_unsafe


def test_the_service_plan_carries_the_doctors_flag_env_and_reason() -> None:
    from plan.service import build_plan
    from plan.settings import load_settings
    from tests.plan.test_preflight import recorded

    settings = load_settings({"model": "Qwen/Qwen3-8B", "vllm_tensor_parallel_size": 2})
    rtx = build_plan(settings, recorded("4090-x2-ubuntu2204"), "ws")
    assert "--disable-custom-all-reduce" in rtx.argv and rtx.env["NCCL_P2P_DISABLE"] == "1"
    assert "does not enable PCIe peer-to-peer" in rtx.summary()
    nvlink = build_plan(settings, recorded("a100sxm-x8-ubuntu2204"), "dgx")
    assert "--disable-custom-all-reduce" not in nvlink.argv and "NCCL_P2P_DISABLE" not in nvlink.env
    assert "custom all-reduce on: NVLink" in nvlink.summary()
