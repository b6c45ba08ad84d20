"""Does a model's downloaded config.json change what the plan rendered? Pure, like the rest of plan/.

A hub model that is not on the host at plan time is sized from the sizing
catalog. Once the download is there its config.json is what the next run plans
from, so the model stage re-sizes every instance that serves it and compares the
decisions the unit renders. A difference stops the host before its services are
(re)started: the unit files of this run were rendered from the old plan, and
starting vLLM with a context length or parallel layout the real model refuses is
what the plan exists to prevent. Re-rendering inside the same run would mean
re-planning the host (ports, GPU sharing, gateway) in the middle of applying it;
running the deploy again does exactly that from the real config.json, and the
download is not repeated (its completion marker is written before this check).
"""

from __future__ import annotations

from typing import Any

from facts.model import HostFacts
from plan.service import PlanError, ServicePlan, fit_with_model_config
from plan.settings import Settings

# Sizing decisions that end up in the unit's command line: (key of ServicePlan.sizing, how it is named).
RENDERED_DECISIONS: tuple[tuple[str, str], ...] = (
    ("tensor_parallel_size", "tensor parallel size"),
    ("pipeline_parallel_size", "pipeline parallel size"),
    ("dtype", "dtype"),
    ("quantization", "quantization"),
    ("kv_cache_dtype", "KV cache dtype"),
    ("max_model_len", "max model len"),
    ("gpu_memory_utilization", "gpu memory utilization"),
    ("max_num_seqs", "max num seqs"),
    ("max_num_batched_tokens", "max num batched tokens"),
    ("enforce_eager", "enforce eager"),
    ("disable_custom_all_reduce", "disable custom all-reduce"),
)


def _same(planned: Any, now: Any) -> bool:
    if isinstance(planned, float) or isinstance(now, float):
        return planned is not None and now is not None and round(float(planned), 4) == round(float(now), 4)
    return planned == now


def plan_changes(planned: ServicePlan, settings: Settings, facts: HostFacts, config: dict[str, Any]) -> list[str]:
    """Each rendered decision of `planned` that sizing from `config` changes, as 'name: old -> new'.

    An empty list means the unit this run rendered is the one the next run would render.
    """
    try:
        fit = fit_with_model_config(settings, facts, config, planned.gpus)
    except PlanError as error:
        return [f"it cannot be sized from its config.json: {error}"]
    if not fit.fits:
        return [f"it no longer fits ({fit.outcome}): " + "; ".join(fit.reasons)]
    changes = [f"{label}: {planned.sizing.get(key)} -> {getattr(fit, key)}"
               for key, label in RENDERED_DECISIONS if not _same(planned.sizing.get(key), getattr(fit, key))]
    if not changes and list(planned.sizing.get("vllm_args") or []) != list(fit.vllm_args):
        changes.append(f"vLLM flags: {' '.join(planned.sizing.get('vllm_args') or [])} -> {' '.join(fit.vllm_args)}")
    return changes


def replan_message(host: str, model: str, changes: dict[str, list[str]]) -> str:
    """The host's failure: per instance what changed, and what to do (run the deploy again)."""
    lines = [f"{host}: the downloaded config.json of {model} changes the plan made before the download (from "
             "the catalog); the services were not (re)started:"]
    for unit, items in changes.items():
        lines += [f"  {unit}: {item}" for item in items]
    lines.append("Run the deploy again: it plans from the downloaded config.json (the download is complete and "
                 "is not repeated).")
    return "\n".join(lines)
