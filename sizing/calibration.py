"""Calibration: what vLLM itself reported at start-up, beside what the plan predicted.

A prediction nobody checks drifts silently. After each verified start the deploy reads vLLM's own
memory lines from the unit's journal, compares them with the plan's sizing and appends one JSON
line per start to a file on the controller; `python -m sizing calibration` summarises that file.
Everything here is pure except the small file helpers at the end (the deploy only fetches text).

Lines parsed (as logged by the vLLM versions named):
  V1 GPU   `Model loading took 15.27 GiB memory and 4.2 seconds` (older: `... took 14.9889 GiB and ...`),
           `Available KV cache memory: 14.49 GiB`,
           `GPU KV cache size: 422,016 tokens, Maximum concurrency for 65,536 tokens per request: 6.44x`
           (0.32 logs both on one line; earlier V1 logged them on two).
  V0 GPU   `model weights take 3.85GiB; ... the rest of the memory reserved for KV Cache is 14.49GiB.`,
           `# GPU blocks: 26432, # CPU blocks: ...`, `Maximum concurrency for 32768 tokens per request: 5.73x`.
  CPU 0.32 `Explicitly set (0.06/21.34) GiB for KV cache on node 0.` (or `Auto set (...)`),
           `CPU KV cache size: 65,536 tokens, Maximum concurrency for 1,024 tokens per request: 64.00x`,
           `Checkpoint size: 0.00 GiB` (the CPU build logs no loaded-weights memory: the checkpoint's size
           on disk is its nearest figure).
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WARN_PERCENT = 5.0
FIGURES = ("weights_gib", "kv_cache_gib", "kv_cache_tokens", "max_concurrency")
LABELS = {"weights_gib": "weights GiB", "kv_cache_gib": "KV cache GiB", "kv_cache_tokens": "KV cache tokens",
          "max_concurrency": "max concurrency"}

_NUM = r"(\d[\d,]*(?:\.\d+)?)"
_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "weights_gib": (
        re.compile(rf"Model loading took {_NUM} ?GiB"),
        re.compile(rf"model weights take {_NUM} ?GiB"),
        re.compile(rf"Checkpoint size: {_NUM} ?GiB"),
    ),
    "kv_cache_gib": (
        re.compile(rf"Available KV cache memory: {_NUM} ?GiB"),
        re.compile(rf"reserved for KV Cache is {_NUM} ?GiB"),
        re.compile(rf"(?:Explicitly|Auto) set \({_NUM}/[\d.]+\) ?GiB for KV cache"),
    ),
    "kv_cache_tokens": (re.compile(rf"(?:GPU|CPU|XPU|TPU)[\w +]* KV cache size: {_NUM} tokens"),),
    "max_concurrency": (re.compile(rf"Maximum concurrency for {_NUM} tokens per request: {_NUM}x"),),
}
_GPU_BLOCKS = re.compile(r"# GPU blocks: (\d+)")
_VERSION = re.compile(r"(?:version |V1 LLM engine \(v|LLM engine \(v)(\d+\.\d+\.\d+[\w.+]*)")
_WEIGHTS_SOURCE = {0: "loaded", 1: "loaded", 2: "checkpoint size on disk"}
# What the host's grep keeps: every line the parser reads, so little text crosses SSH.
JOURNAL_GREP = ("Model loading took|model weights take|Checkpoint size:|Available KV cache memory|"
                "reserved for KV Cache|set \\(.*GiB for KV cache|KV cache size:|# GPU blocks|"
                "Maximum concurrency for|version [0-9]|LLM engine \\(v")


@dataclass(frozen=True)
class Observed:
    """vLLM's own start-up figures (None = not logged); `decimals` is how precisely each was printed."""

    weights_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    concurrency_len: int | None = None
    vllm_version: str | None = None
    weights_source: str | None = None
    decimals: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in FIGURES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(text: str) -> tuple[float, int]:
    """'65,536' -> (65536.0, 0); '0.06' -> (0.06, 2): the value and its printed decimals."""
    plain = text.replace(",", "")
    return float(plain), len(plain.partition(".")[2])


def parse_journal(text: str, block_size: int = 16) -> Observed:
    """vLLM's figures from its start-up log (journal `-o cat` or a plain log); the first of each wins.

    With TP > 1 every worker logs its own lines; the first is rank 0's, per GPU as the plan predicts.
    V0 logs KV blocks, not tokens: tokens = blocks x `block_size`.
    """
    found: dict[str, Any] = {}
    decimals: dict[str, int] = {}
    source = None
    for name, patterns in _PATTERNS.items():
        for index, regex in enumerate(patterns):
            match = regex.search(text)
            if not match:
                continue
            if name == "max_concurrency":
                found["concurrency_len"] = int(_number(match.group(1))[0])
                found[name], decimals[name] = _number(match.group(2))
            else:
                found[name], decimals[name] = _number(match.group(1))
            if name == "weights_gib":
                source = _WEIGHTS_SOURCE[index]
            break
    if "kv_cache_tokens" in found:
        found["kv_cache_tokens"] = int(found["kv_cache_tokens"])
    elif blocks := _GPU_BLOCKS.search(text):
        found["kv_cache_tokens"], decimals["kv_cache_tokens"] = int(blocks.group(1)) * block_size, 0
    version = _VERSION.search(text)
    return Observed(**found, vllm_version=version.group(1) if version else None, weights_source=source,
                    decimals=decimals)


@dataclass(frozen=True)
class Comparison:
    """One figure, predicted vs observed; `error_percent` None when it cannot be computed."""

    figure: str
    predicted: float | None
    observed: float | None
    error_percent: float | None
    warn: bool
    note: str = ""


def compare(predicted: Mapping[str, Any], observed: Observed) -> list[Comparison]:
    """Each figure vLLM logged beside the plan's, with (observed - predicted) / predicted in %.

    A warning needs more than WARN_PERCENT and more than the log's own rounding can explain
    (0.0625 GiB is printed as 0.06, a 4 % "error" that is only the print).
    """
    rows = []
    for name in FIGURES:
        want, got = predicted.get(name), getattr(observed, name)
        if got is None or want is None:
            continue
        want = float(want)
        tolerance = 0.5 * 10 ** -observed.decimals.get(name, 6)
        if want == 0:
            rows.append(Comparison(name, want, got, None, False, "predicted 0"))
            continue
        error = (got - want) / want * 100
        note = "within the log's rounding" if got != want and abs(got - want) <= tolerance else ""
        if got == 0 and note:
            error, note = None, "below the log's precision"
        if name == "weights_gib" and observed.weights_source == "checkpoint size on disk":
            note = "; ".join(filter(None, [note, "observed = checkpoint on disk (the CPU build logs no load figure)"]))
        rows.append(Comparison(name, want, got, error, error is not None and abs(error) > WARN_PERCENT
                               and abs(got - want) > tolerance, note))
    return rows


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name == "kv_cache_tokens":
        return f"{value:,.0f}"
    if name == "max_concurrency":
        return f"{value:.2f}x"
    return f"{value:.4g}" if value < 0.1 else f"{value:.2f}"


def format_comparison(rows: Iterable[Comparison]) -> str:
    """The run output's table: figure, predicted, observed, error."""
    lines = [f"  {'figure':16} {'predicted':>12} {'observed':>12} {'error':>8}"]
    for row in rows:
        error = "-" if row.error_percent is None else f"{row.error_percent:+.1f}%"
        lines.append(f"  {LABELS[row.figure]:16} {_fmt(row.figure, row.predicted):>12} "
                     f"{_fmt(row.figure, row.observed):>12} {error:>8}"
                     + (f"  ({row.note})" if row.note else "") + ("  WARNING > 5%" if row.warn else ""))
    return "\n".join(lines)


def make_record(*, host: str, unit: str, invocation: str, gpu: str, model: str, revision: str | None,
                vllm_version: str, argv: Iterable[str], predicted: Mapping[str, Any], observed: Observed,
                time: str) -> dict[str, Any]:
    """One calibration line: who, what, with which flags, the plan's figures and vLLM's."""
    rows = compare(predicted, observed)
    return {
        "time": time, "host": host, "unit": unit, "invocation": invocation, "gpu": gpu, "model": model,
        "revision": revision, "vllm_version": observed.vllm_version or vllm_version, "argv": list(argv),
        "predicted": {name: predicted.get(name) for name in FIGURES},
        "observed": {name: getattr(observed, name) for name in FIGURES},
        "observed_detail": {"concurrency_len": observed.concurrency_len, "weights_source": observed.weights_source},
        "error_percent": {row.figure: row.error_percent for row in rows},
    }  # fmt: skip


# ----------------------------------------------------------------------------- the controller's file


def calibration_path(env: Mapping[str, str] | None = None) -> Path:
    """VLLM_DEPLOY_CALIBRATION, else $XDG_DATA_HOME/vllm-deploy/calibration.jsonl, else ~/.local/share/..."""
    env = os.environ if env is None else env
    if env.get("VLLM_DEPLOY_CALIBRATION"):
        return Path(env["VLLM_DEPLOY_CALIBRATION"]).expanduser()
    base = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else Path.home() / ".local" / "share"
    return base / "vllm-deploy" / "calibration.jsonl"


def load_records(path: Path) -> list[dict[str, Any]]:
    """Every record of the file; a line that is not a JSON object (a torn write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def append_record(path: Path, record: Mapping[str, Any]) -> bool:
    """Append one line, unless this start (host, unit, invocation) is already recorded: a verify.py re-check of
    the same process adds nothing. Returns whether a line was written."""
    key = (record.get("host"), record.get("unit"), record.get("invocation"))
    if record.get("invocation") and any((r.get("host"), r.get("unit"), r.get("invocation")) == key
                                        for r in load_records(path)):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return True


# ----------------------------------------------------------------------------- the CLI's table


def records_table(records: list[dict[str, Any]]) -> str:
    """One row per record: when, host, GPU, model, vLLM, then predicted/observed (error) per figure."""
    header = ["time", "host", "gpu", "model", "vLLM"] + [LABELS[f] + " pred/obs (err)" for f in FIGURES]
    rows = [header]
    for r in records:
        cells = [str(r.get("time", "-"))[:19], str(r.get("host", "-")), str(r.get("gpu", "-")),
                 str(r.get("model", "-")), str(r.get("vllm_version", "-"))]
        for name in FIGURES:
            want, got = (r.get("predicted") or {}).get(name), (r.get("observed") or {}).get(name)
            error = (r.get("error_percent") or {}).get(name)
            shown_error = "" if error is None else f" ({error:+.1f}%)"
            cells.append(f"{_fmt(name, want)}/{_fmt(name, got)}{shown_error}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def median_errors(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float | None]]:
    """Median absolute error in % per (GPU, vLLM version) and figure (None where no record has one)."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in records:
        key = (str(r.get("gpu", "-")), str(r.get("vllm_version", "-")))
        bucket = groups.setdefault(key, {name: [] for name in FIGURES})
        for name in FIGURES:
            error = (r.get("error_percent") or {}).get(name)
            if isinstance(error, int | float):
                bucket[name].append(abs(float(error)))
    return {key: {name: statistics.median(v) if v else None for name, v in errors.items()}
            for key, errors in sorted(groups.items())}


def summary_table(records: list[dict[str, Any]]) -> str:
    """The median absolute error per GPU and vLLM version, with how many starts each row is based on."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        key = (str(r.get("gpu", "-")), str(r.get("vllm_version", "-")))
        counts[key] = counts.get(key, 0) + 1
    header = ["gpu", "vLLM", "starts"] + [f"median |err| {LABELS[f]}" for f in FIGURES]
    rows = [header]
    for key, medians in median_errors(records).items():
        rows.append([key[0], key[1], str(counts[key])]
                    + ["-" if medians[f] is None else f"{medians[f]:.1f}%" for f in FIGURES])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
