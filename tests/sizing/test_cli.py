"""``python -m sizing`` as a user runs it: exit codes 0 / 3 / 2, the JSON contract, readable output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JSON_KEYS = {
    "outcome", "fits", "tensor_parallel_size", "pipeline_parallel_size", "dtype", "gpu_memory_utilization",
    "max_model_len", "weights_gib", "kv_cache_gib", "kv_cache_tokens", "max_concurrency", "max_model_len_fit",
    "vllm_args", "reasons",
}  # fmt: skip


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sizing", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_fits_exit_0_with_json() -> None:
    proc = run("fit", "--model", "qwen3-8b", "--gpu", "4090", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert JSON_KEYS <= set(data) and data["fits"] is True and data["outcome"] == "ok"
    assert "--max-model-len" in data["vllm_args"]


def test_does_not_fit_exit_3_and_says_why() -> None:
    proc = run("fit", "--model", "Qwen/QwQ-32B", "--gpu", "4090", "--gpus", "2", "--tensor-parallel-size", "2",
               "--dtype", "float16", "--gpu-memory-utilization", "0.95", "--max-model-len", "4096")  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "DOES NOT FIT" in proc.stdout and "weights" in proc.stdout and "ways out" in proc.stdout


def test_kv_too_small_json_exit_3() -> None:
    proc = run("fit", "--model", "qwen3-8b", "--gpu", "4090", "--max-model-len", "40960",
               "--gpu-memory-utilization", "0.9", "--json")  # fmt: skip
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["outcome"] == "kv_too_small" and 0 < data["max_model_len_fit"] < 40960


def test_bad_input_exit_2_names_the_option() -> None:
    proc = run("fit", "--model", "qwen3-8b", "--gpu", "4090", "--gpus", "4", "--tensor-parallel-size", "3")
    assert proc.returncode == 2 and "--tensor-parallel-size" in proc.stderr
    proc = run("fit", "--model", "qwen3-8b", "--gpu", "T4", "--dtype", "bfloat16")
    assert proc.returncode == 2 and "--dtype" in proc.stderr and "float16" in proc.stderr
    proc = run("fit", "--model", "qwen3-8b", "--gpu", "4090", "--gpu-memory-utilization", "abc")
    assert proc.returncode == 2 and "--gpu-memory-utilization" in proc.stderr
    proc = run("fit", "--gpu", "4090")
    assert proc.returncode == 2 and "--model" in proc.stderr


def test_catalog_listings() -> None:
    gpus = run("gpus")
    assert gpus.returncode == 0 and "RTX 4090" in gpus.stdout
    models = run("models")
    assert models.returncode == 0 and "Qwen/Qwen3-8B" in models.stdout


def test_post_profile_oom_is_named_and_the_way_out_fits() -> None:
    """vLLM's default (graphs on) at 0.95 on one 4090: the capture after the KV cache dies; 0.9 fits."""
    common = ("fit", "--model", "Qwen/Qwen2.5-32B-Instruct-AWQ", "--gpu", "4090", "--max-model-len", "8192",
              "--vllm-version", "0.15.0", "--no-enforce-eager")
    proc = run(*common, "--gpu-memory-utilization", "0.95")
    assert proc.returncode == 3, proc.stderr
    assert "capturing CUDA graphs, after the KV cache is allocated" in proc.stdout
    data = json.loads(run(*common, "--gpu-memory-utilization", "0.95", "--json").stdout)
    assert data["failure"] == "cuda_graph_capture"
    lowered = run(*common, "--gpu-memory-utilization", "0.9")
    assert lowered.returncode == 0, lowered.stdout
    busy = run(*common, "--gpu-memory-utilization", "0.9", "--gpu-memory-used-gib", "3")
    assert busy.returncode == 3 and "DOES NOT FIT (out of memory at start-up" in busy.stdout
    few = run(*common, "--gpu-memory-utilization", "0.95", "--cudagraph-capture-sizes", "1,2,4", "--json")
    assert json.loads(few.stdout)["cudagraph_capture_sizes"] == [1, 2, 4]
    bad = run(*common, "--cudagraph-capture-sizes", "1,x")
    assert bad.returncode == 2 and "--cudagraph-capture-sizes" in bad.stderr
