"""The chooser and the validation of fixed settings: what is picked, what is refused, and why."""

from __future__ import annotations

import pytest

from sizing import FitRequest, SizingError, fit


def test_turing_gets_float16_with_a_reason() -> None:
    result = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="2080Ti", gpu_memory_gib=22, gpus=2))
    assert result.dtype == "float16"
    assert any("bfloat16" in r and "7.5" in r for r in result.reasons)
    assert result.vllm_args[result.vllm_args.index("--dtype") + 1] == "float16"


def test_bf16_asked_on_turing_is_refused_with_the_fix() -> None:
    with pytest.raises(SizingError) as info:
        fit(FitRequest(model="Qwen/Qwen3-8B", gpu="T4", dtype="bfloat16"))
    assert info.value.field == "dtype" and "--dtype float16" in str(info.value)


def test_ampere_keeps_bfloat16() -> None:
    assert fit(FitRequest(model="Qwen/Qwen3-8B", gpu="A100-80GB")).dtype == "bfloat16"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tensor_parallel_size": 3, "gpus": 4}, "tensor_parallel_size"),
        ({"tensor_parallel_size": 4, "gpus": 2}, "tensor_parallel_size"),
        ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "gpus": 2}, "gpus"),
        ({"max_model_len": 10**6}, "max_model_len"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 0}, "gpu_memory_utilization"),
        ({"dtype": "fp64"}, "dtype"),
        ({"kv_cache_dtype": "int3"}, "kv_cache_dtype"),
        ({"gpus": 0}, "gpus"),
        ({"gpu": "GTX 9999"}, "gpu"),
        ({"gpu": None}, "gpu"),
        ({"quantization": "awq"}, "quantization"),
        ({"vllm_version": "latest"}, "vllm_version"),
    ],
)
def test_bad_input_names_the_field(changes: dict, field: str) -> None:
    request = FitRequest(model="Qwen/Qwen3-8B", gpu="4090", gpus=4)
    for key, value in changes.items():
        setattr(request, key, value)
    with pytest.raises(SizingError) as info:
        fit(request)
    assert info.value.field == field, str(info.value)


def test_tp_error_lists_valid_sizes() -> None:
    with pytest.raises(SizingError, match=r"valid sizes: 1, 2, 4, 8"):
        fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", gpus=4, tensor_parallel_size=3))


def test_awq_tp_must_keep_quantization_groups_whole() -> None:
    # Llama-70B's 28672-wide MLP split 16 ways is 1792 = 14 groups of 128: fine; 64 heads x 128 / 16 too.
    assert fit(FitRequest(model="deepseek-r1-70b-awq", gpu="H100", gpus=16, tensor_parallel_size=16)).fits
    # Qwen2.5-14B's 13824-wide MLP split 4 ways is 3456 = 27 groups of 128; split 8 ways, 13.5 groups.
    assert fit(FitRequest(model="Qwen/Qwen2.5-14B-Instruct-AWQ", gpu="4090", gpus=4, tensor_parallel_size=4)).fits
    with pytest.raises(SizingError, match="quantization groups"):
        fit(FitRequest(model="Qwen/Qwen2.5-14B-Instruct-AWQ", gpu="4090", gpus=8, tensor_parallel_size=8))


def test_smallest_tp_that_fits_is_chosen_and_all_gpus_on_request() -> None:
    small = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="A100-80GB", gpus=8))
    assert small.tensor_parallel_size == 1 and small.fits
    wide = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="A100-80GB", gpus=8, use_all_gpus=True))
    assert wide.tensor_parallel_size == 8 and wide.kv_cache_tokens > small.kv_cache_tokens
    # TP 2 loads a 72B model but leaves less than the 32K target context; TP 4 is the smallest that holds it.
    big = fit(FitRequest(model="Qwen/Qwen2.5-72B-Instruct", gpu="A100-80GB", gpus=8))
    assert big.tensor_parallel_size == 4 and big.fits
    two = fit(FitRequest(model="Qwen/Qwen2.5-72B-Instruct", gpu="A100-80GB", gpus=8, tensor_parallel_size=2))
    assert two.outcome != "oom" and two.max_model_len_fit < 32768


def test_chosen_context_leaves_room_for_concurrent_requests() -> None:
    result = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090"))
    assert result.fits and result.max_concurrency >= 4
    assert result.max_model_len <= result.max_model_len_fit
    assert result.max_model_len <= 40960


def test_two_nodes_use_pipeline_parallelism_across_them() -> None:
    result = fit(FitRequest(model="deepseek-ai/DeepSeek-R1", gpu="H100", gpus=8, nodes=2))
    assert (result.tensor_parallel_size, result.pipeline_parallel_size) == (8, 2)
    assert "--pipeline-parallel-size" in result.vllm_args and result.fits


def test_no_p2p_disables_custom_all_reduce_and_a_host_fact_overrides() -> None:
    consumer = fit(FitRequest(model="Qwen/Qwen3-14B", gpu="4090", gpus=2, tensor_parallel_size=2))
    assert "--disable-custom-all-reduce" in consumer.vllm_args
    with_p2p = fit(FitRequest(model="Qwen/Qwen3-14B", gpu="4090", gpus=2, tensor_parallel_size=2, p2p=True))
    assert "--disable-custom-all-reduce" not in with_p2p.vllm_args
    nvlink = fit(FitRequest(model="Qwen/Qwen3-14B", gpu="H100", gpus=2, tensor_parallel_size=2))
    assert "--disable-custom-all-reduce" not in nvlink.vllm_args


def test_kv_too_small_reports_the_largest_context_that_fits() -> None:
    result = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", max_model_len=40960, gpu_memory_utilization=0.9))
    assert result.outcome == "kv_too_small" and not result.fits
    assert 0 < result.max_model_len_fit < 40960
    assert f"--max-model-len {result.max_model_len_fit} or less fits on this layout" in result.suggestions
    assert any("fp8" in s for s in result.suggestions)  # Ada has an fp8 KV cache
    ok = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", max_model_len=result.max_model_len_fit,
                        gpu_memory_utilization=0.9))  # fmt: skip
    assert ok.fits


def test_fp8_kv_cache_doubles_tokens() -> None:
    auto = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="H100", max_model_len=32768))
    fp8 = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="H100", max_model_len=32768, kv_cache_dtype="fp8"))
    assert fp8.kv_cache_tokens == pytest.approx(2 * auto.kv_cache_tokens, rel=0.01)
    assert "--kv-cache-dtype" in fp8.vllm_args


def test_online_fp8_quantization_halves_weights() -> None:
    bf16 = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="L40S"))
    fp8 = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="L40S", quantization="fp8"))
    assert fp8.weights_gib < bf16.weights_gib * 0.6


def test_sliding_window_layers_hold_only_their_window() -> None:
    """gpt-oss alternates 128-token windows with full attention: half the layers barely grow with context."""
    result = fit(FitRequest(model="gpt-oss-20b", gpu="H100", max_model_len=131072))
    old = fit(FitRequest(model="gpt-oss-20b", gpu="H100", max_model_len=131072, vllm_version="0.9.2"))
    assert result.fits
    assert result.max_concurrency > 1.8 * result.kv_cache_tokens / 131072  # ~2x what full attention would allow
    assert old.max_concurrency < result.max_concurrency


def test_old_version_has_no_cuda_graph_reservation() -> None:
    new = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="A100-80GB", max_model_len=8192))
    old = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="A100-80GB", max_model_len=8192, vllm_version="0.8.5"))
    assert new.cudagraph_gib > 0 and old.cudagraph_gib == 0
    assert old.gpu_memory_utilization == 0.9 and new.gpu_memory_utilization == 0.92


def test_generated_args_never_carry_a_flag_the_version_rejects() -> None:
    result = fit(FitRequest(model="Qwen/Qwen3-8B", device="cpu", cpu_memory_gib=64, vllm_version="0.10.0"))
    assert "--kv-cache-memory-bytes" not in result.vllm_args  # added in 0.11


def test_cpu_backend() -> None:
    result = fit(FitRequest(model="Qwen/Qwen3-0.6B", device="cpu", cpu_memory_gib=24, max_model_len=2048))
    assert result.fits and result.dtype == "float32"
    assert "--enforce-eager" in result.vllm_args and "--kv-cache-memory-bytes" in result.vllm_args
    kv = int(result.vllm_args[result.vllm_args.index("--kv-cache-memory-bytes") + 1])
    assert kv > 0 and result.max_concurrency >= 1
    too_big = fit(FitRequest(model="Qwen/Qwen3-32B", device="cpu", cpu_memory_gib=24))
    assert too_big.outcome == "oom"
    with pytest.raises(SizingError) as info:
        fit(FitRequest(model="Qwen/Qwen3-0.6B", device="cpu"))
    assert info.value.field == "cpu_memory_gib"
    with pytest.raises(SizingError) as info:
        fit(FitRequest(model="Qwen/Qwen3-8B", device="cpu", cpu_memory_gib=24, tensor_parallel_size=3))
    assert info.value.field == "tensor_parallel_size"


def test_result_dict_has_the_contract_keys() -> None:
    data = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090")).to_dict()
    for key in ("outcome", "fits", "tensor_parallel_size", "pipeline_parallel_size", "dtype",
                "gpu_memory_utilization", "max_model_len", "weights_gib", "kv_cache_gib", "kv_cache_tokens",
                "max_concurrency", "max_model_len_fit", "vllm_args", "reasons", "suggestions"):  # fmt: skip
        assert key in data


def _catalog_ids() -> list[str]:
    from sizing.catalog import model_ids

    return model_ids()


@pytest.mark.parametrize("model_id", _catalog_ids())
def test_every_catalog_model_is_sized_consistently(model_id: str) -> None:
    """Each catalog model gets a verdict on 8 x H100 whose numbers agree with one another."""
    result = fit(FitRequest(model=model_id, gpu="H100", gpus=8))
    assert result.tensor_parallel_size * result.pipeline_parallel_size <= 8
    if result.fits:
        assert result.kv_cache_tokens > 0 and result.max_concurrency >= 1
        assert result.max_model_len <= result.max_model_len_fit
    else:
        assert result.suggestions or result.outcome == "oom"
    assert result.weights_gib > 0 and result.reasons


def test_old_versions_warn_when_graphs_do_not_fit_the_unrequested_memory() -> None:
    tight = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", gpu_memory_utilization=0.99, vllm_version="0.8.5"))
    assert any("--enforce-eager" in s for s in tight.suggestions), tight.suggestions
    roomy = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", gpu_memory_utilization=0.9, vllm_version="0.8.5"))
    assert not any("CUDA graphs need" in s for s in roomy.suggestions)
