"""Choose (or check) vLLM settings for a model on given GPUs, and explain the verdict with numbers.

Rules the chooser follows when a setting is left open (``None``):
- tensor parallel size: the smallest valid TP (it must divide the attention heads, divide or be divided by the
  KV heads, divide the padded vocabulary, and keep quantization groups whole) whose KV cache holds the target
  context (see below) at least once; ``use_all_gpus`` takes the largest valid TP instead (more KV cache, more
  throughput). TP stays within one node; several nodes use pipeline parallelism across them, and within a
  node PP is used only when no valid TP can fit the model.
- dtype: the checkpoint's dtype, except bfloat16 on GPUs below compute capability 8.0 (Turing, Volta), which
  vLLM refuses: float16 there. float32 checkpoints are served in 16 bits. The CPU backend defaults to float32.
- max_model_len: the largest context up to the model's limit that leaves room for ``MIN_CONCURRENCY``
  requests of that length, trying the model limit then powers of two; the target context for choosing TP is
  ``min(model limit, 32768)``.
- enforce_eager: on when the version reserves CUDA graph memory before the KV cache and the graphs would take
  more than a quarter of it.
- after the KV cache: where the version captures CUDA graphs outside its budget (before 0.21) and they would not
  fit total - total x utilization - CUDA context - other processes, an open utilization is lowered to leave them
  room, else an open enforce_eager is turned on; fixed settings that would die there are reported with the ways
  out (a lower utilization, fewer capture sizes, --enforce-eager), each checked.
- quantization: the checkpoint's method; awq/gptq run their Marlin kernels on compute capability 8.0+, as vLLM
  picks them; --quantization may only name the checkpoint's method (or its Marlin kernel), or fp8/bitsandbytes
  to quantize an unquantized checkpoint while loading.
- --disable-custom-all-reduce when TP > 1 and the GPUs have neither P2P nor NVLink (a host fact overrides; the
  deploy's verdict comes from plan/interconnect.py, which also decides NCCL_P2P_DISABLE).
- several nodes (``nodes``): TP within a node and PP across nodes on GPUs; TP across nodes on the CPU backend,
  where PP across nodes crashes the first completion. The host memory given for the CPU backend is one node's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sizing.errors import SizingError
from sizing.memory import (
    CUDA_CONTEXT,
    GIB,
    Deployment,
    ReplicaMemory,
    capture_plan,
    pad_vocab,
    replica_memory,
)
from sizing.model import ModelSpec, resolve_model
from sizing.versions import (
    PINNED_VLLM_VERSION,
    EngineTraits,
    default_batching,
    engine_traits,
    filter_args_for_version,
    parse_version,
)

DTYPES = {"auto": "auto", "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "float32": "float32",
          "float": "float32"}  # fmt: skip
KV_CACHE_DTYPES = {"auto", "fp8", "fp8_e4m3", "fp8_e5m2", "float16", "bfloat16"}
QUANTIZATIONS = {"awq", "awq_marlin", "gptq", "gptq_marlin", "marlin", "fp8", "bitsandbytes", "mxfp4",
                 "compressed-tensors"}  # fmt: skip
MIN_CONCURRENCY = 4
TARGET_CONTEXT = 32768
TP_CHOICES = (1, 2, 4, 8, 16)
CPU_RUNTIME_BYTES = int(1.5 * GIB)  # Python, torch and vLLM's own buffers on the CPU backend (measured ~1.35 GiB)
POST_PROFILE_MARGIN = 128 * (1 << 20)  # fragmentation slack when choosing a lower utilization for graph capture


@dataclass
class FitRequest:
    """What to size. Every optional setting left None is chosen; a given one is evaluated exactly."""

    model: str | ModelSpec
    gpu: str | None = None
    gpus: int = 1
    gpu_memory_gib: float | None = None
    nodes: int = 1
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    dtype: str | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    enforce_eager: bool | None = None
    vllm_version: str | None = None
    p2p: bool | None = None
    device: str = "cuda"
    cpu_memory_gib: float | None = None
    kv_cache_memory_bytes: int | None = None
    block_size: int | None = None
    use_all_gpus: bool = False
    gpu_memory_used_gib: float | None = None  # held by other processes on each GPU at start-up (nvidia-smi used)
    cudagraph_capture_sizes: list[int] | None = None  # --compilation-config '{"cudagraph_capture_sizes": [...]}'
    cudagraph_estimate: bool | None = None  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS (None: the version's default)


@dataclass
class FitResult:
    """The verdict and the settings behind it; ``vllm_args`` are safe for ``vllm_version``."""

    outcome: str  # ok | kv_too_small | oom
    fits: bool
    model: str
    gpu: str | None
    vllm_version: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    dtype: str
    kv_cache_dtype: str
    quantization: str | None
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enforce_eager: bool
    disable_custom_all_reduce: bool
    gpu_memory_gib: float
    requested_gib: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cudagraph_gib: float
    kv_cache_gib: float
    kv_cache_tokens: int
    kv_bytes_per_token: int
    max_concurrency: float
    max_model_len_fit: int
    vllm_args: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    quantization_kernel: str | None = None  # what vLLM runs the weights with here (awq_marlin for awq on 8.0+)
    failure: str | None = None  # load_or_profile | startup_free_memory | cuda_graph_capture (None when it fits)
    cudagraph_after_kv_gib: float = 0.0  # graph memory captured after the KV cache, outside the budget
    headroom_gib: float = 0.0  # total - requested - CUDA context - other processes, per GPU
    cudagraph_capture_sizes: list[int] = field(default_factory=list)
    nodes: int = 1  # nodes serving this one replica (TP within a node, PP across them; TP across on CPUs)
    ranks_per_node: int = 1  # GPUs (CPU backend: processes) each node runs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, float):
                data[key] = round(value, 4)
        return data


# ----------------------------------------------------------------------------- validation helpers


def tp_problem(spec: ModelSpec, tp: int) -> str | None:
    """Why vLLM would refuse ``tp`` for this model, or None."""
    heads, kv = spec.num_attention_heads, spec.num_kv_heads
    if heads % tp:
        return f"{spec.num_attention_heads} attention heads are not divisible by {tp}"
    if not spec.is_mla and kv % tp and tp % kv:
        return f"{kv} KV heads and {tp} do not divide one another"
    if pad_vocab(spec.vocab_size) % tp:
        return f"the padded vocabulary ({pad_vocab(spec.vocab_size)}) is not divisible by {tp}"
    if spec.quantization in ("awq", "gptq", "compressed-tensors") and spec.quant_group_size > 0:
        group = spec.quant_group_size
        widths = [spec.num_attention_heads * spec.head_dim]
        if spec.intermediate_size and not all(spec.moe_layers):
            widths.append(spec.intermediate_size)
        if spec.is_moe:
            widths.append(spec.moe_intermediate_size)
        for width in widths:
            if (width // tp) % group:
                return f"{width}/{tp} input columns do not hold whole {group}-wide quantization groups"
    return None


def valid_tps(spec: ModelSpec, limit: int) -> list[int]:
    return [tp for tp in TP_CHOICES if tp <= limit and tp_problem(spec, tp) is None]


def _positive(value: Any, field_name: str, flag: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise SizingError(field_name, f"must be a positive integer, got {value!r}; set {flag} N with N >= 1")


# ----------------------------------------------------------------------------- the core evaluation


@dataclass(frozen=True)
class _Ctx:
    spec: ModelSpec
    traits: EngineTraits
    version: str
    gpu_name: str | None
    gpu_bytes: int
    compute_capability: tuple[int, int] | None
    bf16: bool
    fp8: bool
    p2p: bool
    device: str


def _evaluate(ctx: _Ctx, dep: Deployment) -> ReplicaMemory:
    return replica_memory(ctx.spec, dep, ctx.traits)


def _deployment(ctx: _Ctx, req: FitRequest, tp: int, pp: int, dtype: str, util: float, max_len: int,
                eager: bool, kv_dtype: str, kv_bytes: int | None) -> Deployment:  # fmt: skip
    server_default = default_batching(ctx.traits, max_len, ctx.gpu_bytes / GIB, ctx.gpu_name or "")
    batched = req.max_num_batched_tokens or server_default[0]
    seqs = req.max_num_seqs or server_default[1]
    return Deployment(
        tp=tp,
        pp=pp,
        dtype=dtype,
        kv_cache_dtype=kv_dtype,
        gpu_memory_bytes=ctx.gpu_bytes,
        gpu_memory_utilization=util,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        enforce_eager=eager,
        custom_all_reduce=ctx.p2p and tp > 1,
        block_size=req.block_size or 16,
        kv_cache_memory_bytes=kv_bytes,
        device=ctx.device,
        other_bytes=int((req.gpu_memory_used_gib or 0) * GIB),
        capture_sizes=tuple(req.cudagraph_capture_sizes) if req.cudagraph_capture_sizes else None,
        cudagraph_estimate=req.cudagraph_estimate,
    )


def _choose_dtype(ctx: _Ctx, req: FitRequest, reasons: list[str]) -> str:
    asked = req.dtype
    if asked is not None and asked not in DTYPES:
        raise SizingError("dtype", f"unknown dtype {asked!r}; use one of auto, float16, bfloat16, float32")
    asked = DTYPES.get(asked or "auto")
    checkpoint = DTYPES.get(ctx.spec.torch_dtype, "bfloat16")
    if ctx.device == "cpu":
        if asked in ("auto", None):
            reasons.append("CPU backend: float32 (the CPU kernels' reference precision; bfloat16 also works)")
            return "float32"
        if asked == "float16":
            raise SizingError("dtype", "the CPU backend runs float32 or bfloat16, not float16; use --dtype bfloat16")
        return asked
    if asked == "bfloat16" and not ctx.bf16:
        raise SizingError(
            "dtype",
            f"{ctx.gpu_name} has compute capability {_cc(ctx)} and no bfloat16 (needs 8.0+); use --dtype float16",
        )
    if asked != "auto":
        return asked
    if ctx.spec.quantization in ("awq", "gptq") and checkpoint != "float16":
        checkpoint = "float16"  # the 4-bit kernels compute in float16
    if checkpoint == "float32":
        checkpoint = "bfloat16" if ctx.bf16 else "float16"
        reasons.append(f"float32 checkpoint served in {checkpoint} (half the weight memory)")
    if checkpoint == "bfloat16" and not ctx.bf16:
        reasons.append(
            f"dtype float16: {ctx.gpu_name} (compute capability {_cc(ctx)}) has no bfloat16, which needs 8.0+"
        )
        return "float16"
    return checkpoint


def _cc(ctx: _Ctx) -> str:
    cc = ctx.compute_capability
    return f"{cc[0]}.{cc[1]}" if cc else "unknown"


def _context(req: FitRequest) -> _Ctx:
    spec = req.model if isinstance(req.model, ModelSpec) else resolve_model(str(req.model))
    version = req.vllm_version or PINNED_VLLM_VERSION
    parse_version(version)
    if req.device not in ("cuda", "cpu"):
        raise SizingError("device", f"unknown device {req.device!r}; use cuda or cpu")
    if req.device == "cpu":
        if not req.cpu_memory_gib or req.cpu_memory_gib <= 0:
            raise SizingError("cpu_memory_gib", "the CPU backend needs the host memory; pass --cpu-memory-gib X")
        traits = engine_traits(version, None, "cpu")
        return _Ctx(spec, traits, version, "cpu", int(req.cpu_memory_gib * GIB), None, True, False, True, "cpu")
    gpu_name: str | None = None
    cc: tuple[int, int] | None = None
    bf16 = fp8 = False
    p2p = True
    memory = req.gpu_memory_gib
    if req.gpu:
        from sizing.catalog import CatalogError, find_gpu

        try:
            gpu = find_gpu(req.gpu, req.gpu_memory_gib)
        except CatalogError as exc:
            raise SizingError("gpu", str(exc)) from exc
        gpu_name, cc, bf16, fp8 = gpu.name, gpu.compute_capability, gpu.bf16, gpu.fp8
        p2p = gpu.p2p or gpu.nvlink
        memory = gpu.memory_gib
    elif memory is None:
        raise SizingError("gpu", "name the GPU (--gpu, e.g. 4090 or A100-80GB) or give --gpu-memory-gib")
    else:
        gpu_name, cc, bf16, fp8 = f"GPU with {memory:g} GiB", None, True, False
    if memory is None or memory <= 0:
        raise SizingError("gpu_memory_gib", f"must be positive, got {memory!r}")
    if req.p2p is not None:
        p2p = req.p2p
    traits = engine_traits(version, cc)
    return _Ctx(spec, traits, version, gpu_name, int(memory * GIB), cc, bf16, fp8, p2p, "cuda")


# What vLLM's QuantizationConfig.get_min_capability() says for each kernel (major*10+minor as a pair).
MIN_CAPABILITY: dict[str, tuple[int, int]] = {
    "awq": (7, 5), "awq_marlin": (8, 0), "gptq": (6, 0), "gptq_marlin": (8, 0), "marlin": (8, 0), "fp8": (8, 0),
    "bitsandbytes": (7, 0), "mxfp4": (8, 0), "compressed-tensors": (7, 5),
}  # fmt: skip
IN_FLIGHT = ("fp8", "bitsandbytes")  # the methods vLLM can apply to an unquantized checkpoint while loading it
_SAME_METHOD = {"awq_marlin": "awq", "gptq_marlin": "gptq"}  # the override vLLM picks for these checkpoints
MARLIN_GROUPS = (-1, 0, 32, 64, 128)


def _with_quantization(spec: ModelSpec, quantization: str | None) -> ModelSpec:
    """The checkpoint as vLLM will load it with ``--quantization``: in-flight fp8/bitsandbytes, or the same method.

    vLLM (config/model.py ``_verify_quantization``) lets awq/gptq checkpoints pick their Marlin kernels and
    refuses any other method that differs from the checkpoint's quant_method, naming both.
    """
    if quantization is None:
        return spec
    if quantization not in QUANTIZATIONS:
        raise SizingError("quantization", f"unknown method {quantization!r}; use one of {sorted(QUANTIZATIONS)}")
    base = _SAME_METHOD.get(quantization, quantization)
    if spec.quantization is None:
        if quantization == "fp8":
            return replace(spec, quantization="fp8", quant_bits=8.0, quant_group_size=0, quant_scheme="fp8",
                           quant_block=None, weight_bytes=None)  # fmt: skip
        if quantization == "bitsandbytes":
            # vLLM's loader quantizes each linear weight to nf4 with compressed (double-quantized) statistics.
            return replace(spec, quantization="bitsandbytes", quant_bits=4.0, quant_group_size=0, quant_scheme="nf4",
                           quant_double_quant=True, weight_bytes=None)  # fmt: skip
        variants = _catalog_variants(spec.name, "awq" if base == "marlin" else base)
        pick = f": {', '.join(variants)}" if variants else ""
        raise SizingError(
            "quantization",
            f"{spec.name} has no quantization_config and vLLM quantizes at load time only with "
            f"{' or '.join(IN_FLIGHT)}; pick a {base} variant{pick}, or use --quantization fp8 / bitsandbytes",
        )
    same = base == spec.quantization or (quantization == "marlin" and spec.quantization in ("awq", "gptq"))
    if not same:
        raise SizingError(
            "quantization",
            f"{spec.name}: Quantization method specified in the model config ({spec.quantization}) does not match "
            f"the quantization method specified in the `quantization` argument ({quantization}); drop --quantization "
            f"(vLLM reads {spec.quantization} from the checkpoint)",
        )
    return spec


def _catalog_variants(name: str, method: str) -> list[str]:
    """Catalog checkpoints of ``name``'s base model stored with ``method``."""
    from sizing.catalog import CatalogError, find_model, model_ids

    try:
        base = find_model(name).id
    except CatalogError:
        return []
    found = []
    for model_id in model_ids():
        entry = find_model(model_id)
        if entry.base == base and entry.quantization == method:
            found.append(entry.id)
    return found


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def _choose_kernel(ctx: _Ctx, asked: str | None, reasons: list[str]) -> str | None:
    """The kernel vLLM runs this checkpoint with on this GPU, or a SizingError naming the capability it lacks."""
    spec = ctx.spec
    method = spec.quantization
    if method is None or ctx.device != "cuda":
        return method
    cc = ctx.compute_capability
    known = cc is not None
    capable = cc is None or cc >= (8, 0)
    group_ok = spec.quant_group_size in MARLIN_GROUPS and spec.quant_bits in (4.0, 8.0)
    kernel = method
    if method == "awq":
        marlin_ok = group_ok and spec.quant_zero_point
        if asked in ("awq_marlin", "marlin") or (asked is None and marlin_ok and capable):
            kernel = "awq_marlin"
        if kernel == "awq_marlin" and asked is None:
            reasons.append("awq checkpoint runs with the awq_marlin kernel (vLLM picks it on compute capability 8.0+)")
    elif method == "gptq":
        marlin_ok = group_ok and not spec.quant_zero_point
        if asked in ("gptq_marlin", "marlin") or (asked is None and marlin_ok and capable):
            kernel = "gptq_marlin"
        if kernel == "gptq_marlin" and asked is None:
            reasons.append(
                "gptq checkpoint runs with the gptq_marlin kernel (vLLM picks it on compute capability 8.0+)"
            )
    need = MIN_CAPABILITY.get(kernel, (7, 0))
    why = ""
    if method == "compressed-tensors":
        need, why = {"int-w8a8": ((7, 5), "int8 W8A8 (CUTLASS scaled_mm)"),
                     "fp8-w8a8": ((8, 0), "fp8 W8A8"), "fp8-block": ((8, 0), "fp8 block")}.get(
            spec.quant_scheme, ((8, 0), f"{spec.quant_scheme} through the Marlin kernel"))  # fmt: skip
    if known and cc < need:
        names = {"awq": "awq needs compute capability 7.5 (Turing) or newer",
                 "awq_marlin": "awq_marlin (Marlin) needs 8.0; drop --quantization to run the plain awq kernel",
                 "gptq_marlin": "gptq_marlin (Marlin) needs 8.0; drop --quantization to run the plain gptq kernel",
                 "marlin": "Marlin kernels need 8.0",
                 "fp8": "fp8 weights need 8.0 (Marlin weight-only below 8.9, native W8A8 from 8.9)",
                 "bitsandbytes": "bitsandbytes needs 7.0", "mxfp4": "mxfp4 needs 8.0 (Marlin below 9.0)"}  # fmt: skip
        text = names.get(kernel, f"compressed-tensors {why} needs {_cc_text(need)}")
        raise SizingError("quantization", f"{text}; {ctx.gpu_name} has compute capability {_cc(ctx)}")
    native_fp8 = ctx.fp8 or not known
    if (method == "fp8" or spec.quant_scheme == "fp8-w8a8") and not native_fp8:
        reasons.append(
            f"fp8 weights run through the weight-only Marlin kernel on compute capability {_cc(ctx)} "
            "(native fp8 W8A8 needs 8.9)"
        )
    return kernel


def fit(request: FitRequest) -> FitResult:
    """Evaluate (or choose) one replica's settings; raises SizingError on bad input."""
    req = request
    for name, flag in (
        ("gpus", "--gpus"),
        ("nodes", "--nodes"),
        ("tensor_parallel_size", "--tensor-parallel-size"),
        ("pipeline_parallel_size", "--pipeline-parallel-size"),
        ("max_model_len", "--max-model-len"),
        ("max_num_batched_tokens", "--max-num-batched-tokens"),
        ("max_num_seqs", "--max-num-seqs"),
        ("block_size", "--block-size"),
    ):
        _positive(getattr(req, name), name, flag)
    util = req.gpu_memory_utilization
    if util is not None and not (0 < util <= 1):
        raise SizingError("gpu_memory_utilization", f"must be in (0, 1], got {util}; e.g. 0.9 for 90% of the GPU")
    if req.kv_cache_dtype is not None and req.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise SizingError("kv_cache_dtype", f"unknown {req.kv_cache_dtype!r}; use one of {sorted(KV_CACHE_DTYPES)}")

    ctx = _context(req)
    ctx = replace(ctx, spec=_with_quantization(ctx.spec, req.quantization))
    reasons: list[str] = []
    kernel = _choose_kernel(ctx, req.quantization, reasons)
    ctx = replace(ctx, spec=replace(ctx.spec, quant_kernel=kernel))
    spec = ctx.spec
    dtype = _choose_dtype(ctx, req, reasons)
    kv_dtype = req.kv_cache_dtype or "auto"
    old_gpu = ctx.compute_capability is not None and ctx.compute_capability < (8, 0)
    if kv_dtype.startswith("fp8") and ctx.device == "cuda" and old_gpu:
        raise SizingError(
            "kv_cache_dtype", f"an fp8 KV cache needs compute capability 8.0+; use auto on {ctx.gpu_name}"
        )

    model_max = spec.max_position_embeddings
    if req.max_model_len is not None and req.max_model_len > model_max:
        raise SizingError(
            "max_model_len",
            f"{req.max_model_len} exceeds {spec.name}'s limit of {model_max} tokens (max_position_embeddings); "
            f"use --max-model-len {model_max} or less, or extend the context with --hf-overrides rope_scaling",
        )
    if ctx.device == "cpu":
        return _fit_cpu(ctx, req, dtype, kv_dtype, reasons)
    result = _fit_cuda(ctx, req, spec, dtype, kv_dtype, util, reasons)
    result.nodes = req.nodes
    result.ranks_per_node = result.tensor_parallel_size * result.pipeline_parallel_size // req.nodes
    if req.nodes > 1:
        result.reasons.insert(0, _nodes_reason(result, req))
    return result


def _nodes_reason(result: FitResult, req: FitRequest) -> str:
    """Why this layout across nodes: TP needs an all-reduce per layer (NVLink/PCIe speed), PP only hands over
    activations at stage boundaries, which the network between nodes can carry."""
    tp, pp = result.tensor_parallel_size, result.pipeline_parallel_size
    idle = req.gpus - result.ranks_per_node
    text = (f"{req.nodes} nodes x {req.gpus} GPUs: TP {tp} within each node, PP {pp} across nodes (each layer's "
            "all-reduce stays on the node's own links; only activations cross the network)")
    if idle > 0:
        text += f"; {idle} GPU(s) per node idle: no valid TP uses all {req.gpus}"
    return text


def _fit_cuda(ctx: _Ctx, req: FitRequest, spec: ModelSpec, dtype: str, kv_dtype: str, util: float | None,
              reasons: list[str]) -> FitResult:  # fmt: skip
    """Choose (or check) the GPU layout, context and memory settings."""
    model_max = spec.max_position_embeddings

    util = util if util is not None else ctx.traits.gpu_memory_utilization
    per_node = req.gpus
    total_gpus = req.gpus * req.nodes
    tp, pp = req.tensor_parallel_size, req.pipeline_parallel_size
    if tp is not None:
        problem = tp_problem(spec, tp)
        if problem:
            good = ", ".join(map(str, valid_tps(spec, 64))) or "1"
            raise SizingError("tensor_parallel_size", f"{problem} for {spec.name}; valid sizes: {good}")
    if tp is not None and pp is not None and tp * pp > total_gpus:
        raise SizingError(
            "gpus", f"tensor {tp} x pipeline {pp} needs {tp * pp} GPUs but {total_gpus} are given; raise --gpus"
        )
    if tp is not None and tp > total_gpus:
        raise SizingError("tensor_parallel_size", f"{tp} exceeds the {total_gpus} GPUs given; use at most {total_gpus}")
    if pp is not None and pp > spec.num_layers:
        raise SizingError("pipeline_parallel_size", f"{pp} exceeds the model's {spec.num_layers} layers")

    target_len = req.max_model_len or min(model_max, TARGET_CONTEXT)
    layouts = _layouts(spec, tp, pp, per_node, req.nodes, req.use_all_gpus)
    if not layouts:
        raise SizingError("tensor_parallel_size", f"no valid layout of {spec.name} on {total_gpus} GPUs")
    eager_given = req.enforce_eager

    def evaluate(layout: tuple[int, int], length: int) -> tuple[Deployment, ReplicaMemory]:
        eager = bool(eager_given)
        dep = _deployment(ctx, req, layout[0], layout[1], dtype, util, length, eager, kv_dtype, None)
        mem = _evaluate(ctx, dep)
        if (
            eager_given is None
            and mem.tight.cudagraph_bytes
            and mem.tight.kv_bytes + mem.tight.cudagraph_bytes > 0
            and mem.tight.cudagraph_bytes > 0.25 * (mem.tight.kv_bytes + mem.tight.cudagraph_bytes)
        ):
            dep = replace(dep, enforce_eager=True)
            mem = _evaluate(ctx, dep)
        if _post_profile_short(mem) and req.gpu_memory_utilization is None:
            lower = _utilization_that_leaves_room(dep, mem)
            if lower is not None:
                dep = replace(dep, gpu_memory_utilization=lower)
                mem = _evaluate(ctx, dep)
        if eager_given is None and any(rank.oom_after_profile for rank in mem.ranks):
            dep = replace(dep, enforce_eager=True)
            mem = _evaluate(ctx, dep)
        return dep, mem

    chosen: tuple[int, int] | None = None
    fallback: tuple[int, int] = layouts[-1]
    for layout in layouts:
        _, mem = evaluate(layout, target_len)
        if mem.num_blocks and mem.max_model_len_fit() >= target_len:
            chosen = layout
            break
    layout = chosen or fallback
    if req.max_model_len is not None or chosen is None:
        max_len = target_len
    else:
        max_len = _choose_max_len(lambda n: evaluate(layout, n)[1], model_max)
    dep, mem = evaluate(layout, max_len)
    return _result(ctx, req, dep, mem, max_len, reasons, chosen is not None or req.tensor_parallel_size is not None)


def _layouts(spec: ModelSpec, tp: int | None, pp: int | None, per_node: int, nodes: int,
             use_all: bool) -> list[tuple[int, int]]:  # fmt: skip
    """Candidate (tp, pp) pairs in order of preference."""
    if tp is not None and pp is not None:
        return [(tp, pp)]
    if tp is not None:
        return [(tp, pp or nodes)]
    tps = valid_tps(spec, per_node)
    if pp is not None:
        tps = [t for t in tps if t * pp <= per_node * nodes]
        return [(t, pp) for t in (reversed(tps) if use_all else tps)]
    if nodes > 1:
        return [(max(tps), nodes)] if tps else []
    layouts = [(t, 1) for t in (reversed(tps) if use_all else tps)]
    # Within one node, pipeline stages only when no tensor-parallel layout can hold the model.
    biggest = max(tps) if tps else 1
    for stages in range(2, per_node // biggest + 1):
        if stages <= spec.num_layers:
            layouts.append((biggest, stages))
    return layouts


def _choose_max_len(memory_at: Any, model_max: int) -> int:
    """Largest context (model limit, then powers of two) leaving room for MIN_CONCURRENCY requests."""
    candidates = [model_max] + [1 << k for k in range(20, 10, -1) if (1 << k) < model_max]
    best_single = 0
    for length in candidates:
        mem = memory_at(length)
        if mem.max_concurrency(length) >= MIN_CONCURRENCY:
            return length
        if not best_single and mem.max_model_len_fit() >= length:
            best_single = length
    if best_single:
        return best_single
    mem = memory_at(2048)
    fit_len = mem.max_model_len_fit()
    return max(min(fit_len, model_max), 16)


def _post_profile_short(mem: ReplicaMemory) -> bool:
    """Start-up refused for free memory, or CUDA graph capture out of memory after the KV cache is allocated."""
    return any(rank.startup_refused or rank.oom_after_profile for rank in mem.ranks)


def _failure(mem: ReplicaMemory) -> str | None:
    if any(rank.kv_bytes <= 0 for rank in mem.ranks) or mem.num_blocks == 0:
        return "load_or_profile"
    if any(rank.startup_refused for rank in mem.ranks):
        return "startup_free_memory"
    if any(rank.oom_after_profile for rank in mem.ranks):
        return "cuda_graph_capture"
    return None


def _utilization_that_leaves_room(dep: Deployment, mem: ReplicaMemory) -> float | None:
    """The highest --gpu-memory-utilization (2 decimals) whose outside share holds what comes after the KV cache."""
    short = max(rank.graphs_after_kv_bytes - rank.headroom_bytes for rank in mem.ranks)
    if short <= 0:
        return None
    util = (dep.gpu_memory_bytes * dep.gpu_memory_utilization - short - POST_PROFILE_MARGIN) / dep.gpu_memory_bytes
    util = int(util * 100) / 100
    return util if util >= 0.5 else None


def _outcome(mem: ReplicaMemory, max_len: int) -> str:
    if _failure(mem):
        return "oom"
    if mem.blocks_for(max_len) > mem.num_blocks:
        return "kv_too_small"
    return "ok"


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _result(ctx: _Ctx, req: FitRequest, dep: Deployment, mem: ReplicaMemory, max_len: int, reasons: list[str],
            layout_fits: bool) -> FitResult:  # fmt: skip
    spec = ctx.spec
    rank = mem.tight
    outcome = _outcome(mem, max_len)
    fit_len = min(mem.max_model_len_fit(), spec.max_position_embeddings)
    concurrency = mem.max_concurrency(max_len)
    disable_car = dep.tp > 1 and not dep.custom_all_reduce
    where = f"per GPU (TP {dep.tp}" + (f", PP stage {rank.pp_rank + 1}/{dep.pp}" if dep.pp > 1 else "") + ")"
    reasons.append(
        f"{ctx.gpu_name}: {_gib(dep.gpu_memory_bytes)} x {dep.gpu_memory_utilization} = "
        f"{_gib(rank.requested_bytes)} usable {where}"
    )
    reasons.append(
        f"weights {_gib(rank.weights_bytes)}, activation peak {_gib(rank.activation_bytes)} "
        f"({dep.max_num_batched_tokens} batched tokens, {min(dep.max_num_seqs, dep.max_num_batched_tokens)} "
        f"sampled rows), non-torch {_gib(rank.non_torch_bytes)}"
        + (f", CUDA graphs {_gib(rank.cudagraph_bytes)}" if rank.cudagraph_bytes else "")
    )
    failure = _failure(mem)
    if failure == "load_or_profile":
        reasons.append(f"nothing is left for the KV cache: {_gib(rank.kv_bytes)} after weights and profiling")
    else:
        reasons.append(
            f"KV cache {_gib(rank.kv_bytes)} = {mem.kv_cache_tokens:,} tokens "
            f"({rank.kv_bytes_per_token / 1024:.0f} KiB per token on this GPU); "
            f"{concurrency:.2f}x concurrency at {max_len:,} tokens"
        )
    if outcome == "kv_too_small":
        reasons.append(
            f"one request of {max_len:,} tokens needs {mem.blocks_for(max_len)} blocks but only {mem.num_blocks} "
            f"fit; the largest context that fits is {fit_len:,}"
        )
    if disable_car:
        reasons.append("--disable-custom-all-reduce: these GPUs have no P2P/NVLink path; NCCL carries TP traffic")
    reasons += _post_profile_reasons(ctx, dep, mem, failure)
    if dep.enforce_eager and req.enforce_eager is None:
        graphed = _evaluate(ctx, replace(dep, enforce_eager=False))
        if _post_profile_short(graphed):
            after = max(r.graphs_after_kv_bytes for r in graphed.ranks)
            reasons.append(
                f"--enforce-eager: CUDA graphs ({_gib(after)}) captured after the KV cache would not fit the "
                f"{_gib(graphed.tight.headroom_bytes)} left outside --gpu-memory-utilization "
                f"{dep.gpu_memory_utilization:g}"
            )
        else:
            reasons.append(
                "--enforce-eager: CUDA graphs would take more than a quarter of the memory left for the KV cache"
            )
    if req.gpu_memory_utilization is None and dep.gpu_memory_utilization < ctx.traits.gpu_memory_utilization:
        reasons.append(
            f"--gpu-memory-utilization {dep.gpu_memory_utilization:g} (not {ctx.traits.gpu_memory_utilization:g}): "
            "leaves room outside the budget for the CUDA graphs captured after the KV cache"
        )
    if not ctx.traits.v1 and ctx.device == "cuda":
        reasons.append(f"vLLM {ctx.version} runs the V0 engine here (CUDA graphs are not counted by its profiler)")

    suggestions = _suggestions(ctx, req, dep, mem, max_len, outcome, fit_len)
    args = _vllm_args(ctx, req, dep, max_len, disable_car)
    return FitResult(
        outcome=outcome,
        fits=outcome == "ok",
        model=spec.name,
        gpu=ctx.gpu_name,
        vllm_version=ctx.version,
        tensor_parallel_size=dep.tp,
        pipeline_parallel_size=dep.pp,
        dtype=dep.dtype,
        kv_cache_dtype=dep.kv_cache_dtype,
        quantization=spec.quantization,
        gpu_memory_utilization=dep.gpu_memory_utilization,
        max_model_len=max_len,
        max_num_seqs=dep.max_num_seqs,
        max_num_batched_tokens=dep.max_num_batched_tokens,
        enforce_eager=dep.enforce_eager,
        disable_custom_all_reduce=disable_car,
        gpu_memory_gib=dep.gpu_memory_bytes / GIB,
        requested_gib=rank.requested_bytes / GIB,
        weights_gib=rank.weights_bytes / GIB,
        activation_gib=rank.activation_bytes / GIB,
        non_torch_gib=rank.non_torch_bytes / GIB,
        cudagraph_gib=rank.cudagraph_bytes / GIB,
        kv_cache_gib=max(rank.kv_bytes, 0) / GIB,
        kv_cache_tokens=mem.kv_cache_tokens,
        kv_bytes_per_token=rank.kv_bytes_per_token,
        max_concurrency=round(concurrency, 2),
        max_model_len_fit=fit_len,
        vllm_args=args,
        reasons=reasons,
        suggestions=suggestions,
        quantization_kernel=spec.quant_kernel,
        failure=failure,
        cudagraph_after_kv_gib=rank_after(mem) / GIB,
        headroom_gib=mem.tight.headroom_bytes / GIB,
        cudagraph_capture_sizes=capture_plan(dep, ctx.traits)[0] or capture_plan(dep, ctx.traits)[1],
    )


def rank_after(mem: ReplicaMemory) -> int:
    """The largest post-KV graph capture of any rank."""
    return max(r.graphs_after_kv_bytes for r in mem.ranks)


def _post_profile_reasons(ctx: _Ctx, dep: Deployment, mem: ReplicaMemory, failure: str | None) -> list[str]:
    """What happens after "Available KV cache memory" is logged, in numbers."""
    if ctx.device != "cuda":
        return []
    rank = max(mem.ranks, key=lambda r: r.graphs_after_kv_bytes - r.headroom_bytes)
    context = "" if ctx.traits.non_torch_includes_context else f" - CUDA context {_gib(CUDA_CONTEXT)}"
    other = f" - other processes {_gib(dep.other_bytes)}" if dep.other_bytes else ""
    out: list[str] = []
    if failure == "startup_free_memory":
        free = dep.gpu_memory_bytes - dep.other_bytes - (0 if ctx.traits.non_torch_includes_context else CUDA_CONTEXT)
        out.append(
            f"vLLM refuses to start: free memory {_gib(free)} is less than the requested {_gib(rank.requested_bytes)}"
            f" (--gpu-memory-utilization {dep.gpu_memory_utilization:g} of {_gib(dep.gpu_memory_bytes)})"
        )
        return out
    if rank.graphs_after_kv_bytes:
        piecewise, full = capture_plan(dep, ctx.traits)
        verdict = "does not fit" if rank.oom_after_profile else "fits"
        out.append(
            f"after the KV cache is allocated, CUDA graph capture ({len(piecewise)} piecewise + {len(full)} full "
            f"graphs, not reserved by vLLM {ctx.version}'s profile) takes about {_gib(rank.graphs_after_kv_bytes)}; "
            f"outside the budget there is {_gib(dep.gpu_memory_bytes)} - {_gib(rank.requested_bytes)}{context}{other}"
            f" = {_gib(rank.headroom_bytes)}: {verdict}"
        )
    if failure == "cuda_graph_capture":
        out.append("so the start-up dies with CUDA out of memory while capturing CUDA graphs, after the KV cache")
    return out


def _post_profile_ways_out(ctx: _Ctx, req: FitRequest, dep: Deployment, mem: ReplicaMemory,
                           max_len: int) -> list[str]:  # fmt: skip
    """For a start-up that dies after profiling: the settings that leave the graphs room, each checked."""
    failure = _failure(mem)
    out: list[str] = []
    if failure is None and dep.enforce_eager and req.enforce_eager is None:
        graphed = replace(dep, enforce_eager=False)
        lower = _utilization_that_leaves_room(graphed, _evaluate(ctx, graphed))
        if lower is not None:
            trial = _evaluate(ctx, replace(graphed, gpu_memory_utilization=lower))
            if _outcome(trial, max_len) == "ok":
                out.append(
                    f"to keep CUDA graphs (faster decoding) instead of --enforce-eager: --gpu-memory-utilization "
                    f"{lower:g} fits, with {trial.kv_cache_tokens:,} tokens of KV cache"
                )
    if failure not in ("startup_free_memory", "cuda_graph_capture"):
        return out
    lower = _utilization_that_leaves_room(dep, mem)
    if failure == "startup_free_memory":
        free = dep.gpu_memory_bytes - dep.other_bytes - (0 if ctx.traits.non_torch_includes_context else CUDA_CONTEXT)
        lower = int((free - POST_PROFILE_MARGIN) / dep.gpu_memory_bytes * 100) / 100
    if lower is not None and lower > 0:
        trial = _evaluate(ctx, replace(dep, gpu_memory_utilization=lower))
        if _outcome(trial, max_len) == "ok":
            out.append(f"--gpu-memory-utilization {lower:g} fits, with {trial.kv_cache_tokens:,} tokens of KV cache")
        else:
            out.append(f"--gpu-memory-utilization {lower:g} leaves room for the graphs but the KV cache is then too "
                       f"small for {max_len:,} tokens")  # fmt: skip
    if failure == "startup_free_memory" and dep.other_bytes:
        out.append(f"free the GPU: other processes hold {_gib(dep.other_bytes)} of it")
    if failure == "cuda_graph_capture":
        for seqs in (128, 64, 32, 16, 8):
            if seqs >= dep.max_num_seqs:
                continue
            trial = _evaluate(ctx, replace(dep, max_num_seqs=seqs))
            if _outcome(trial, max_len) == "ok":
                out.append(f"--max-num-seqs {seqs}: fewer CUDA graph capture sizes (up to {seqs * 2}), fits")
                break
        for top in (256, 128, 64, 32, 16, 8):
            sizes = tuple(s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256) if s <= top)
            trial = _evaluate(ctx, replace(dep, capture_sizes=sizes))
            if _outcome(trial, max_len) == "ok":
                listed = ", ".join(map(str, sizes))
                before = len(capture_plan(dep, ctx.traits)[0])
                out.append(f"--compilation-config '{{\"cudagraph_capture_sizes\": [{listed}]}}': "
                           f"{len(sizes)} capture sizes instead of {before}, fits")  # fmt: skip
                break
        eager = _evaluate(ctx, replace(dep, enforce_eager=True))
        if _outcome(eager, max_len) == "ok":
            out.append(
                f"--enforce-eager: no CUDA graphs ({_gib(rank_after(mem))} saved), slower decoding; "
                f"{eager.kv_cache_tokens:,} tokens of KV cache"
            )
        if ctx.traits.v1 and not ctx.traits.cudagraph_in_profile:
            out.append(
                "vLLM 0.21+ reserves CUDA graph memory in its profile (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1 "
                "by default), trading KV cache for a start-up that does not die"
            )
    return out


def _vllm_args(ctx: _Ctx, req: FitRequest, dep: Deployment, max_len: int, disable_car: bool) -> list[str]:
    args = ["--tensor-parallel-size", str(dep.tp)]
    if dep.pp > 1:
        args += ["--pipeline-parallel-size", str(dep.pp)]
    args += ["--dtype", dep.dtype, "--max-model-len", str(max_len)]
    if ctx.device == "cpu":
        args += ["--kv-cache-memory-bytes", str(dep.kv_cache_memory_bytes), "--enforce-eager"]
    else:
        args += ["--gpu-memory-utilization", f"{dep.gpu_memory_utilization:g}"]
    args += ["--max-num-seqs", str(dep.max_num_seqs), "--max-num-batched-tokens", str(dep.max_num_batched_tokens)]
    if dep.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", dep.kv_cache_dtype]
    if req.quantization:
        args += ["--quantization", req.quantization]
    if req.block_size:
        args += ["--block-size", str(req.block_size)]
    if dep.enforce_eager and ctx.device == "cuda":
        args.append("--enforce-eager")
    elif dep.capture_sizes and ctx.device == "cuda":
        sizes = ", ".join(map(str, sorted(set(dep.capture_sizes))))
        args += ["--compilation-config", f'{{"cudagraph_capture_sizes": [{sizes}]}}']
    if disable_car:
        args.append("--disable-custom-all-reduce")
    return filter_args_for_version(args, ctx.version)


def _suggestions(ctx: _Ctx, req: FitRequest, dep: Deployment, mem: ReplicaMemory, max_len: int, outcome: str,
                 fit_len: int) -> list[str]:  # fmt: skip
    out: list[str] = []
    spec = ctx.spec
    if outcome == "kv_too_small" and fit_len >= dep.block_size:
        out.append(f"--max-model-len {fit_len} or less fits on this layout")
    if outcome != "ok" and ctx.device == "cuda":
        need = _gpus_needed(ctx, req, dep, max_len)
        if need:
            tp, count = need
            out.append(f"needs {count} x {dep.gpu_memory_bytes / GIB:.0f} GiB GPUs (TP {tp}) for {max_len:,} tokens")
        for variant, tokens in _quantized_variants(ctx, req, dep, max_len):
            out.append(f"use the quantized variant {variant}: fits with {tokens:,} tokens of KV cache")
        if dep.gpu_memory_utilization < 0.95 and not _post_profile_short(
            _evaluate(ctx, replace(dep, gpu_memory_utilization=0.95))
        ):
            out.append("--gpu-memory-utilization 0.95 gives the KV cache a little more when nothing else uses the GPU")
    if ctx.fp8 and dep.kv_cache_dtype == "auto" and ctx.device == "cuda" and outcome != "oom":
        doubled = replace(dep, kv_cache_dtype="fp8")
        tokens = _evaluate(ctx, doubled).kv_cache_tokens
        if outcome != "ok" or mem.max_concurrency(max_len) < MIN_CONCURRENCY:
            out.append(f"--kv-cache-dtype fp8 holds {tokens:,} tokens instead of {mem.kv_cache_tokens:,}")
    if ctx.device == "cuda":
        out += _post_profile_ways_out(ctx, req, dep, mem, max_len)
    if spec.is_moe and dep.tp > 1 and outcome == "ok":
        out.append("MoE model: --enable-expert-parallel spreads whole experts instead of slicing each one")
    return out


def _gpus_needed(ctx: _Ctx, req: FitRequest, dep: Deployment, max_len: int) -> tuple[int, int] | None:
    """Smallest TP of the same GPUs that holds one request of ``max_len`` (None when none up to 16 does)."""
    for tp in valid_tps(ctx.spec, 16):
        if tp <= dep.tp and dep.pp == 1:
            continue
        trial = replace(dep, tp=tp, pp=1, custom_all_reduce=dep.custom_all_reduce and tp > 1)
        mem = _evaluate(ctx, trial)
        if _outcome(mem, max_len) == "ok":
            return tp, tp
    return None


def _quantized_variants(ctx: _Ctx, req: FitRequest, dep: Deployment, max_len: int) -> list[tuple[str, int]]:
    """Catalog variants of the same base model that fit this layout, with their KV cache tokens."""
    from sizing.catalog import in_catalog

    if isinstance(req.model, ModelSpec) and req.model.weight_bytes is None and not in_catalog(ctx.spec.name):
        return []
    from sizing.catalog import find_model, model_ids

    try:
        me = find_model(ctx.spec.name)
    except Exception:  # noqa: BLE001 - a local directory has no catalog entry, hence no variants
        return []
    base = me.base or me.id
    found: list[tuple[str, int]] = []
    for model_id in model_ids():
        entry = find_model(model_id)
        if entry.id == me.id or (entry.base or entry.id) != base or entry.quantization is None:
            continue
        from sizing.model import model_from_config

        variant = model_from_config(entry.config, entry.id, entry.weight_bytes)
        if tp_problem(variant, dep.tp) or (variant.quantization == "fp8" and not ctx.bf16):
            continue
        vctx = replace(ctx, spec=variant)
        dtype = dep.dtype if variant.quantization not in ("awq", "gptq") else "float16"
        mem = _evaluate(vctx, replace(dep, dtype=dtype))
        if _outcome(mem, max_len) == "ok":
            found.append((entry.id, mem.kv_cache_tokens))
    found.sort(key=lambda item: -item[1])
    return found[:2]


# ----------------------------------------------------------------------------- CPU backend


def _fit_cpu(ctx: _Ctx, req: FitRequest, dtype: str, kv_dtype: str, reasons: list[str]) -> FitResult:
    """vLLM's CPU backend: no profiling, the KV cache is whatever --kv-cache-memory-bytes says."""
    spec = ctx.spec
    nodes = req.nodes
    if nodes > 1 and (req.pipeline_parallel_size or 1) > 1:
        raise SizingError("pipeline_parallel_size", "pipeline parallel across nodes crashes the CPU backend on the "
                          "first completion (AssertionError in sync_and_gather_intermediate_tensors); leave it "
                          "unset: the CPU backend spreads a model over nodes with tensor parallel")
    tp = req.tensor_parallel_size or nodes
    if tp % nodes:
        raise SizingError("tensor_parallel_size", f"{tp} ranks do not spread evenly over {nodes} nodes; use a "
                          f"multiple of {nodes}")
    per_node = tp // nodes  # the host memory below is one node's: it holds this many ranks
    problem = tp_problem(spec, tp)
    if problem:
        raise SizingError("tensor_parallel_size", f"{problem} for {spec.name}")
    if nodes > 1:
        reasons.append(f"{nodes} nodes: TP {tp} across them ({per_node} rank(s) per node; the CPU backend cannot "
                       "pipeline across nodes)")
    max_len_given = req.max_model_len
    probe_len = max_len_given or min(spec.max_position_embeddings, 4096)
    dep = _deployment(ctx, req, tp, 1, dtype, 1.0, probe_len, True, kv_dtype, 0)
    mem = replica_memory(spec, dep, ctx.traits)
    weights = mem.tight.weights_bytes
    spare = ctx.gpu_bytes - weights * per_node - CPU_RUNTIME_BYTES
    kv_bytes = req.kv_cache_memory_bytes
    if kv_bytes is None:
        # Enough for MIN_CONCURRENCY requests of the context, within the memory that is left.
        per_request = mem.blocks_for(probe_len) * dep.block_size * mem.tight.kv_bytes_per_token
        kv_bytes = max(0, min(spare // per_node, per_request * MIN_CONCURRENCY))
        kv_bytes = kv_bytes // (1 << 20) * (1 << 20)
        reasons.append(f"KV cache sized for {MIN_CONCURRENCY} requests of {probe_len:,} tokens within free memory")
    dep = replace(dep, kv_cache_memory_bytes=kv_bytes)
    mem = replica_memory(spec, dep, ctx.traits)
    need = (weights + kv_bytes) * per_node + CPU_RUNTIME_BYTES
    max_len = max_len_given or probe_len
    outcome = _outcome(mem, max_len)
    if need > ctx.gpu_bytes or kv_bytes <= 0:
        outcome = "oom"
    reasons.append(
        f"host memory {_gib(ctx.gpu_bytes)}: weights {_gib(weights * per_node)} + "
        f"KV cache {_gib(kv_bytes * per_node)} + "
        f"runtime ~{_gib(CPU_RUNTIME_BYTES)} = {_gib(need)}"
    )
    fit_len = min(mem.max_model_len_fit(), spec.max_position_embeddings)
    suggestions = []
    if outcome == "kv_too_small" and fit_len:
        suggestions.append(f"--max-model-len {fit_len} or less fits this KV cache")
    if outcome == "oom":
        suggestions.append("a smaller model, or --dtype bfloat16 to halve the weights")
    return FitResult(
        outcome=outcome,
        fits=outcome == "ok",
        model=spec.name,
        gpu=None,
        vllm_version=ctx.version,
        tensor_parallel_size=tp,
        pipeline_parallel_size=1,
        dtype=dtype,
        kv_cache_dtype=kv_dtype,
        quantization=spec.quantization,
        gpu_memory_utilization=1.0,
        max_model_len=max_len,
        max_num_seqs=dep.max_num_seqs,
        max_num_batched_tokens=dep.max_num_batched_tokens,
        enforce_eager=True,
        disable_custom_all_reduce=False,
        gpu_memory_gib=0.0,
        requested_gib=ctx.gpu_bytes / GIB,
        weights_gib=weights / GIB,
        activation_gib=0.0,
        non_torch_gib=0.0,
        cudagraph_gib=0.0,
        kv_cache_gib=kv_bytes / GIB,
        kv_cache_tokens=mem.kv_cache_tokens,
        kv_bytes_per_token=mem.tight.kv_bytes_per_token,
        max_concurrency=round(mem.max_concurrency(max_len), 2),
        max_model_len_fit=fit_len,
        vllm_args=_vllm_args(ctx, req, dep, max_len, False),
        reasons=reasons,
        suggestions=suggestions,
        nodes=nodes,
        ranks_per_node=per_node,
    )


def gpus_for(request: FitRequest) -> int:
    """How many GPUs the chosen layout uses (tp x pp); a convenience for plans."""
    result = fit(request)
    return result.tensor_parallel_size * result.pipeline_parallel_size


__all__ = ["FitRequest", "FitResult", "fit", "gpus_for", "tp_problem", "valid_tps"]
