"""Several instances per host: GPU sets and fractions, start order, ports, and the gateway's upstreams.

Planned against recorded GPU servers (the H100 reports 81003 of 81559 MiB free,
each 4090 about 24150 of 24564 MiB).
"""

from __future__ import annotations

import pytest

from plan.gateway import build_gateway_plan
from plan.service import PlanError
from plan.settings import SettingsError, load_instances
from tests.deploy.fakeserver import host_plan_for

QWEN = {"model": "Qwen/Qwen3-8B", "vllm_max_model_len": 8192}


def _two_on_gpu0(a: float, b: float) -> dict:
    return {**QWEN, "vllm_instances": [
        {"name": "a", "port": 8001, "gpus": [0], "gpu_memory_utilization": a},
        {"name": "b", "port": 8002, "gpus": [0], "gpu_memory_utilization": b},
    ]}


def test_two_instances_share_one_gpu_and_start_in_order() -> None:
    plan = host_plan_for("h100-x1-ubuntu2404", _two_on_gpu0(0.45, 0.45))
    a, b = plan.instances
    assert (a.unit, b.unit) == ("vllm-a", "vllm-b")
    assert (a.port, b.port) == (8001, 8002)
    assert a.argv[a.argv.index("--gpu-memory-utilization") + 1] == "0.45"
    assert a.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert (a.after, b.after) == ((), ("vllm-a",)), "the second waits until the first holds its memory"
    assert len(plan.models) == 1, "one download for both"
    # Each instance is sized for its share: 0.45 of 79.6 GiB leaves much less KV cache than 0.9 would.
    alone = host_plan_for("h100-x1-ubuntu2404", {**QWEN, "vllm_gpu_memory_utilization": 0.9}).instances[0]
    assert a.sizing["kv_cache_gib"] < alone.sizing["kv_cache_gib"] / 2


def test_over_committed_gpu_is_refused_with_the_numbers() -> None:
    with pytest.raises(PlanError, match=r"GPU 0 is over-committed: a 0.6 \+ b 0.5 = 1.10") as error:
        host_plan_for("h100-x1-ubuntu2404", _two_on_gpu0(0.6, 0.5))
    assert "lower the fractions" in str(error.value)


def test_fractions_are_checked_against_free_memory_not_total() -> None:
    # 0.47 + 0.47 fits an idle 4090, not the busy one (recorded: 12 GiB held by another process).
    data = {**_two_on_gpu0(0.47, 0.47), "model": "Qwen/Qwen3-0.6B"}
    host_plan_for("4090-x2-ubuntu2204", data)
    with pytest.raises(PlanError, match="over-committed"):
        host_plan_for("4090-x2-ubuntu2204", data, state="busy")


def test_sharing_a_gpu_needs_explicit_fractions() -> None:
    data = {**QWEN, "vllm_instances": [{"name": "a", "port": 8001}, {"name": "b", "port": 8002}]}
    with pytest.raises(PlanError, match=r"vllm_instances \(a\)\.gpu_memory_utilization: instances a, b share GPU 0"):
        host_plan_for("h100-x1-ubuntu2404", data)


def test_whole_gpus_per_instance_need_no_fractions() -> None:
    data = {**QWEN, "vllm_instances": [{"name": "a", "port": 8001, "gpus": [0]},
                                       {"name": "b", "port": 8002, "gpus": [1]}]}
    a, b = host_plan_for("4090-x2-ubuntu2204", data).instances
    assert (a.env["CUDA_VISIBLE_DEVICES"], b.env["CUDA_VISIBLE_DEVICES"]) == ("0", "1")
    assert a.sizing["tensor_parallel_size"] == 1 and not b.after


def test_unknown_gpu_index_is_refused() -> None:
    data = {**QWEN, "vllm_instances": [{"name": "a", "port": 8001, "gpus": [2]}]}
    with pytest.raises(PlanError, match=r"vllm_instances \(a\)\.gpus: GPU 2 does not exist on this host; "
                                        r"nvidia-smi lists 0, 1"):
        host_plan_for("4090-x2-ubuntu2204", data)


def test_two_instances_on_one_port_are_refused_before_facts() -> None:
    data = {**QWEN, "vllm_instances": [{"name": "a", "port": 8001}, {"name": "b", "port": 8001}]}
    with pytest.raises(SettingsError, match=r"vllm_instances\[1\] \(b\)\.port: 8001 is already the port of "
                                            r"instance 'a'"):
        load_instances(data)


def test_gateway_port_clashing_with_an_instance_is_refused() -> None:
    data = {**QWEN, "vllm_gateway": True, "vllm_gateway_port": 8001,
            "vllm_instances": [{"name": "a", "port": 8001}]}
    with pytest.raises(SettingsError, match="vllm_gateway_port: 8001 is also the port of instance 'a'"):
        load_instances(data)


def test_instances_may_serve_different_models() -> None:
    data = {**QWEN, "vllm_instances": [
        {"name": "chat", "port": 8001, "gpus": [0]},
        {"name": "small", "port": 8002, "gpus": [1], "model": "Qwen/Qwen3-0.6B"},
    ]}
    plan = host_plan_for("4090-x2-ubuntu2204", data)
    assert [i.served_name for i in plan.instances] == ["Qwen3-8B", "Qwen3-0.6B"]
    assert [m.host_dir for m in plan.models] == ["/srv/models/Qwen3-8B", "/srv/models/Qwen3-0.6B"]


def test_the_key_never_enters_the_plan_output() -> None:
    plan = host_plan_for("h100-x1-ubuntu2404", QWEN)
    assert plan.api_key and plan.api_key not in plan.summary() + plan.to_json() + repr(plan)
    assert plan.api_key not in " ".join(plan.first.argv)
    assert plan.first.key_env_file == "/etc/vllm/api-key.env"


def test_gateway_groups_instances_by_model_across_hosts() -> None:
    gw_data = {"model": "tiny", "vllm_gateway": True, "vllm_instances": [
        {"name": "a", "port": 8001}, {"name": "b", "port": 8002}]}
    other = {"model": "tiny", "vllm_backend_tls": False, "vllm_instances": [
        {"name": "c", "port": 8001}, {"name": "d", "port": 8003, "served_model_name": "tiny-chat"}]}
    members = [(name, load_instances(data)[0].settings, load_instances(data))
               for name, data in (("gw", gw_data), ("10.0.0.12", other))]
    plan = build_gateway_plan(members[0][1], "gw", members)
    by_model = {u.model: [(b.address, b.port) for b in u.backends] for u in plan.upstreams}
    assert by_model == {"tiny": [("127.0.0.1", 8001), ("127.0.0.1", 8002), ("10.0.0.12", 8001)],
                        "tiny-chat": [("10.0.0.12", 8003)]}
    assert plan.routes_by_model and "libnginx-mod-http-js" in plan.apt_packages
    single = build_gateway_plan(members[0][1], "gw", members[:1])
    assert not single.routes_by_model and "route.js" not in single.live_files


def test_gateway_port_taken_by_another_program_is_refused() -> None:
    from plan.gateway import GatewayPlan
    from plan.host import build_host_plan
    from plan.service import PlanError as Refused
    from tests.deploy.fakeserver import facts_for

    data = {**QWEN, "vllm_gateway": True, "vllm_gateway_port": 22}
    instances = load_instances(data)
    facts = facts_for("h100-x1-ubuntu2404")
    gateway = GatewayPlan("vllm", "gw", 22, True, "gw", True, (), None, None)
    with pytest.raises(Refused, match="vllm_gateway_port: 22 is already in use on gw by a program other than nginx"):
        build_host_plan(instances, facts, "gw", gateway=gateway, api_key="sk-test-0123456789abcdef")
    plan = build_host_plan(instances, facts, "gw", active_units={"nginx"}, gateway=gateway,
                           api_key="sk-test-0123456789abcdef")
    assert plan.first.listen_host == "127.0.0.1"
