"""ModelSpec from real configs: parameter counts, per-rank sharding, KV layout, local directories."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sizing import SizingError, model_from_config, model_from_dir, resolve_model
from sizing.catalog import find_model, model_ids
from sizing.memory import Deployment, kv_bytes_per_token_layer, pp_layer_split, weights_on_rank

GIB = 1 << 30


def _deployment(tp: int = 1, pp: int = 1, dtype: str = "bfloat16") -> Deployment:
    return Deployment(
        tp=tp,
        pp=pp,
        dtype=dtype,
        kv_cache_dtype="auto",
        gpu_memory_bytes=80 * GIB,
        gpu_memory_utilization=0.9,
        max_num_batched_tokens=2048,
        max_num_seqs=256,
        enforce_eager=True,
        custom_all_reduce=False,
    )


def published() -> list[str]:
    return [m for m in model_ids() if find_model(m).weight_bytes]


@pytest.mark.parametrize("model_id", published())
def test_counting_reproduces_checkpoint_bytes(model_id: str) -> None:
    """Counted from the config alone (no exact bytes given), the weights match the checkpoint's total_size."""
    entry = find_model(model_id)
    counted = model_from_config(entry.config, entry.id).checkpoint_bytes_counted()
    assert counted == pytest.approx(entry.weight_bytes, rel=0.002)


@pytest.mark.parametrize(
    ("model_id", "billions"),
    [
        ("openai/gpt-oss-20b", 20.9),
        ("openai/gpt-oss-120b", 116.8),
        ("deepseek-ai/DeepSeek-R1", 671.0),
        ("google/gemma-3-27b-it", 27.4),
        ("deepseek-ai/DeepSeek-V2-Lite-Chat", 15.7),
    ],
)
def test_parameter_counts_of_families_without_published_bytes(model_id: str, billions: float) -> None:
    """Model cards' parameter counts (MoE, MLA, sliding-window and multimodal families)."""
    assert resolve_model(model_id).total_params / 1e9 == pytest.approx(billions, rel=0.02)


def test_quantized_checkpoints_shrink_linear_layers_only() -> None:
    awq = resolve_model("Valdemardi/DeepSeek-R1-Distill-Llama-70B-AWQ")
    base = resolve_model("deepseek-ai/DeepSeek-R1-Distill-Llama-70B")
    ratio = awq.checkpoint_bytes_counted() / base.checkpoint_bytes_counted()
    # 68.5B linear weights at ~4.16 bits plus 2.1B fp16 embedding/lm_head: about 28% of the fp16 size.
    assert 0.27 < ratio < 0.30
    gpt_oss = resolve_model("openai/gpt-oss-20b")
    assert gpt_oss.checkpoint_bytes_counted() / 1e9 == pytest.approx(13.8, rel=0.03)  # published repo size


def test_tensor_parallel_shards_and_replicates() -> None:
    spec = resolve_model("Qwen/Qwen3-8B")
    one = weights_on_rank(spec, _deployment(tp=1), 0)
    four = weights_on_rank(spec, _deployment(tp=4), 0)
    assert one == spec.weight_bytes
    # Everything but norms is split; vocab padding to 64 and replicated norms keep it a hair above 1/4.
    assert one / 4 < four < one / 4 * 1.001
    # Past 8 KV heads, k/v projections are replicated instead of split.
    sixteen = weights_on_rank(spec, _deployment(tp=16), 0)
    assert sixteen > one / 16 * 1.01


def test_pipeline_stages_split_layers_like_vllm() -> None:
    assert [len(r) for r in pp_layer_split(61, 2)] == [31, 30]
    assert [len(r) for r in pp_layer_split(10, 4)] == [2, 3, 3, 2]
    spec = resolve_model("Qwen/Qwen3-8B")
    first = weights_on_rank(spec, _deployment(pp=2), 0)
    last = weights_on_rank(spec, _deployment(pp=2), 1)
    assert first + last == pytest.approx(spec.weight_bytes, rel=1e-6)


def test_kv_layouts() -> None:
    qwen = resolve_model("Qwen/Qwen3-8B")
    assert kv_bytes_per_token_layer(qwen, 1, 2) * qwen.num_layers == 144 * 1024
    mla = resolve_model("deepseek-ai/DeepSeek-R1")
    assert mla.is_mla
    assert kv_bytes_per_token_layer(mla, 8, 2) == (512 + 64) * 2  # one latent per layer, not split by TP
    gemma = resolve_model("google/gemma-3-27b-it")
    assert gemma.layer_attention.count("full") == 10 and gemma.sliding_window == 1024
    gpt_oss = resolve_model("gpt-oss-20b")
    assert gpt_oss.layer_attention.count("sliding") == 12 and gpt_oss.sliding_window == 128
    assert gpt_oss.is_moe and gpt_oss.quantization == "mxfp4"
    plain = resolve_model("Qwen/Qwen2.5-7B-Instruct")
    assert not plain.has_sliding_window  # sliding_window present but use_sliding_window is false


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    sizes = {"BF16": 2, "F32": 4, "I32": 4}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        nbytes = count * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return offset


TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 2048,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def test_local_dir_reads_exact_bytes_from_safetensors_headers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    a = _write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"embed": ("F32", [2048, 128])})
    b = _write_safetensors(
        tmp_path / "model-00002-of-00002.safetensors", {"w": ("BF16", [256, 128]), "n": ("F32", [128])}
    )
    spec = model_from_dir(tmp_path)
    assert spec.weight_bytes == a + b
    assert spec.num_kv_heads == 2 and spec.head_dim == 32
    assert resolve_model(str(tmp_path)).weight_bytes == a + b


def test_local_dir_prefers_the_index_total(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 123456}}))
    assert model_from_dir(tmp_path).weight_bytes == 123456


def test_bad_inputs_name_the_model_field(tmp_path: Path) -> None:
    with pytest.raises(SizingError) as info:
        model_from_dir(tmp_path)
    assert info.value.field == "model" and "config.json" in str(info.value)
    with pytest.raises(SizingError, match="hidden_size"):
        model_from_config({"model_type": "llama"}, "broken")
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    (tmp_path / "bad.safetensors").write_bytes(b"\x01\x00")
    with pytest.raises(SizingError, match="too short"):
        model_from_dir(tmp_path)
    with pytest.raises(SizingError) as unknown:
        resolve_model("no-such-model-xyz")
    assert unknown.value.field == "model"
