"""Per-GPU memory of one vLLM replica, following the engine's own accounting.

vLLM sizes the KV cache at startup as ``total × gpu_memory_utilization − non-KV memory``, where non-KV memory is
what a profiling run measured: the weights on this rank, the torch peak of one dummy batch of
``max_num_batched_tokens`` tokens followed by a dummy sampling step over ``max_num_seqs`` rows of logits, memory
allocated outside torch (NCCL buffers; the CUDA context in V1 of 0.8/0.9) and, in recent versions, an estimate
of CUDA graph memory. The KV cache is then cut into blocks of ``block_size`` tokens for every layer.

After the KV cache is allocated, vLLM captures CUDA graphs (``capture_model``). Whatever of that the profile did
not reserve (all of it before 0.21, when VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS became the default) must fit
the memory left outside the budget: total − total × utilization − the CUDA context − other processes. That is
where start-ups die after "Available KV cache memory" was already logged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sizing.model import DTYPE_BYTES, ModelSpec, WeightPart, param_bytes
from sizing.versions import EngineTraits

GIB = 1 << 30
MIB = 1 << 20
VOCAB_PADDING = 64  # vocab-parallel embedding pads the vocabulary to a multiple of 64 before sharding

# NCCL communicator buffers and streams allocated outside torch when ranks talk (0.20 GiB in both seed logs at
# TP 4); a single GPU only carries cuBLAS workspaces.
NCCL_BUFFERS = 0.20 * GIB
SINGLE_GPU_NON_TORCH = 0.05 * GIB
CUSTOM_ALL_REDUCE_BUFFERS = 32 * MIB  # IPC staging buffers of vLLM's custom all-reduce, per rank
# CUDA context + kernels loaded by torch; V1 of 0.8/0.9 measured non-torch memory as (used - torch allocated),
# which includes it.
CUDA_CONTEXT = 0.45 * GIB
# fused_moe processes at most this many tokens at a time (VLLM_FUSED_MOE_CHUNK_SIZE).
FUSED_MOE_CHUNK = 32768
# Per captured graph and decoder layer: the instantiated graph's kernel nodes and the small blocks the shared
# pool cannot hand back between captures. V1: fitted to a public vLLM 0.21 log (Qwen3-8B: 51 piecewise + 35
# full graphs over 36 layers estimated at 0.52 GiB, tests/sizing/test_seeds.py), and bounded above by seed 001
# (a 70B AWQ on two 4090s at 0.95 captured its 67 piecewise graphs of 80 layers in the 1.18 GiB outside the
# budget: at most 0.22 MiB). V0's whole-model graphs: Llama-3.2-1B logged 0.21 GiB for 35 graphs of 16 layers
# (vLLM PR #11349). Cost is per kernel, so an MoE layer (router GEMM, top-k, align/sort, two grouped GEMMs,
# activation, sum: about 15 kernels against a dense layer's 10) weighs MOE_LAYER_GRAPH_WEIGHT of a dense one.
CUDAGRAPH_BYTES_PER_GRAPH_LAYER = 0.16 * MIB
V0_CUDAGRAPH_BYTES_PER_GRAPH_LAYER = 0.36 * MIB
MOE_LAYER_GRAPH_WEIGHT = 1.5


def pad_vocab(vocab: int) -> int:
    return -(-vocab // VOCAB_PADDING) * VOCAB_PADDING


def pp_layer_split(layers: int, pp: int) -> list[range]:
    """Layer ranges per pipeline stage the way vLLM splits them (extra layers go to the middle stages)."""
    per = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        per[-i] += 1
    ranges, start = [], 0
    for count in per:
        ranges.append(range(start, start + count))
        start += count
    return ranges


def cudagraph_capture_sizes(max_num_seqs: int) -> list[int]:
    """Batch sizes vLLM captures by default: 1, 2, 4, then steps of 8 up to 256 and 16 beyond, up to 512."""
    top = min(max_num_seqs * 2, 512)
    sizes = [s for s in (1, 2, 4) if s <= top]
    sizes += list(range(8, min(top, 256) + 1, 8))
    sizes += list(range(272, top + 1, 16))
    return sizes


def capture_plan(dep: Deployment, traits: EngineTraits) -> tuple[list[int], list[int]]:
    """(piecewise sizes, full-graph sizes) one rank captures, by engine version.

    V0 captured one full graph per batch size up to min(max_num_seqs, 256). V1 before 0.11 captured piecewise
    graphs (attention left eager) for 1, 2, 4, 8..512 up to max_num_batched_tokens; from 0.11 the sizes stop at
    2 x max_num_seqs (16-steps past 256) and FULL_AND_PIECEWISE adds full decode graphs up to max_num_seqs.
    ``--compilation-config '{"cudagraph_capture_sizes": [...]}'`` replaces the list.
    """
    if dep.enforce_eager or dep.device != "cuda":
        return [], []
    if not traits.v1:
        pool = [1, 2, 4] + list(range(8, 257, 8))
        return [], [s for s in pool if s <= min(dep.max_num_seqs, 256)] or [1]
    if dep.capture_sizes:
        sizes = sorted(set(dep.capture_sizes))
    elif traits.version < (0, 11, 0):
        sizes = [1, 2, 4] + list(range(8, 513, 8))
    else:
        sizes = cudagraph_capture_sizes(dep.max_num_seqs)
    sizes = [s for s in sizes if s <= dep.max_num_batched_tokens] or [1]
    full = [s for s in sizes if s <= dep.max_num_seqs] if traits.version >= (0, 11, 0) else []
    return sizes, full


@dataclass(frozen=True)
class Deployment:
    """How one replica is laid out and configured; everything the memory model takes besides the model."""

    tp: int
    pp: int
    dtype: str  # float16 | bfloat16 | float32
    kv_cache_dtype: str  # auto | fp8 | fp8_e4m3 | fp8_e5m2 | float16 | bfloat16
    gpu_memory_bytes: int
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    enforce_eager: bool
    custom_all_reduce: bool
    block_size: int = 16
    kv_cache_memory_bytes: int | None = None  # explicit cache size: profiling no longer decides it
    device: str = "cuda"
    other_bytes: int = 0  # what other processes hold on each GPU when vLLM starts (a desktop, another instance)
    capture_sizes: tuple[int, ...] | None = None  # --compilation-config cudagraph_capture_sizes
    cudagraph_estimate: bool | None = None  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS; None = the version's default


@dataclass(frozen=True)
class RankMemory:
    """One rank's budget; the rank with the smallest KV cache decides for the whole replica."""

    pp_rank: int
    layers: int
    requested_bytes: int
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    kv_bytes: int  # what is left for the KV cache (negative: does not load or profile)
    num_blocks: int
    kv_bytes_per_token: int  # this rank's layers, one token
    blocks_per_request_fixed: int  # blocks a request holds in sliding-window groups regardless of its length
    full_groups: int
    kv_groups: int
    graphs_after_kv_bytes: int = 0  # CUDA graph memory captured after the KV cache, outside the profiled budget
    headroom_bytes: int = 0  # total - requested - CUDA context (when outside the budget) - other processes

    @property
    def startup_refused(self) -> bool:
        """vLLM (V1 0.10+) refuses to start when free memory is below total x utilization."""
        return self.headroom_bytes < 0

    @property
    def oom_after_profile(self) -> bool:
        """Loads and sizes its KV cache, then runs out of memory capturing CUDA graphs."""
        return not self.startup_refused and self.graphs_after_kv_bytes > self.headroom_bytes


def kv_bytes_per_token_layer(spec: ModelSpec, tp: int, kv_dtype_bytes: float) -> float:
    """One token of one layer on one rank: K and V per local KV head, or MLA's single latent vector."""
    if spec.is_mla:
        return (spec.kv_lora_rank + spec.qk_rope_head_dim) * kv_dtype_bytes
    kv_heads = max(1, spec.num_kv_heads // tp)
    return 2 * kv_heads * spec.head_dim * kv_dtype_bytes


def _shard_fraction(spec: ModelSpec, part: WeightPart, tp: int) -> float:
    if part.shard == "tp":
        return 1 / tp
    if part.shard == "vocab":
        return (pad_vocab(spec.vocab_size) / tp) / spec.vocab_size
    if part.shard == "kv":
        return max(1, spec.num_kv_heads // tp) / spec.num_kv_heads
    return 1.0


def weights_on_rank(spec: ModelSpec, dep: Deployment, pp_rank: int) -> int:
    """Bytes of weights one rank loads: its share of every part, with exact checkpoint bytes when known."""
    dtype_bytes = DTYPE_BYTES[dep.dtype]
    stage = pp_layer_split(spec.num_layers, dep.pp)[pp_rank]
    n_moe_total = max(1, sum(spec.moe_layers))
    n_moe_here = sum(spec.moe_layers[i] for i in stage)
    first, last = pp_rank == 0, pp_rank == dep.pp - 1
    total = 0.0
    for part in spec.parts:
        if part.where == "first" and not first:
            continue
        if part.where == "last" and not last:
            continue
        share = _shard_fraction(spec, part, dep.tp)
        if part.where == "layer":
            share *= (n_moe_here / n_moe_total) if part.moe else len(stage) / spec.num_layers
        total += part.params * param_bytes(spec, part, dtype_bytes) * share
    if spec.tie_word_embeddings and dep.pp > 1 and last:
        embed = next(p for p in spec.parts if p.name == "embed_tokens")
        total += embed.params * dtype_bytes * _shard_fraction(spec, embed, dep.tp)
    if spec.weight_bytes:
        # The config count reproduces published checkpoints; where it is off, trust the checkpoint's bytes.
        counted = spec.checkpoint_bytes_counted()
        ratio = spec.weight_bytes / counted if counted else 1.0
        if 0.5 < ratio < 2.0:
            total *= ratio
    return int(total)


def activation_peak(spec: ModelSpec, dep: Deployment, traits: EngineTraits, last_stage: bool) -> int:
    """Torch peak above the weights during the profiling run (forward pass, then the dummy sampler)."""
    tokens = dep.max_num_batched_tokens
    act = DTYPE_BYTES[dep.dtype]
    h, tp = spec.hidden_size, dep.tp
    residual = 2 * h  # residual stream + normalized input live across every sub-layer
    if spec.is_mla:
        attn = residual + 2 * (spec.num_attention_heads // tp) * (spec.head_dim + spec.qk_rope_head_dim) * 2
    else:
        q = spec.num_attention_heads // tp * spec.head_dim
        kv = max(1, spec.num_kv_heads // tp) * spec.head_dim
        attn = residual + 2 * q + 2 * kv
    mlp = residual + 3 * (spec.intermediate_size // tp) if spec.intermediate_size and not all(spec.moe_layers) else 0
    moe = 0.0
    if spec.is_moe:
        chunk = min(tokens, FUSED_MOE_CHUNK) / tokens
        mi = spec.moe_intermediate_size // tp
        moe = residual + spec.num_experts * 2 + chunk * spec.experts_per_token * (3 * mi + h)
        moe += 3 * (spec.shared_expert_intermediate_size // tp)
    forward = tokens * act * max(attn, mlp, moe)
    if not last_stage:
        return int(forward)
    rows = min(dep.max_num_seqs, tokens)
    sampler = tokens * h * act + rows * pad_vocab(spec.vocab_size) * traits.sampler_bytes_per_logit
    return int(max(forward, sampler))


def non_torch(dep: Deployment, traits: EngineTraits) -> int:
    world = dep.tp * dep.pp
    total = NCCL_BUFFERS if world > 1 else SINGLE_GPU_NON_TORCH
    if dep.tp > 1 and dep.custom_all_reduce:
        total += CUSTOM_ALL_REDUCE_BUFFERS
    if traits.non_torch_includes_context:
        total += CUDA_CONTEXT
    return int(total)


def cudagraph_memory(spec: ModelSpec, dep: Deployment, layers_here: int, traits: EngineTraits | None = None) -> int:
    """CUDA graph memory of one rank: a per-graph cost for every layer each graph spans, plus the shared pool.

    Graphs are captured largest first into one private pool, and each piece's outputs are weak references, so
    the pool holds about one layer's activations of the largest batch (residual stream, the MLP or fused-MoE
    intermediates); every instantiated graph keeps its own nodes.
    """
    if traits is None:
        piecewise, full = cudagraph_capture_sizes(dep.max_num_seqs), []
    else:
        piecewise, full = capture_plan(dep, traits)
    if not piecewise and not full:
        return 0
    moe_share = sum(spec.moe_layers) / spec.num_layers
    weight = layers_here * (1 + (MOE_LAYER_GRAPH_WEIGHT - 1) * moe_share)
    largest = max(piecewise + full)
    h = spec.hidden_size
    inter = max(spec.intermediate_size, spec.experts_per_token * spec.moe_intermediate_size)
    per_token = 2 * h + 3 * inter // dep.tp
    if spec.is_moe:
        per_token += spec.experts_per_token * h  # fused_moe's third cache: top-k rows of hidden width
    pool = largest * DTYPE_BYTES[dep.dtype] * per_token
    per_graph_layer = V0_CUDAGRAPH_BYTES_PER_GRAPH_LAYER if traits is not None and not traits.v1 else None
    per_graph_layer = per_graph_layer or CUDAGRAPH_BYTES_PER_GRAPH_LAYER
    return int((len(piecewise) + len(full)) * weight * per_graph_layer + pool)


def cudagraphs_reserved(dep: Deployment, traits: EngineTraits) -> bool:
    """Whether the profile subtracts the graph estimate before sizing the KV cache (default from 0.21)."""
    if dep.cudagraph_estimate is not None:
        return traits.v1 and dep.cudagraph_estimate
    return traits.cudagraph_in_profile


def headroom(dep: Deployment, traits: EngineTraits) -> int:
    """Memory outside the budget once the KV cache is allocated: what post-profile allocations must fit."""
    outside = dep.gpu_memory_bytes - int(dep.gpu_memory_bytes * dep.gpu_memory_utilization) - dep.other_bytes
    if not traits.non_torch_includes_context:
        outside -= CUDA_CONTEXT  # created before vLLM's first snapshot, so never inside its accounting
    return int(outside)


def kv_dtype_bytes(dep: Deployment) -> float:
    if dep.kv_cache_dtype == "auto":
        return DTYPE_BYTES[dep.dtype]
    return DTYPE_BYTES[dep.kv_cache_dtype]


def rank_memory(spec: ModelSpec, dep: Deployment, traits: EngineTraits, pp_rank: int) -> RankMemory:
    stage = pp_layer_split(spec.num_layers, dep.pp)[pp_rank]
    last = pp_rank == dep.pp - 1
    requested = int(dep.gpu_memory_bytes * dep.gpu_memory_utilization)
    weights = weights_on_rank(spec, dep, pp_rank)
    if dep.kv_cache_memory_bytes is not None:
        activation = activation_peak(spec, dep, traits, last)
        other = non_torch(dep, traits) if dep.device == "cuda" else 0
        graphs = 0
        kv = dep.kv_cache_memory_bytes
    else:
        activation = activation_peak(spec, dep, traits, last)
        other = non_torch(dep, traits)
        graphs = 0
        if cudagraphs_reserved(dep, traits) and not dep.enforce_eager:
            graphs = cudagraph_memory(spec, dep, len(stage), traits)
        kv = requested - weights - activation - other - graphs
    after = 0
    outside = headroom(dep, traits)
    if dep.device == "cuda" and not graphs:
        after = cudagraph_memory(spec, dep, len(stage), traits)
    if dep.kv_cache_memory_bytes is not None:
        # An explicit cache size ignores the utilization: what is left is the card minus everything allocated.
        outside = dep.gpu_memory_bytes - weights - activation - other - kv - dep.other_bytes
        outside -= 0 if traits.non_torch_includes_context else int(CUDA_CONTEXT)

    per_layer = kv_bytes_per_token_layer(spec, dep.tp, kv_dtype_bytes(dep))
    kinds = [spec.layer_attention[i] for i in stage]
    hybrid = traits.hybrid_kv and spec.sliding_window is not None and "sliding" in kinds
    n_full = kinds.count("full") if hybrid else len(kinds)
    n_slide = kinds.count("sliding") if hybrid else 0
    if n_full and n_slide:
        group = min(n_full, n_slide)
    else:
        group = max(n_full, n_slide, 1)
    full_groups = math.ceil(n_full / group) if n_full else 0
    slide_groups = math.ceil(n_slide / group) if n_slide else 0
    page = dep.block_size * per_layer
    blocks = int(kv // (page * group)) if kv > 0 else 0
    fixed = 0
    if slide_groups and spec.sliding_window:
        fixed = slide_groups * (math.ceil((spec.sliding_window - 1) / dep.block_size) + 1)
    return RankMemory(
        pp_rank=pp_rank,
        layers=len(stage),
        requested_bytes=requested,
        weights_bytes=weights,
        activation_bytes=activation,
        non_torch_bytes=other,
        cudagraph_bytes=graphs,
        kv_bytes=int(kv),
        num_blocks=blocks,
        kv_bytes_per_token=int(per_layer * len(stage)),
        blocks_per_request_fixed=fixed,
        full_groups=full_groups,
        kv_groups=max(1, full_groups + slide_groups),
        graphs_after_kv_bytes=after,
        headroom_bytes=outside if dep.device == "cuda" else 0,
    )


@dataclass(frozen=True)
class ReplicaMemory:
    """The replica's KV capacity: the tightest rank decides (vLLM uses the minimum block count)."""

    ranks: tuple[RankMemory, ...]
    block_size: int

    @property
    def tight(self) -> RankMemory:
        return min(self.ranks, key=lambda r: (r.num_blocks, r.kv_bytes))

    @property
    def num_blocks(self) -> int:
        return self.tight.num_blocks

    @property
    def kv_cache_tokens(self) -> int:
        """What vLLM logs as "GPU KV cache size: N tokens" (blocks per KV cache group x block size)."""
        rank = self.tight
        return rank.num_blocks // rank.kv_groups * self.block_size

    def blocks_for(self, max_model_len: int) -> int:
        """Blocks one request of ``max_model_len`` tokens holds across all KV cache groups."""
        rank = self.tight
        full = max(1, rank.full_groups) * math.ceil(max_model_len / self.block_size)
        if rank.full_groups == 0:
            return rank.blocks_per_request_fixed
        return full + rank.blocks_per_request_fixed

    def max_concurrency(self, max_model_len: int) -> float:
        need = self.blocks_for(max_model_len)
        return self.num_blocks / need if need else 0.0

    def max_model_len_fit(self) -> int:
        """Largest request length whose blocks fit the cache (vLLM's estimated maximum model length)."""
        rank = self.tight
        spare = rank.num_blocks - rank.blocks_per_request_fixed
        if spare <= 0:
            return 0
        if rank.full_groups == 0:
            return 1 << 40  # only windowed layers: any length fits once the windows do
        return spare // max(1, rank.full_groups) * self.block_size


def replica_memory(spec: ModelSpec, dep: Deployment, traits: EngineTraits) -> ReplicaMemory:
    ranks = tuple(rank_memory(spec, dep, traits, r) for r in range(dep.pp))
    return ReplicaMemory(ranks=ranks, block_size=dep.block_size)
