"""remote/vllm_serve.py with the real vLLM CPU build: the multi-node flags parse as `vllm serve` parses them.

Two nodes serving one model through it run on real lab hosts: tests/e2e/operate/test_4_cluster.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.vllm_cpu.realparser import require_controller_python, vllm_env

pytestmark = pytest.mark.vllm

LAUNCHER = Path(__file__).resolve().parents[2] / "remote" / "vllm_serve.py"


def test_help_lists_the_multinode_flags(tmp_path: Path) -> None:
    python = require_controller_python()
    proc = subprocess.run([str(python), str(LAUNCHER), "--help"], env=vllm_env(tmp_path), capture_output=True,
                          text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in ("--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless"):
        assert flag in proc.stdout, f"{flag} missing from the serve parser's help"


def test_a_bad_flag_is_refused_as_vllm_serve_refuses_it(tmp_path: Path) -> None:
    python = require_controller_python()
    proc = subprocess.run([str(python), str(LAUNCHER), "--model", "/nowhere", "--nnodes", "two"],
                          env=vllm_env(tmp_path), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 2 and "--nnodes" in proc.stderr
