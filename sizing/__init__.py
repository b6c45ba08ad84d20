"""Capacity model of vLLM: will a model fit on given GPUs, with which settings, and why.

Pure Python and offline: it reads a model's config.json (from the catalog or a local directory) and applies
vLLM's own startup accounting, so a plan can be explained before anything is downloaded or deployed.
"""

from sizing.errors import SizingError
from sizing.fit import FitRequest, FitResult, fit
from sizing.model import ModelSpec, model_from_config, model_from_dir, resolve_model
from sizing.versions import PINNED_VLLM_VERSION, check_extra_args, filter_args_for_version, flag_problem

__all__ = [
    "PINNED_VLLM_VERSION",
    "FitRequest",
    "FitResult",
    "ModelSpec",
    "SizingError",
    "check_extra_args",
    "filter_args_for_version",
    "flag_problem",
    "fit",
    "model_from_config",
    "model_from_dir",
    "resolve_model",
]
