#!/usr/bin/env python3
"""GPU metrics for node exporter's textfile collector, from nvidia-smi and the kernel log (runs on the host).

Why nvidia-smi and not DCGM: it ships with every NVIDIA driver, answers on GeForce cards (which
DCGM does not support), needs no extra repository, and reads the same whichever runtime (venv,
conda, docker) serves the model. A systemd timer runs this every scrape interval; the file is
replaced atomically (temporary file + rename), so node exporter never reads half of it.

Usage: gpu_metrics.py TEXTFILE_DIR. Stdlib only. NVIDIA_SMI and JOURNALCTL name the commands (tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

QUERY = ("index", "uuid", "name", "memory.used", "memory.total", "utilization.gpu", "temperature.gpu",
         "ecc.errors.uncorrected.volatile.total")
OUTPUT = "vllm_gpu.prom"
XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f:.]+)\): (\d+)")
MIB = 1024 * 1024


def _escape(value: str) -> str:
    """A label value of the text exposition format: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(text: str) -> float | None:
    """A field of nvidia-smi's CSV; None for [N/A], [Not Supported], [Unknown Error] and the like."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def _value(value: float) -> str:
    """A sample value exactly: integers in full (memory in bytes exceeds %g's six digits)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def run(argv: list[str], timeout: float = 20) -> tuple[int, str]:
    """(exit status, stdout) of a command; 127 when it is not installed, 124 when it hangs."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, ""
    except subprocess.TimeoutExpired:
        return 124, ""
    return proc.returncode, proc.stdout


def gpu_rows(smi: str) -> list[dict[str, str]] | None:
    """One dict per GPU from nvidia-smi's CSV, or None when nvidia-smi fails."""
    code, out = run([smi, f"--query-gpu={','.join(QUERY)}", "--format=csv,noheader,nounits"])
    if code != 0:
        return None
    rows = []
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < len(QUERY):
            continue
        # A name with a comma in it: everything between uuid and the five numbers.
        extra = len(fields) - len(QUERY)
        fields = fields[:2] + [", ".join(fields[2:3 + extra])] + fields[3 + extra:]
        rows.append(dict(zip(QUERY, fields, strict=True)))
    return rows


def xid_counts(journalctl: str) -> dict[tuple[str, str], int] | None:
    """Xid lines of the kernel log since boot, per (PCI address, Xid code); None when the log is unreadable."""
    code, out = run([journalctl, "-k", "-b", "--no-pager", "-o", "cat", "-g", "NVRM: Xid"])
    # journalctl exits 1 when nothing matches; anything else (or no journalctl) means we cannot tell.
    if code not in (0, 1):
        return None
    counts: dict[tuple[str, str], int] = {}
    for match in XID.finditer(out):
        key = (match.group(1), match.group(2))
        counts[key] = counts.get(key, 0) + 1
    return counts


def exposition(rows: list[dict[str, str]] | None, xids: dict[tuple[str, str], int] | None, now: float) -> str:
    """The text exposition of one run: every family with HELP and TYPE, samples grouped under it."""
    families: list[tuple[str, str, str, list[tuple[str, float]]]] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        families.append((name, kind, help_text, samples))

    family("vllm_gpu_metrics_up", "gauge", "1 when nvidia-smi answered on the last run",
           [("", 0 if rows is None else 1)])
    family("vllm_gpu_metrics_last_run_timestamp_seconds", "gauge", "when the GPU metrics were last written",
           [("", round(now, 3))])
    per_gpu = (
        # (name, column, multiplier, divisor, help)
        ("vllm_gpu_memory_used_bytes", "memory.used", MIB, 1, "GPU memory in use (nvidia-smi memory.used)"),
        ("vllm_gpu_memory_total_bytes", "memory.total", MIB, 1, "GPU memory (nvidia-smi memory.total)"),
        ("vllm_gpu_utilization_ratio", "utilization.gpu", 1, 100, "share of time a kernel ran (utilization.gpu)"),
        ("vllm_gpu_temperature_celsius", "temperature.gpu", 1, 1, "GPU core temperature"),
        ("vllm_gpu_ecc_errors_uncorrected", "ecc.errors.uncorrected.volatile.total", 1, 1,
         "uncorrected ECC errors since the driver loaded (absent where the GPU has no ECC)"),
    )
    for name, column, multiplier, divisor, help_text in per_gpu:
        samples = []
        for row in rows or []:
            value = _number(row[column])
            if value is not None:
                labels = f'gpu="{_escape(row["index"])}",uuid="{_escape(row["uuid"])}",name="{_escape(row["name"])}"'
                samples.append((labels, value * multiplier / divisor))
        family(name, "gauge", help_text, samples)
    if xids is not None:
        family("vllm_gpu_xid_errors_total", "counter", "NVRM Xid lines in the kernel log since boot",
               [("", sum(xids.values()))])
        family("vllm_gpu_xid_errors_by_code_total", "counter", "NVRM Xid lines since boot, per PCI address and code",
               [(f'pci="{_escape(pci)}",xid="{_escape(code)}"', n) for (pci, code), n in sorted(xids.items())])
    family("vllm_gpu_xid_log_readable", "gauge", "1 when the kernel log could be searched for Xid errors",
           [("", 0 if xids is None else 1)])
    lines = []
    for name, kind, help_text, samples in families:
        if not samples:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{{{labels}}} {_value(value)}" if labels else f"{name} {_value(value)}"
                  for labels, value in samples]
    return "\n".join(lines) + "\n"


def write_atomically(directory: str, text: str) -> str:
    """Replace DIRECTORY/vllm_gpu.prom in one rename; node exporter skips the temporary (not *.prom) name."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vllm_gpu.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        target = os.path.join(directory, OUTPUT)
        os.replace(tmp, target)
        return target
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gpu_metrics.py TEXTFILE_DIR", file=sys.stderr)
        return 2
    rows = gpu_rows(os.environ.get("NVIDIA_SMI", "nvidia-smi"))
    xids = xid_counts(os.environ.get("JOURNALCTL", "journalctl"))
    write_atomically(argv[1], exposition(rows, xids, time.time()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
