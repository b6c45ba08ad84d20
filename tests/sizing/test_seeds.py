"""The capacity model against figures published in the seed posts (vLLM startup logs and user reports).

Seeds 000 and 004 are vLLM 0.8.5 profiling logs. The one fitted constant of the model
(V0's sampler bytes per logit, EngineTraits.sampler_bytes_per_logit) was read off these two logs, so they
are held to 1%: a change anywhere else in the accounting (weights, sharding, KV layout, blocks) shows up here.
Seed 001 was not used for calibration and is held to the project's 10% accuracy goal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sizing import FitRequest, fit

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def seed_text(prefix: str) -> str:
    matches = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not matches:
        pytest.skip(f"seed {prefix} not found under {SEEDS} (the shared checkout is absent)")
    return matches[0].read_text(encoding="utf-8")


def test_seed_000_qwen3_8b_on_four_modded_2080ti() -> None:
    text = seed_text("000")
    assert "21.48GiB" in text and "14.49GiB" in text  # the figures this test reproduces
    result = fit(
        FitRequest(
            model="deepseek-ai/DeepSeek-R1-0528-Qwen3-8B",
            gpu="2080Ti",
            gpu_memory_gib=21.48,
            gpus=4,
            tensor_parallel_size=4,
            dtype="float16",
            gpu_memory_utilization=0.93,
            max_model_len=65536,
            max_num_batched_tokens=8192,
            enforce_eager=True,
            vllm_version="0.8.5",
        )
    )
    assert result.outcome == "ok"
    assert result.weights_gib == pytest.approx(3.85, rel=0.015)
    assert result.activation_gib == pytest.approx(1.45, rel=0.02)
    assert result.kv_cache_gib == pytest.approx(14.49, rel=0.01)
    assert result.max_concurrency == pytest.approx(6.44, rel=0.01)
    assert result.kv_bytes_per_token == 36 * 1024  # 36 layers x 2 x (8 / 4) heads x 128 x 2 bytes


def test_seed_004_qwen3_30b_a3b_moe() -> None:
    text = seed_text("004")
    assert "21.66GiB" in text and "14.25GiB" in text and "5.73x" in text
    result = fit(
        FitRequest(
            model="Qwen/Qwen3-30B-A3B",
            gpu="2080Ti",
            gpu_memory_gib=21.66,
            gpus=4,
            tensor_parallel_size=4,
            dtype="half",
            gpu_memory_utilization=0.93,
            max_model_len=32768,
            max_num_batched_tokens=4096,
            block_size=32,
            vllm_version="0.8.5",
            p2p=False,
        )
    )
    assert result.outcome == "ok"
    assert result.weights_gib == pytest.approx(14.25, rel=0.01)
    assert result.kv_cache_gib == pytest.approx(4.30, rel=0.01)
    assert result.max_concurrency == pytest.approx(5.73, rel=0.01)
    assert "--disable-custom-all-reduce" in result.vllm_args


def test_seed_001_qwq_32b_fp16_on_two_4090_does_not_load() -> None:
    seed_text("001")
    result = fit(
        FitRequest(
            model="Qwen/QwQ-32B",
            gpu="4090",
            gpus=2,
            tensor_parallel_size=2,
            dtype="float16",
            gpu_memory_utilization=0.95,
            max_model_len=4096,
            vllm_version="0.8.5",
        )
    )
    assert result.outcome == "oom" and not result.fits
    assert result.weights_gib > 23.64  # half of 65.5 GB does not even fit one card
    assert any("AWQ" in s for s in result.suggestions), result.suggestions
    assert any("needs 4 x" in s for s in result.suggestions), result.suggestions


def _r1_70b_awq(max_model_len: int):
    # benchmark_throughput runs vLLM's LLM class (16384 batched tokens by default in 0.8.x, V1 on a 4090).
    return fit(
        FitRequest(
            model="Valdemardi/DeepSeek-R1-Distill-Llama-70B-AWQ",
            gpu="4090",
            gpus=2,
            tensor_parallel_size=2,
            dtype="float16",
            gpu_memory_utilization=0.95,
            max_model_len=max_model_len,
            max_num_batched_tokens=16384,
            vllm_version="0.8.5",
        )
    )


def test_seed_001_r1_70b_awq_fits_5200_but_not_16384() -> None:
    text = seed_text("001")
    assert "10256" in text and "--max-model-len 5200" in text
    short, long = _r1_70b_awq(5200), _r1_70b_awq(16384)
    assert short.fits and short.outcome == "ok"
    assert long.outcome == "kv_too_small" and not long.fits
    # The post's startup error kept reporting room for about 10256 tokens.
    assert long.kv_cache_tokens == pytest.approx(10256, rel=0.10)
    assert long.max_model_len_fit == pytest.approx(10256, rel=0.10)
    assert any(s.startswith(f"--max-model-len {long.max_model_len_fit}") for s in long.suggestions)


def test_v1_log_qwen3_8b_on_an_a5000_with_cuda_graph_profiling() -> None:
    """A public vLLM 0.21.0 startup log (LMCache issue #3430: Qwen3-8B, RTX A5000, offline LLM class).

    Logged: CUDA graphs PIECEWISE=51 (largest=512), FULL=35 (largest=256), estimated 0.52 GiB; available KV cache
    memory 6.37 GiB; GPU KV cache size 46,368 tokens; 2.83x concurrency at 16,384 tokens. This log also fixed the
    V1 sampler's bytes per logit, so it is held to 3%.
    """
    result = fit(
        FitRequest(
            model="Qwen/Qwen3-8B",
            gpu="A5000",
            gpu_memory_utilization=0.9764,
            max_model_len=16384,
            max_num_batched_tokens=8192,  # the LLM class default below 70 GiB
            vllm_version="0.21.0",
        )
    )
    assert result.fits and not result.enforce_eager
    assert result.cudagraph_gib == pytest.approx(0.52, rel=0.10)
    assert result.kv_cache_gib == pytest.approx(6.37, rel=0.03)
    assert result.kv_cache_tokens == pytest.approx(46368, rel=0.03)
    assert result.max_concurrency == pytest.approx(2.83, rel=0.03)
