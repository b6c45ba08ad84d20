"""remote/gpu_metrics.py run as the timer runs it, with shims for nvidia-smi and journalctl printing
recorded-style output; its file is read back by `promtool check metrics` and parsed for values."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "remote" / "gpu_metrics.py"

# nvidia-smi --query-gpu=... --format=csv,noheader,nounits on a GeForce (no ECC: [N/A]) and an A100.
SMI = """0, GPU-6b2a4c1e-0f3d-4d7e-9a55-1c2b3d4e5f60, NVIDIA GeForce RTX 4090, 20123, 24564, 87, 64, [N/A]
1, GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9, NVIDIA A100-SXM4-80GB, 1, 81920, 57, 33, 2
"""
# journalctl -k -b -o cat -g 'NVRM: Xid': two Xid 79 on one card, one Xid 13 on the other.
XID = """NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.
NVRM: Xid (PCI:0000:86:00): 13, pid=4242, name=python3, Graphics Exception on (GPC 0, TPC 1)
"""


def _shim(path: Path, stdout: str, code: int = 0) -> str:
    (path.parent / f"{path.name}.out").write_text(stdout)
    path.write_text(f"#!/bin/sh\ncat {path}.out\nexit {code}\n")
    path.chmod(0o755)
    return str(path)


def _run(tmp: Path, smi: str | None, journal: str | None, journal_code: int = 0) -> str:
    out = tmp / "textfile"
    out.mkdir(exist_ok=True)
    env = {**os.environ,
           "NVIDIA_SMI": _shim(tmp / "nvidia-smi", smi) if smi is not None else str(tmp / "absent-smi"),
           "JOURNALCTL": _shim(tmp / "journalctl", journal, journal_code) if journal is not None
           else str(tmp / "absent-journalctl")}
    result = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["vllm_gpu.prom"], "no temporary file is left behind"
    return (out / "vllm_gpu.prom").read_text()


def _samples(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def _promtool_accepts(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (scripts/controller-tools.sh unpacks it)")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_gpus_and_xid_lines_become_valid_exposition_with_the_right_values(tmp_path: Path) -> None:
    text = _run(tmp_path, SMI, XID)
    _promtool_accepts(text)
    got = _samples(text)
    g0 = 'gpu="0",uuid="GPU-6b2a4c1e-0f3d-4d7e-9a55-1c2b3d4e5f60",name="NVIDIA GeForce RTX 4090"'
    g1 = 'gpu="1",uuid="GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",name="NVIDIA A100-SXM4-80GB"'
    assert got["vllm_gpu_metrics_up"] == 1 and got["vllm_gpu_xid_log_readable"] == 1
    assert got[f"vllm_gpu_memory_used_bytes{{{g0}}}"] == 20123 * 2**20
    assert got[f"vllm_gpu_memory_total_bytes{{{g1}}}"] == 81920 * 2**20
    assert "vllm_gpu_memory_total_bytes{" + g1 + "} 85899345920\n" in text, "bytes written in full, not 8.59e+10"
    assert got[f"vllm_gpu_utilization_ratio{{{g0}}}"] == 0.87 and got[f"vllm_gpu_utilization_ratio{{{g1}}}"] == 0.57
    assert got[f"vllm_gpu_temperature_celsius{{{g0}}}"] == 64
    assert got[f"vllm_gpu_ecc_errors_uncorrected{{{g1}}}"] == 2
    assert not any(k.startswith("vllm_gpu_ecc_errors_uncorrected{gpu=\"0\"") for k in got), "[N/A]: no sample"
    assert got["vllm_gpu_xid_errors_total"] == 3
    assert got['vllm_gpu_xid_errors_by_code_total{pci="0000:3b:00",xid="79"}'] == 2
    assert got['vllm_gpu_xid_errors_by_code_total{pci="0000:86:00",xid="13"}'] == 1


def test_no_xid_lines_count_zero_and_a_failing_nvidia_smi_says_so(tmp_path: Path) -> None:
    # journalctl -g exits 1 when nothing matches: zero Xid errors, not an unreadable log.
    text = _run(tmp_path, None, "", journal_code=1)
    _promtool_accepts(text)
    got = _samples(text)
    assert got["vllm_gpu_metrics_up"] == 0 and got["vllm_gpu_xid_errors_total"] == 0
    assert got["vllm_gpu_xid_log_readable"] == 1
    assert not any(k.startswith("vllm_gpu_memory") for k in got)


def test_an_unreadable_kernel_log_leaves_the_xid_counter_out(tmp_path: Path) -> None:
    text = _run(tmp_path, SMI, None)
    _promtool_accepts(text)
    got = _samples(text)
    assert got["vllm_gpu_xid_log_readable"] == 0 and "vllm_gpu_xid_errors_total" not in got
    assert got["vllm_gpu_metrics_up"] == 1
