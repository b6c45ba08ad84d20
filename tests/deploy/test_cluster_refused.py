"""A `vllm_cluster` inventory through the real pyinfra CLI on @fake hosts: planned, printed, and stopped
before any change (the stages that bring a cluster up are not built yet); a mismatch is named per field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fakehosts import PROFILES_DIR

ROOT = Path(__file__).resolve().parents[2]
PROFILE = "4090-x2-ubuntu2204"


def _run(tmp: Path, a: dict[str, Any], b: dict[str, Any]) -> tuple[subprocess.CompletedProcess, Path]:
    common = {"model": "Qwen/Qwen3-8B", "vllm_cluster": "r1", "vllm_api_key_file": str(tmp / "key")}
    lines = ["import sys", f"sys.path.insert(0, {str(PROFILES_DIR.parent.parent.parent)!r})",
             "from tests.fakehosts import fake_host_data", "hosts = ["]
    for name, extra in (("gpu-a", {**common, **a}), ("gpu-b", {**common, **b})):
        lines.append(f"    ('@fake/{name}', fake_host_data({PROFILE!r}, 'converged', {extra!r})),")
    (tmp / "inventory.py").write_text("\n".join([*lines, "]"]) + "\n")
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp / "out"),
                           str(tmp / "inventory.py"), "deploy.py", "-y"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, tmp / "out"


def _changed_nothing(out: Path) -> None:
    uploaded = [p for p in out.rglob("*") if p.is_file() and p.name != "commands.txt"]
    assert uploaded == [], uploaded


def test_a_cluster_is_planned_and_printed_then_stopped_before_any_change(tmp_path: Path) -> None:
    proc, out = _run(tmp_path, {"vllm_cluster_head": True, "vllm_cluster_address": "10.0.0.11"},
                     {"vllm_cluster_address": "10.0.0.12"})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "cluster r1: 2 nodes, head @fake/gpu-a (10.0.0.11:29500), vLLM multi-node executor" in output, output[-4000:]
    assert "rank 1  @fake/gpu-b (headless)" in output
    assert "deploying a multi-node instance is not built yet; nothing was changed" in output
    _changed_nothing(out)


def test_members_that_disagree_are_refused_with_each_field_named(tmp_path: Path) -> None:
    proc, out = _run(tmp_path, {"vllm_cluster_head": True, "vllm_version": "0.31.0"},
                     {"vllm_cluster_head": True, "vllm_port": 8100})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "vllm_cluster_head: cluster 'r1' has 2 heads (@fake/gpu-a, @fake/gpu-b)" in output, output[-4000:]
    assert ("vllm_version: differs between the members of cluster 'r1' (@fake/gpu-a: '0.31.0', "
            "@fake/gpu-b: '0.32.0')") in output
    assert "vllm_port: differs between the members of cluster 'r1' (@fake/gpu-a: 8000, @fake/gpu-b: 8100)" in output
    assert "not built yet" not in output
    _changed_nothing(out)
