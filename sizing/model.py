"""Normalized model facts for the memory model, read from a config.json (catalog or local directory).

Everything vLLM's memory depends on is derived here once: layer shapes, which layers are MoE, which attend
through a sliding window, how the cache stores keys and values (MHA/GQA or MLA), and a list of weight parts
with how each one is sharded under tensor parallelism and whether quantization shrinks it.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sizing.errors import SizingError

DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "float8": 1,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}

# safetensors dtype tags -> bytes per element
_SAFETENSORS_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}  # fmt: skip


@dataclass(frozen=True)
class WeightPart:
    """One family of tensors: ``params`` elements in total across all layers it covers.

    shard: "tp" split evenly by tensor parallelism; "vocab" split by the padded vocabulary; "kv" k/v
    projections that are replicated once tp exceeds the KV head count; "replicated" on every rank.
    quant: "linear" shrinks under awq/gptq/fp8/bnb, "expert" also under mxfp4, "none" never.
    where: "layer" (spread over decoder layers), "first" (embedding, vision tower), "last" (final norm, lm_head).
    """

    name: str
    params: int
    shard: str
    quant: str
    where: str
    moe: bool = False  # belongs only to MoE layers (so pipeline stages weigh them by their MoE layer count)


@dataclass(frozen=True)
class ModelSpec:
    """What the memory model needs to know about one model, independent of how it is deployed."""

    name: str
    model_type: str
    architectures: tuple[str, ...]
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    torch_dtype: str
    intermediate_size: int  # dense MLP width (0 when every layer is MoE)
    tie_word_embeddings: bool
    layer_attention: tuple[str, ...]  # per layer: "full" | "sliding"
    sliding_window: int | None
    moe_layers: tuple[bool, ...]
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    kv_lora_rank: int = 0  # MLA: the cache holds kv_lora_rank + qk_rope_head_dim per token and layer
    qk_rope_head_dim: int = 0
    quantization: str | None = None  # quant_method as vLLM normalizes it (awq, gptq, fp8, compressed-tensors ...)
    quant_bits: float = 16.0
    quant_group_size: int = 128  # <= 0: no groups (per-channel or per-tensor scales)
    quant_scheme: str = ""  # finer kind: int (awq/gptq/wNa16), int-w8a8, fp8-w8a8, fp8-block, nf4, int8, mxfp4
    quant_zero_point: bool = False  # asymmetric: a packed zero point per group besides the scale
    quant_double_quant: bool = True  # bitsandbytes 4-bit: absmax themselves quantized to 8 bits
    quant_block: tuple[int, int] | None = None  # block-wise fp8: one fp32 scale per block
    quant_lm_head: bool = False  # GPTQ "lm_head": true quantizes the output projection too
    quant_skip: tuple[tuple[str, float], ...] = ()  # (part, fraction left unquantized): ignore lists
    quant_kernel: str | None = None  # the kernel vLLM runs it with on the target GPU (set by fit)
    weight_bytes: int | None = None  # exact checkpoint bytes when known
    parts: tuple[WeightPart, ...] = field(default=(), repr=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def has_sliding_window(self) -> bool:
        return self.sliding_window is not None and "sliding" in self.layer_attention

    @property
    def total_params(self) -> int:
        return sum(p.params for p in self.parts)

    def checkpoint_bytes_counted(self) -> float:
        """Checkpoint size as counted from the config (what ``weight_bytes`` would be), for scaling."""
        dtype_bytes = DTYPE_BYTES.get(self.torch_dtype, 2)
        stored = replace(self, quant_kernel=None)  # on disk, before a kernel repacks anything
        return sum(p.params * param_bytes(stored, p, dtype_bytes) for p in self.parts)


def param_bytes(spec: ModelSpec, part: WeightPart, dtype_bytes: float) -> float:
    """Bytes per element of ``part`` once loaded: quantized layers shrink, the rest stays ``dtype_bytes``.

    Counted from the storage formats: packed elements plus the scales (and zero points) each group, block,
    channel or tensor carries, because those are what the loader allocates.
    """
    method = spec.quantization
    quantized = part.quant != "none" or (part.name == "lm_head" and spec.quant_lm_head)
    if method is None or not quantized:
        return dtype_bytes
    if method == "mxfp4":
        # 4-bit elements plus one 8-bit shared exponent per 32; only the experts are stored this way.
        return 0.5 + 1 / 32 if part.quant == "expert" else dtype_bytes
    skipped = dict(spec.quant_skip).get(part.name, 0.0)
    return skipped * dtype_bytes + (1 - skipped) * _quantized_bytes(spec)


def _quantized_bytes(spec: ModelSpec) -> float:
    """Bytes per quantized weight element, scales and zero points included."""
    method, bits, h = spec.quantization, spec.quant_bits, spec.hidden_size
    if method == "bitsandbytes":
        if bits >= 8:
            return 1.0 + 4 / h  # LLM.int8: int8 rows and one fp32 absmax (SCB) per output row
        # nf4: two elements a byte, one absmax per 64; double quantization stores it as 8 bits + fp32 per 256
        return 0.5 + (1 / 64 + 4 / (64 * 256) if spec.quant_double_quant else 4 / 64)
    if bits >= 8 and spec.quant_scheme in ("fp8-block", "fp8-w8a8", "fp8-w8a16", "fp8", "int-w8a8", "int8"):
        if spec.quant_block:
            return 1.0 + 4 / (spec.quant_block[0] * spec.quant_block[1])  # one fp32 scale per block
        return 1.0 + 4 / h  # per-channel scales (per-tensor ones are smaller still)
    group = spec.quant_group_size if spec.quant_group_size > 0 else h  # no groups: one scale per channel
    zero = bits / 8 if spec.quant_zero_point else 0.0
    if spec.quant_kernel == "gptq_marlin" and not spec.quant_zero_point:
        zero = 0.0  # Marlin repacking drops the unused symmetric zero points
    elif method == "gptq":
        zero = bits / 8  # GPTQ checkpoints store qzeros even when symmetric
    # packed elements + an fp16 scale (and a packed zero point) per group
    return bits / 8 + (2 + zero) / group


# ----------------------------------------------------------------------------- config parsing


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal wrappers (Gemma 3, Llava, Qwen-VL ...) keep the language model under text_config."""
    text = config.get("text_config")
    if isinstance(text, Mapping) and text.get("hidden_size"):
        return text
    return config


def _need_int(cfg: Mapping[str, Any], key: str, name: str) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SizingError(
            "model", f"{name}: config.json has no positive integer {key!r} (got {value!r}); is this a decoder LLM?"
        )
    return value


def _layer_attention(cfg: Mapping[str, Any], model_type: str, layers: int) -> tuple[tuple[str, ...], int | None]:
    """Per-layer attention kind and the window, following each family's own convention."""
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or window <= 0:
        return ("full",) * layers, None
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        kinds = tuple("sliding" if "sliding" in str(t) else "full" for t in types)
        return kinds, window if "sliding" in kinds else None
    if model_type in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe") and not cfg.get("use_sliding_window", False):
        return ("full",) * layers, None
    if model_type == "gemma2":
        return tuple("sliding" if i % 2 == 0 else "full" for i in range(layers)), window
    pattern = cfg.get("sliding_window_pattern")
    if model_type.startswith("gemma3") or isinstance(pattern, int):
        pattern = pattern if isinstance(pattern, int) and pattern > 0 else 6
        return tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(layers)), window
    return ("sliding",) * layers, window  # Mistral v0.1 style: every layer windowed


_ATTENTION_PARTS = ("q_proj", "kv_proj", "o_proj", "q_a_proj", "q_b_proj", "kv_a_proj", "kv_b_proj")
# module-name fragment -> (parts, share of each part): how ignore lists name vLLM's layers
_MODULE_PARTS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("shared_expert", ("shared_experts",), 1.0),
    ("experts", ("experts",), 1.0),
    ("q_proj", ("q_proj",), 1.0),
    ("k_proj", ("kv_proj",), 0.5),
    ("v_proj", ("kv_proj",), 0.5),
    ("o_proj", ("o_proj",), 1.0),
    ("kv_b_proj", ("kv_b_proj",), 1.0),
    ("kv_a_proj", ("kv_a_proj",), 1.0),
    ("q_a_proj", ("q_a_proj",), 1.0),
    ("q_b_proj", ("q_b_proj",), 1.0),
    ("self_attn", _ATTENTION_PARTS, 1.0),
    ("attn", _ATTENTION_PARTS, 1.0),
    ("gate_proj", ("mlp",), 1 / 3),
    ("up_proj", ("mlp",), 1 / 3),
    ("down_proj", ("mlp",), 1 / 3),
    ("mlp", ("mlp", "experts", "shared_experts"), 1.0),
)


@dataclass(frozen=True)
class QuantInfo:
    """What ``quantization_config`` says about the stored weights."""

    method: str | None = None
    bits: float = 16.0
    group_size: int = 128
    scheme: str = ""
    zero_point: bool = False
    double_quant: bool = True
    block: tuple[int, int] | None = None
    lm_head: bool = False
    ignore: tuple[str, ...] = ()


def _quantization(config: Mapping[str, Any]) -> QuantInfo:
    """Read quantization_config the way vLLM's quantization configs do (``from_config`` of each method)."""
    qc = config.get("quantization_config") or _text_config(config).get("quantization_config")
    if not isinstance(qc, Mapping):
        return QuantInfo()
    method = str(qc.get("quant_method", "")).lower().replace("compressed_tensors", "compressed-tensors") or None
    if method == "bitsandbytes":
        eight = bool(qc.get("load_in_8bit"))
        kind = "int8" if eight else str(qc.get("bnb_4bit_quant_type") or "nf4")
        double = bool(qc.get("bnb_4bit_use_double_quant", False))
        return QuantInfo(method, 8.0 if eight else 4.0, 0, kind, double_quant=double,
                         ignore=_names(qc.get("llm_int8_skip_modules")))  # fmt: skip
    if method == "fp8":
        block = qc.get("weight_block_size")
        pair = (int(block[0]), int(block[1])) if isinstance(block, list) and len(block) == 2 else None
        ignore = _names(qc.get("ignored_layers")) + _names(qc.get("modules_to_not_convert"))
        return QuantInfo(method, 8.0, 0, "fp8-block" if pair else "fp8", block=pair, ignore=ignore)
    if method == "mxfp4":
        return QuantInfo(method, 4.0, 32, "mxfp4", ignore=_names(qc.get("modules_to_not_convert")))
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    bits = qc.get("bits") or qc.get("w_bit") or 4
    group = qc.get("group_size") or qc.get("q_group_size") or 128
    if method == "awq":
        zero = bool(qc.get("zero_point", True))
        return QuantInfo(method, float(bits), int(group), "int", zero, ignore=_names(qc.get("modules_to_not_convert")))
    zero = method == "gptq" and not qc.get("sym", True)
    return QuantInfo(method, float(bits), int(group), "int", zero, lm_head=bool(qc.get("lm_head", False)))


def _compressed_tensors(qc: Mapping[str, Any]) -> QuantInfo:
    """compressed-tensors: the scheme of the config group that targets Linear layers (bits, strategy, activations)."""
    bits, group, scheme, zero, block = 8.0, 0, "int-w8a8", False, None
    for group_cfg in (qc.get("config_groups") or {}).values():
        weights = group_cfg.get("weights") if isinstance(group_cfg, Mapping) else None
        if not isinstance(weights, Mapping):
            continue
        acts = group_cfg.get("input_activations")
        bits = float(weights.get("num_bits", bits))
        kind = str(weights.get("type", "int"))
        strategy = str(weights.get("strategy", "tensor"))
        group = int(weights.get("group_size") or 0) if strategy == "group" else 0
        zero = not weights.get("symmetric", True)
        structure = weights.get("block_structure")
        if strategy == "block" and isinstance(structure, list) and len(structure) == 2:
            block = (int(structure[0]), int(structure[1]))
        if kind == "float" and bits == 8:
            scheme = "fp8-w8a8" if isinstance(acts, Mapping) else "fp8-w8a16"
        elif bits == 8 and isinstance(acts, Mapping):
            scheme = "int-w8a8"
        else:
            scheme = f"w{int(bits)}a16"
        break
    return QuantInfo("compressed-tensors", bits, group, scheme, zero, block=block, ignore=_names(qc.get("ignore")))


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) else ()


def _quant_skip(ignore: tuple[str, ...], layers: int) -> tuple[tuple[str, float], ...]:
    """Share of each weight part an ignore list keeps in 16 bits (a module of one layer counts 1/layers)."""
    shares: dict[str, float] = {}
    for entry in ignore:
        name = entry.removeprefix("re:")
        indices = set(re.findall(r"layers\.(\d+)\.", name))
        span = len(indices) / layers if indices else 1.0
        leaf = name.rsplit(".", 1)[-1].rstrip("$")
        if leaf == "gate" or "router" in name:
            continue  # MoE routers are never quantized anyway
        for fragment, parts, share in _MODULE_PARTS:
            if fragment in name:
                for part in parts:
                    shares[part] = min(1.0, shares.get(part, 0.0) + share * span)
                break
    return tuple(sorted(shares.items()))


def model_from_config(config: dict, name: str, weight_bytes: int | None = None) -> ModelSpec:
    """Normalize a config.json dict into a ModelSpec; raises SizingError when a needed key is missing."""
    if not isinstance(config, Mapping):
        raise SizingError("model", f"{name}: config must be a mapping (the parsed config.json)")
    cfg = _text_config(config)
    model_type = str(cfg.get("model_type") or config.get("model_type") or "")
    hidden = _need_int(cfg, "hidden_size", name)
    layers = _need_int(cfg, "num_hidden_layers", name)
    heads = _need_int(cfg, "num_attention_heads", name)
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    vocab = _need_int(cfg, "vocab_size", name)
    max_pos = cfg.get("max_position_embeddings") or 2048
    dtype = str(cfg.get("torch_dtype") or config.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    tie = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    attention, window = _layer_attention(cfg, model_type, layers)

    experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts") or 0)
    topk = int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or 0)
    inter = int(cfg.get("intermediate_size") or 0)
    moe_inter = int(cfg.get("moe_intermediate_size") or (inter if experts else 0))
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    if cfg.get("n_shared_experts"):
        shared = int(cfg["n_shared_experts"]) * moe_inter
    if experts:
        first_dense = int(cfg.get("first_k_dense_replace") or 0)
        step = int(cfg.get("decoder_sparse_step") or cfg.get("moe_layer_freq") or 1)
        dense_only = set(cfg.get("mlp_only_layers") or [])
        moe_layers = tuple(i >= first_dense and i not in dense_only and (i + 1) % step == 0 for i in range(layers))
    else:
        moe_layers = (False,) * layers
    kv_lora = int(cfg.get("kv_lora_rank") or 0)
    rope_dim = int(cfg.get("qk_rope_head_dim") or 0)
    quant = _quantization(config)

    spec = ModelSpec(
        name=name,
        model_type=model_type,
        architectures=tuple(config.get("architectures") or cfg.get("architectures") or ()),
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        vocab_size=vocab,
        max_position_embeddings=int(max_pos),
        torch_dtype=dtype,
        intermediate_size=inter,
        tie_word_embeddings=tie,
        layer_attention=attention,
        sliding_window=window,
        moe_layers=moe_layers,
        num_experts=experts,
        experts_per_token=topk,
        moe_intermediate_size=moe_inter,
        shared_expert_intermediate_size=shared,
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=rope_dim,
        quantization=quant.method,
        quant_bits=quant.bits,
        quant_group_size=quant.group_size,
        quant_scheme=quant.scheme,
        quant_zero_point=quant.zero_point,
        quant_double_quant=quant.double_quant,
        quant_block=quant.block,
        quant_lm_head=quant.lm_head,
        quant_skip=_quant_skip(quant.ignore, layers),
        weight_bytes=weight_bytes,
    )
    return _with_parts(spec, config, cfg)


def _with_parts(spec: ModelSpec, config: Mapping[str, Any], cfg: Mapping[str, Any]) -> ModelSpec:
    """Count the weights: every tensor family with its sharding, following vLLM's layer classes."""
    h, layers = spec.hidden_size, spec.num_layers
    n_moe = sum(spec.moe_layers)
    n_dense = layers - n_moe
    parts: list[WeightPart] = [WeightPart("embed_tokens", spec.vocab_size * h, "vocab", "none", "first")]
    if not spec.tie_word_embeddings:
        parts.append(WeightPart("lm_head", spec.vocab_size * h, "vocab", "none", "last"))
    parts.append(WeightPart("final_norm", h, "replicated", "none", "last"))
    bias = 1 if (cfg.get("attention_bias") or spec.model_type.startswith("qwen2")) else 0

    if spec.is_mla:
        heads = spec.num_attention_heads
        nope = int(cfg.get("qk_nope_head_dim") or 0)
        v_dim = int(cfg.get("v_head_dim") or nope)
        q_lora = int(cfg.get("q_lora_rank") or 0)
        qk = nope + spec.qk_rope_head_dim
        if q_lora:
            parts.append(WeightPart("q_a_proj", layers * (h * q_lora + q_lora), "replicated", "linear", "layer"))
            parts.append(WeightPart("q_b_proj", layers * q_lora * heads * qk, "tp", "linear", "layer"))
        else:
            parts.append(WeightPart("q_proj", layers * h * heads * qk, "tp", "linear", "layer"))
        kv_a = h * (spec.kv_lora_rank + spec.qk_rope_head_dim) + spec.kv_lora_rank
        parts.append(WeightPart("kv_a_proj", layers * kv_a, "replicated", "linear", "layer"))
        parts.append(
            WeightPart("kv_b_proj", layers * spec.kv_lora_rank * heads * (nope + v_dim), "tp", "linear", "layer")
        )
        parts.append(WeightPart("o_proj", layers * heads * v_dim * h, "tp", "linear", "layer"))
    else:
        q = spec.num_attention_heads * spec.head_dim
        kv = spec.num_kv_heads * spec.head_dim
        parts.append(WeightPart("q_proj", layers * (h * q + bias * q), "tp", "linear", "layer"))
        parts.append(WeightPart("kv_proj", layers * 2 * (h * kv + bias * kv), "kv", "linear", "layer"))
        parts.append(
            WeightPart("o_proj", layers * (q * h + (h if cfg.get("attention_bias") else 0)), "tp", "linear", "layer")
        )
        if spec.model_type.startswith(("qwen3", "gemma3")):
            parts.append(WeightPart("qk_norm", layers * 2 * spec.head_dim, "replicated", "none", "layer"))
        if spec.model_type == "gpt_oss":
            parts.append(WeightPart("sinks", layers * spec.num_attention_heads, "tp", "none", "layer"))
    norms = 4 if spec.model_type.startswith(("gemma2", "gemma3")) else 2
    parts.append(WeightPart("layer_norms", layers * norms * h, "replicated", "none", "layer"))

    if n_dense and spec.intermediate_size:
        parts.append(WeightPart("mlp", n_dense * 3 * h * spec.intermediate_size, "tp", "linear", "layer"))
    if n_moe:
        e, mi = spec.num_experts, spec.moe_intermediate_size
        router_bias = e if spec.model_type == "gpt_oss" else 0
        expert_bias = (2 * mi + h) * e if spec.model_type == "gpt_oss" else 0
        parts.append(WeightPart("experts", n_moe * (e * 3 * h * mi + expert_bias), "tp", "expert", "layer", True))
        parts.append(WeightPart("router", n_moe * (h * e + router_bias), "replicated", "none", "layer", True))
        if spec.shared_expert_intermediate_size:
            si = spec.shared_expert_intermediate_size
            gate = h if spec.model_type.startswith("qwen2_moe") else 0
            parts.append(WeightPart("shared_experts", n_moe * (3 * h * si + gate), "tp", "linear", "layer", True))

    vision = config.get("vision_config")
    if isinstance(vision, Mapping) and vision.get("hidden_size"):
        vh = int(vision["hidden_size"])
        vi = int(vision.get("intermediate_size") or 4 * vh)
        vl = int(vision.get("num_hidden_layers") or 0)
        patch = int(vision.get("patch_size") or 14)
        image = int(vision.get("image_size") or 224)
        tower = vl * (4 * vh * vh + 2 * vh * vi + 9 * vh) + 3 * patch * patch * vh + (image // patch) ** 2 * vh
        parts.append(WeightPart("vision_tower", tower + vh * h, "tp", "none", "first"))
    return _replace(spec, parts=tuple(parts))


def _replace(spec: ModelSpec, **changes: Any) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)


# ----------------------------------------------------------------------------- local directories


def safetensors_bytes(path: Path) -> int:
    """Exact tensor bytes of one .safetensors file, from its 8-byte length + JSON header (no data read)."""
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise SizingError("model", f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * 1024 * 1024:
            raise SizingError("model", f"{path}: header length {length} is not plausible; is the file corrupt?")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise SizingError("model", f"{path}: unreadable safetensors header ({exc})") from exc
    total = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        total += end - start
    return total


def model_from_dir(path: str | Path) -> ModelSpec:
    """A local model directory: config.json plus the exact checkpoint bytes (index metadata or headers)."""
    root = Path(path)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise SizingError("model", f"{root} has no config.json; point --model at a Hugging Face style model directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SizingError("model", f"{config_path} is not valid JSON ({exc})") from exc
    weight_bytes: int | None = None
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_bytes = int(json.loads(index.read_text(encoding="utf-8"))["metadata"]["total_size"])
        except (ValueError, KeyError, TypeError):
            weight_bytes = None
    if weight_bytes is None:
        files = sorted(root.glob("*.safetensors"))
        if files:
            weight_bytes = sum(safetensors_bytes(f) for f in files)
    return model_from_config(config, name=str(root), weight_bytes=weight_bytes)


def resolve_model(name_or_path: str) -> ModelSpec:
    """A local model directory if one exists at that path, else the catalog entry (id, alias, ModelScope id)."""
    if Path(name_or_path).expanduser().is_dir():
        return model_from_dir(Path(name_or_path).expanduser())
    from sizing.catalog import CatalogError, find_model

    try:
        entry = find_model(name_or_path)
    except CatalogError as exc:
        raise SizingError("model", str(exc)) from exc
    return model_from_config(entry.config, name=entry.id, weight_bytes=entry.weight_bytes)
