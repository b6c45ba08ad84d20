"""Quantization as vLLM reads it: the method and format from ``quantization_config``, bytes per weight counted
from the storage format, the kernel vLLM picks on the target GPU, and the refusals vLLM would raise.

Every ``quantization_config`` below is the block a well-known hub checkpoint publishes (named in a comment),
grafted onto the catalog's Qwen3-8B shapes so the expected bytes can be counted by hand:
Qwen3-8B has 6.95e9 parameters in linear layers (q/k/v/o and the MLP of 36 layers) and 1.24e9 elsewhere
(embedding, lm_head, norms), so a method that shrinks linear layers to ``b`` bytes per element gives
``linear x b + rest x 2`` bytes.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sizing import FitRequest, SizingError, fit, model_from_config
from sizing.catalog import find_model
from sizing.model import ModelSpec

# --- quantization_config blocks as published -------------------------------------------------------------

# Qwen/Qwen2.5-7B-Instruct-AWQ (AutoAWQ GEMM, 4-bit, groups of 128, zero points)
AWQ = {"bits": 4, "group_size": 128, "modules_to_not_convert": None, "quant_method": "awq", "version": "gemm",
       "zero_point": True}  # fmt: skip
# Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4 (symmetric, no act-order)
GPTQ = {"bits": 4, "damp_percent": 0.01, "desc_act": False, "group_size": 128, "modules_in_block_to_quantize": None,
        "quant_method": "gptq", "sym": True, "true_sequential": True}  # fmt: skip
# Qwen/Qwen3-8B-FP8 (block-wise e4m3, one fp32 scale per 128x128 block, dynamic activations)
FP8_BLOCK = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
# RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16 (llm-compressor, pack-quantized)
CT_W4A16 = {
    "config_groups": {"group_0": {
        "input_activations": None, "output_activations": None, "targets": ["Linear"],
        "weights": {"actorder": None, "block_structure": None, "dynamic": False, "group_size": 128, "num_bits": 4,
                    "observer": "minmax", "observer_kwargs": {}, "strategy": "group", "symmetric": True,
                    "type": "int"}}},
    "format": "pack-quantized", "ignore": ["lm_head"], "kv_cache_scheme": None,
    "quant_method": "compressed-tensors", "quantization_status": "compressed",
}  # fmt: skip
# RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8-dynamic (per-channel fp8 weights, per-token dynamic fp8 activations)
CT_FP8 = {
    "config_groups": {"group_0": {
        "input_activations": {"dynamic": True, "num_bits": 8, "observer": None, "strategy": "token",
                              "symmetric": True, "type": "float"},
        "output_activations": None, "targets": ["Linear"],
        "weights": {"dynamic": False, "group_size": None, "num_bits": 8, "observer": "minmax", "strategy": "channel",
                    "symmetric": True, "type": "float"}}},
    "format": "float-quantized", "ignore": ["lm_head"], "quant_method": "compressed-tensors",
    "quantization_status": "compressed",
}  # fmt: skip
# RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8 (int8 channel weights, int8 per-token activations)
CT_W8A8 = copy.deepcopy(CT_FP8)
CT_W8A8["config_groups"]["group_0"]["weights"]["type"] = "int"
CT_W8A8["config_groups"]["group_0"]["input_activations"]["type"] = "int"
CT_W8A8["format"] = "int-quantized"
# unsloth/Qwen3-8B-bnb-4bit (nf4, double quantization, bf16 compute)
BNB4 = {"_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
        "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False, "llm_int8_skip_modules": None,
        "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
        "quant_method": "bitsandbytes"}  # fmt: skip
# a transformers load_in_8bit=True save (LLM.int8: int8 rows + one fp32 absmax per row)
BNB8 = {"_load_in_4bit": False, "_load_in_8bit": True, "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None,
        "load_in_4bit": False, "load_in_8bit": True, "quant_method": "bitsandbytes"}  # fmt: skip


def qwen3_8b(quantization_config: dict[str, Any] | None = None, **changes: Any) -> ModelSpec:
    config = copy.deepcopy(find_model("Qwen/Qwen3-8B").config)
    config.update(changes)
    if quantization_config is not None:
        config["quantization_config"] = copy.deepcopy(quantization_config)
    return model_from_config(config, "test/Qwen3-8B-quantized")


def split(spec: ModelSpec) -> tuple[int, int]:
    """(linear parameters, the rest): what quantization shrinks and what it leaves in 16 bits."""
    linear = sum(p.params for p in spec.parts if p.quant != "none")
    return linear, spec.total_params - linear


def test_qwen3_8b_split_used_below() -> None:
    linear, rest = split(qwen3_8b())
    assert linear / 1e9 == pytest.approx(6.95, abs=0.01) and rest / 1e9 == pytest.approx(1.24, abs=0.01)


@pytest.mark.parametrize(
    ("qconfig", "method", "per_element"),
    [
        # 4 bits packed in int32 + per group of 128: an fp16 scale (2 B) and a 4-bit zero point (0.5 B)
        (AWQ, "awq", 0.5 + 2.5 / 128),
        # GPTQ stores qzeros even when symmetric: same 4 + (16 + 4)/128 bits as AWQ on disk
        (GPTQ, "gptq", 0.5 + 2.5 / 128),
        # e4m3 byte + one fp32 scale per 128 x 128 block
        (FP8_BLOCK, "fp8", 1 + 4 / 16384),
        # symmetric int4 groups: no zero points, a 16-bit scale per 128
        (CT_W4A16, "compressed-tensors", 0.5 + 2 / 128),
        # fp8 byte + a scale per output channel (counted as 4 B per row of hidden_size 4096 inputs)
        (CT_FP8, "compressed-tensors", 1 + 4 / 4096),
        (CT_W8A8, "compressed-tensors", 1 + 4 / 4096),
        # nf4: half a byte + absmax per 64 stored as 8 bits, with an fp32 second-level scale per 256 blocks
        (BNB4, "bitsandbytes", 0.5 + 1 / 64 + 4 / (64 * 256)),
        # LLM.int8: a byte + an fp32 absmax per row
        (BNB8, "bitsandbytes", 1 + 4 / 4096),
    ],
)
def test_bytes_per_weight_from_the_storage_format(qconfig: dict, method: str, per_element: float) -> None:
    spec = qwen3_8b(qconfig)
    linear, rest = split(spec)
    assert spec.quantization == method
    assert spec.checkpoint_bytes_counted() == pytest.approx(linear * per_element + rest * 2, rel=1e-6)


def test_compressed_tensors_schemes_are_told_apart() -> None:
    assert qwen3_8b(CT_W4A16).quant_scheme == "w4a16" and qwen3_8b(CT_W4A16).quant_group_size == 128
    assert qwen3_8b(CT_FP8).quant_scheme == "fp8-w8a8" and qwen3_8b(CT_FP8).quant_group_size == 0
    assert qwen3_8b(CT_W8A8).quant_scheme == "int-w8a8"
    snake = dict(CT_W4A16, quant_method="compressed_tensors")  # older llm-compressor spelling; vLLM normalizes it
    assert qwen3_8b(snake).quantization == "compressed-tensors"


def test_ignore_lists_keep_those_modules_in_16_bits() -> None:
    """An ignore list entry keeps its modules at 2 bytes: all attention projections here (~1.74e9 of 6.95e9)."""
    plain = qwen3_8b(CT_W4A16)
    ignoring = qwen3_8b(dict(CT_W4A16, ignore=["lm_head", "re:.*self_attn.*"]))
    attention = sum(p.params for p in plain.parts if p.name in ("q_proj", "kv_proj", "o_proj"))
    per = 0.5 + 2 / 128
    assert ignoring.checkpoint_bytes_counted() - plain.checkpoint_bytes_counted() == pytest.approx(
        attention * (2 - per), rel=1e-6
    )
    # One layer's down_proj left unquantized (unsloth's dynamic 4-bit style): 1/36 of a third of the MLP.
    one = qwen3_8b(dict(BNB4, llm_int8_skip_modules=["lm_head", "model.layers.0.mlp.down_proj"]))
    assert dict(one.quant_skip)["mlp"] == pytest.approx(1 / 3 / 36)


def test_mxfp4_quantizes_only_the_experts() -> None:
    """openai/gpt-oss-20b: experts in MXFP4 (4 bits + an 8-bit exponent per 32), attention/router/embeddings bf16."""
    spec = model_from_config(find_model("openai/gpt-oss-20b").config, "openai/gpt-oss-20b")
    experts = next(p for p in spec.parts if p.name == "experts")
    rest = spec.total_params - experts.params
    assert spec.checkpoint_bytes_counted() == pytest.approx(experts.params * (0.5 + 1 / 32) + rest * 2, rel=1e-6)


# --- the kernel vLLM picks and the capability it needs ----------------------------------------------------


def test_awq_and_gptq_take_their_marlin_kernels_on_ampere_and_later() -> None:
    awq = fit(FitRequest(model=qwen3_8b(AWQ, torch_dtype="float16"), gpu="A10G"))
    assert awq.quantization == "awq" and awq.quantization_kernel == "awq_marlin"
    assert any("awq_marlin" in r for r in awq.reasons)
    gptq = fit(FitRequest(model=qwen3_8b(GPTQ, torch_dtype="float16"), gpu="L4"))
    assert gptq.quantization_kernel == "gptq_marlin"
    # gptq_marlin drops the unused symmetric zero points when it repacks: 0.5 + 2/128 instead of 0.5 + 2.5/128.
    plain = fit(FitRequest(model=qwen3_8b(GPTQ, torch_dtype="float16"), gpu="L4", quantization="gptq"))
    assert plain.quantization_kernel == "gptq" and plain.weights_gib > gptq.weights_gib


def test_turing_runs_plain_awq_and_refuses_marlin_with_the_reason() -> None:
    awq = fit(FitRequest(model=qwen3_8b(AWQ, torch_dtype="float16"), gpu="T4"))
    assert awq.quantization_kernel == "awq"  # AWQ's own GEMM kernel runs from 7.5
    with pytest.raises(SizingError) as info:
        fit(FitRequest(model=qwen3_8b(AWQ, torch_dtype="float16"), gpu="T4", quantization="awq_marlin"))
    assert info.value.field == "quantization" and "8.0" in str(info.value) and "7.5" in str(info.value)
    with pytest.raises(SizingError, match=r"7\.5.*V100.*7\.0"):
        fit(FitRequest(model=qwen3_8b(AWQ, torch_dtype="float16"), gpu="V100-PCIE-16GB"))


def test_fp8_w8a8_is_native_from_8_9_and_weight_only_marlin_on_ampere() -> None:
    ada = fit(FitRequest(model=qwen3_8b(CT_FP8), gpu="L4"))
    assert not any("Marlin" in r for r in ada.reasons)
    ampere = fit(FitRequest(model=qwen3_8b(CT_FP8), gpu="A10G"))
    assert any("weight-only Marlin" in r and "8.9" in r for r in ampere.reasons)
    with pytest.raises(SizingError, match="8.0"):
        fit(FitRequest(model=qwen3_8b(FP8_BLOCK), gpu="T4", dtype="float16"))
    # int8 W8A8 runs on Turing's int8 tensor cores (CUTLASS scaled_mm needs 7.5).
    assert fit(FitRequest(model=qwen3_8b(CT_W8A8), gpu="T4", dtype="float16")).weights_gib > 0


# --- --quantization against the checkpoint -----------------------------------------------------------------


def test_a_contradicting_method_is_refused_naming_both_as_vllm_does() -> None:
    with pytest.raises(SizingError) as info:
        fit(FitRequest(model="Qwen/Qwen2.5-7B-Instruct-AWQ", gpu="4090", quantization="gptq"))
    text = str(info.value)
    assert "Quantization method specified in the model config (awq)" in text
    assert "the `quantization` argument (gptq)" in text and info.value.field == "quantization"
    with pytest.raises(SizingError, match=r"\(fp8\).*\(bitsandbytes\)"):
        fit(FitRequest(model="Qwen/Qwen3-8B-FP8", gpu="L40S", quantization="bitsandbytes"))
    # The same method, or its Marlin kernel, is accepted.
    assert fit(FitRequest(model="Qwen/Qwen2.5-7B-Instruct-AWQ", gpu="4090", quantization="awq_marlin")).fits
    assert fit(FitRequest(model="Qwen/Qwen2.5-7B-Instruct-AWQ", gpu="4090", quantization="awq")).fits


def test_in_flight_bitsandbytes_and_fp8_on_an_unquantized_checkpoint() -> None:
    """vLLM quantizes an unquantized checkpoint while loading it with --quantization bitsandbytes (nf4) or fp8."""
    bf16 = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", max_model_len=8192))
    bnb = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", max_model_len=8192, quantization="bitsandbytes"))
    fp8 = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", max_model_len=8192, quantization="fp8"))
    linear, rest = split(qwen3_8b())
    assert bnb.quantization == "bitsandbytes" and "--quantization" in bnb.vllm_args
    # weights_gib of one GPU: linear x (0.5 + 1/64 + 4/16384) + rest x 2, scaled like the exact bf16 bytes
    ratio = (linear * (0.5 + 1 / 64 + 4 / 16384) + rest * 2) / (linear * 2 + rest * 2)
    assert bnb.weights_gib == pytest.approx(bf16.weights_gib * ratio, rel=0.01)
    assert bnb.kv_cache_tokens > fp8.kv_cache_tokens > bf16.kv_cache_tokens
    # bitsandbytes runs from compute capability 7.0 (V100); fp8 needs 8.0 even as weight-only Marlin.
    assert fit(FitRequest(model="Qwen/Qwen3-8B", gpu="V100-PCIE-16GB", quantization="bitsandbytes")).fits
    with pytest.raises(SizingError, match="fp8 weights need 8.0"):
        fit(FitRequest(model="Qwen/Qwen3-8B", gpu="T4", quantization="fp8"))


def test_an_unquantized_checkpoint_with_another_method_names_the_catalog_variant() -> None:
    with pytest.raises(SizingError) as info:
        fit(FitRequest(model="Qwen/Qwen2.5-7B-Instruct", gpu="4090", quantization="awq"))
    text = str(info.value)
    assert "Qwen/Qwen2.5-7B-Instruct-AWQ" in text and "fp8 or bitsandbytes" in text
    with pytest.raises(SizingError, match="Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"):
        fit(FitRequest(model="Qwen/Qwen2.5-7B-Instruct", gpu="4090", quantization="gptq_marlin"))
