"""`python -m sizing fit --nodes N`: two-node plans, each node's launch arguments, and the CPU backend's TP."""

from __future__ import annotations

import json

import pytest

from sizing import FitRequest, SizingError, fit
from sizing.catalog import find_gpu
from sizing.cli import EXIT_FITS, main
from sizing.fit import valid_tps
from sizing.model import resolve_model
from sizing.multinode import MP_MULTINODE_SINCE, executor_for, internal_ports, node_launches

CASES = [  # (model, GPU, GPUs per node): the two clusters
    ("deepseek-ai/DeepSeek-R1", "A100-80GB", 8),
    ("meta-llama/Llama-3.1-70B-Instruct", "4090", 4),
]


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["fit", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("model", "gpu", "per_node"), CASES)
def test_two_nodes_fit_what_one_node_cannot(capsys: pytest.CaptureFixture[str], model: str, gpu: str,
                                            per_node: int) -> None:
    one = fit(FitRequest(model=model, gpu=gpu, gpus=per_node))
    assert not one.fits, "the case must need a second node"
    code, data = cli_json(capsys, "--model", model, "--gpu", gpu, "--gpus", str(per_node), "--nodes", "2",
                          "--master-addr", "10.0.0.1")
    assert code == EXIT_FITS and data["fits"] and data["outcome"] == "ok"
    spec = resolve_model(model)
    assert data["tensor_parallel_size"] == max(valid_tps(spec, per_node))  # TP within one node
    assert data["pipeline_parallel_size"] == 2  # one stage per node
    assert data["nodes"] == 2 and data["ranks_per_node"] == per_node
    usable = find_gpu(gpu).memory_gib * data["gpu_memory_utilization"]
    assert data["weights_gib"] + data["kv_cache_gib"] < usable
    assert data["weights_gib"] < one.weights_gib  # a GPU holds its TP shard of one stage's layers only
    head, follower = data["node_launches"]
    assert head["head"] and "--headless" not in head["serve_args"]
    assert follower["serve_args"][-1] == "--headless" and "10.0.0.1" in follower["serve_args"]
    assert data["reasons"][0].startswith(f"2 nodes x {per_node} GPUs: TP {data['tensor_parallel_size']}")


def test_the_table_shows_each_nodes_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--model", "llama-3.1-70b", "--gpu", "4090", "--gpus", "4", "--nodes", "2"]) == EXIT_FITS
    out = capsys.readouterr().out
    assert "nodes                      2 x 4 GPUs per node" in out
    assert "node 0 (head): vllm serve MODEL" in out and "--node-rank 0" in out
    assert "node 1: vllm serve MODEL" in out and "--node-rank 1 --headless" in out
    assert "--disable-custom-all-reduce" in out  # GeForce: no P2P


def test_an_old_version_prints_a_ray_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--model", "deepseek-r1-671b", "--gpu", "A100-80GB", "--gpus", "8", "--nodes", "2",
                 "--vllm-version", "0.10.1", "--master-addr", "10.0.0.1"]) == EXIT_FITS
    out = capsys.readouterr().out
    assert "ray start --head --port=29500 --block" in out
    assert "--distributed-executor-backend ray" in out and "ray start --address=10.0.0.1:29500" in out


def test_executor_by_version() -> None:
    assert executor_for(".".join(map(str, MP_MULTINODE_SINCE))) == "mp"
    assert executor_for("0.11.0") == "ray" and executor_for("0.32.0") == "mp"
    assert node_launches(1, "h", 1, "0.32.0")[0].serve_args == ()
    ray = node_launches(3, "10.0.0.1", 6379, "0.9.2", ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    assert [launch.serve_args is None for launch in ray] == [False, True, True]
    assert ray[2].ray_start == ("ray", "start", "--address=10.0.0.1:6379", "--node-ip-address", "10.0.0.3",
                                "--block")
    assert 29500 not in internal_ports(29500) and len(internal_ports(29500)) > 8


def test_cpu_backend_spreads_tp_over_nodes_and_sizes_one_nodes_memory() -> None:
    single = fit(FitRequest(model="Qwen/Qwen3-0.6B", device="cpu", cpu_memory_gib=16, max_model_len=1024,
                            tensor_parallel_size=2, kv_cache_memory_bytes=64 << 20))
    spread = fit(FitRequest(model="Qwen/Qwen3-0.6B", device="cpu", cpu_memory_gib=16, max_model_len=1024,
                            nodes=2, kv_cache_memory_bytes=64 << 20))
    assert (spread.tensor_parallel_size, spread.pipeline_parallel_size, spread.ranks_per_node) == (2, 1, 1)
    assert spread.vllm_args == single.vllm_args  # the same engine arguments; only the placement differs
    assert "2 nodes: TP 2 across them" in " ".join(spread.reasons)
    with pytest.raises(SizingError) as caught:
        fit(FitRequest(model="Qwen/Qwen3-0.6B", device="cpu", cpu_memory_gib=16, nodes=2, pipeline_parallel_size=2))
    assert caught.value.field == "pipeline_parallel_size"
    with pytest.raises(SizingError):
        fit(FitRequest(model="Qwen/Qwen3-0.6B", device="cpu", cpu_memory_gib=16, nodes=2, tensor_parallel_size=3))
