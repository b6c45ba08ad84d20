"""The benchmark report: vLLM's per-level result files + what was measured -> report.json, report.md, plots.

The figures are vLLM's own (`vllm bench serve --save-result`), copied, never recomputed; this module
only picks them out, finds the highest concurrency that keeps both latency SLOs (p95 TTFT and p95
ITL), and draws them. A level with a failed request never meets the SLO: a fast error is no answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.command import METRICS, PERCENTILES

FORMAT = 1
METRIC_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2E latency"}


@dataclass(frozen=True)
class Slo:
    """The latency promised (vllm_slo_ttft_ms, vllm_slo_itl_ms), both at p95."""

    ttft_ms: float
    itl_ms: float


@dataclass(frozen=True)
class Level:
    """One concurrency level as vLLM measured it; latencies in ms: metric -> {"mean", "p50", "p95", "p99"}."""

    concurrency: int
    prompts: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    total_input_tokens: int
    total_output_tokens: int
    latency_ms: dict[str, dict[str, float]]

    def p(self, metric: str, percentile: int) -> float:
        """A percentile in ms (NaN when vLLM did not report it)."""
        return self.latency_ms.get(metric, {}).get(f"p{percentile}", math.nan)


def level_from_result(result: Mapping[str, Any]) -> Level:
    """A level from one `vllm bench serve` result file (its `max_concurrency` is the level)."""
    def number(key: str) -> float:
        value = result.get(key)
        return float(value) if isinstance(value, int | float) else math.nan

    latency = {}
    for metric in METRICS:
        figures = {"mean": number(f"mean_{metric}_ms")}
        figures |= {f"p{p}": number(f"p{p}_{metric}_ms") for p in PERCENTILES}
        latency[metric] = figures
    concurrency = result.get("max_concurrency")
    if not isinstance(concurrency, int):
        raise ValueError(f"result without max_concurrency (a sweep level): keys {sorted(result)[:12]}")
    return Level(concurrency=concurrency, prompts=int(result.get("num_prompts") or 0),
                 completed=int(result.get("completed") or 0), failed=int(result.get("failed") or 0),
                 duration_s=number("duration"), request_throughput=number("request_throughput"),
                 output_throughput=number("output_throughput"),
                 total_token_throughput=number("total_token_throughput"),
                 total_input_tokens=int(result.get("total_input_tokens") or 0),
                 total_output_tokens=int(result.get("total_output_tokens") or 0), latency_ms=latency)


def meets(level: Level, slo: Slo) -> bool:
    """Every request answered, p95 TTFT and p95 ITL within the SLO."""
    return (level.completed > 0 and level.failed == 0
            and level.p("ttft", 95) <= slo.ttft_ms and level.p("itl", 95) <= slo.itl_ms)


def best_level(levels: Iterable[Level], slo: Slo) -> Level | None:
    """The highest concurrency that meets the SLO, or None when no level does."""
    passing = [level for level in levels if meets(level, slo)]
    return max(passing, key=lambda level: level.concurrency) if passing else None


def verdict(levels: list[Level], slo: Slo) -> str:
    """One sentence: the capacity within the SLO, or that no level meets it and why (the lowest level's misses)."""
    rule = f"p95 TTFT <= {slo.ttft_ms:g} ms and p95 ITL <= {slo.itl_ms:g} ms, no failed request"
    best = best_level(levels, slo)
    if best is not None:
        return (f"Highest concurrency meeting the SLO ({rule}): **{best.concurrency}** "
                f"({best.request_throughput:.2f} req/s, {best.output_throughput:.1f} output tok/s, "
                f"p95 TTFT {best.p('ttft', 95):.0f} ms, p95 ITL {best.p('itl', 95):.1f} ms).")
    if not levels:
        return f"No level meets the SLO ({rule}): no level was measured."
    low = min(levels, key=lambda level: level.concurrency)
    misses = []
    if low.failed or not low.completed:
        misses.append(f"{low.failed} failed of {low.prompts}")
    if not low.p("ttft", 95) <= slo.ttft_ms:
        misses.append(f"p95 TTFT {low.p('ttft', 95):.0f} ms")
    if not low.p("itl", 95) <= slo.itl_ms:
        misses.append(f"p95 ITL {low.p('itl', 95):.1f} ms")
    return (f"**No level meets the SLO** ({rule}); even concurrency {low.concurrency} has "
            f"{', '.join(misses)}.")


def _ms(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def summary_table(levels: list[Level], slo: Slo) -> str:
    """Markdown: one row per level, latencies as p50 / p95 / p99."""
    head = ("| concurrency | prompts | completed | failed | req/s | output tok/s | total tok/s | "
            "TTFT ms p50 / p95 / p99 | ITL ms p50 / p95 / p99 | TPOT ms p95 | E2E ms p95 | SLO |")
    rows = [head, "|" + " --- |" * 12]
    for level in sorted(levels, key=lambda x: x.concurrency):
        def trio(metric: str, digits: int, level: Level = level) -> str:
            return " / ".join(_ms(level.p(metric, p), digits) for p in PERCENTILES)
        rows.append(
            f"| {level.concurrency} | {level.prompts} | {level.completed} | {level.failed} | "
            f"{level.request_throughput:.2f} | {level.output_throughput:.1f} | {level.total_token_throughput:.1f} | "
            f"{trio('ttft', 0)} | {trio('itl', 1)} | {_ms(level.p('tpot', 95), 1)} | {_ms(level.p('e2el', 95))} | "
            f"{'yes' if meets(level, slo) else 'no'} |")
    return "\n".join(rows)


def _target_words(inputs: Mapping[str, Any]) -> str:
    target = inputs.get("target") or {}
    if target.get("kind") == "gateway":
        return "through the gateway"
    return f"instance '{target.get('name', '?')}'" + (f" on {inputs['host']}" if inputs.get("host") else "")


def _line(label: str, value: Any) -> str | None:
    return f"- {label}: {value}" if value not in (None, "", [], {}) else None


def render_markdown(inputs: Mapping[str, Any], levels: list[Level], slo: Slo) -> str:
    """report.md: what was measured, the table, the verdict, the plots and the exact rerun command."""
    target = inputs.get("target") or {}
    model = inputs.get("model") or {}
    dataset = inputs.get("dataset") or {}
    vllm = inputs.get("vllm") or {}
    title = f"# vLLM benchmark of deployment '{inputs.get('deployment', '?')}': {_target_words(inputs)}"
    revision = f" @ {model['revision']}" if model.get("revision") else ""
    lines = [title, ""]
    details = [
        _line("when (UTC)", inputs.get("started_utc")),
        _line("target", f"{target.get('kind', '?')} `{target.get('url', '?')}` from host {inputs.get('host', '?')}"),
        _line("behind it", ", ".join(target.get("backends") or [])),
        _line("model", f"{model.get('name', '?')}{revision}, served as `{inputs.get('served_name', '?')}`"),
        _line("vLLM", ", ".join(f"{k} {v}" for k, v in vllm.items() if v)),
        _line("runtime / device", " / ".join(str(inputs[k]) for k in ("runtime", "device") if inputs.get(k))),
        _line("GPUs", ", ".join(f"{g.get('name')} ({g.get('memory_total_mib')} MiB)"
                                for g in inputs.get("gpus") or [])),
        _line("dataset", f"{dataset.get('name', '?')}: {dataset.get('input_len', '?')} input and "
                         f"{dataset.get('output_len', '?')} output tokens per request (EOS ignored)"),
        _line("SLO", f"p95 TTFT <= {slo.ttft_ms:g} ms, p95 ITL <= {slo.itl_ms:g} ms"),
    ]
    lines += [d for d in details if d]
    lines += ["", verdict(levels, slo), "", summary_table(levels, slo), "",
              "Throughput and latency against concurrency:", "",
              "![throughput](throughput.png)", "", "![latency](latency.png)", ""]
    command = inputs.get("rerun_command")
    if command:
        lines += ["Run it again with the same inputs:", "", "```", command, "```", ""]
    lines += ["Every input (instance flags, host facts) is in `report.json`; vLLM's own result files are in "
              "`results/`.", ""]
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(levels: list[Level], path: Path, title: str) -> Path:
    """Tokens/s (output, total) and requests/s against concurrency."""
    plt = _plt()
    ordered = sorted(levels, key=lambda x: x.concurrency)
    xs = [level.concurrency for level in ordered]
    fig, tokens = plt.subplots(figsize=(7, 4.5))
    tokens.plot(xs, [x.output_throughput for x in ordered], "o-", label="output tok/s")
    tokens.plot(xs, [x.total_token_throughput for x in ordered], "s--", label="total tok/s")
    tokens.set_xlabel("concurrency (max in-flight requests)")
    tokens.set_ylabel("tokens / s")
    requests = tokens.twinx()
    requests.plot(xs, [x.request_throughput for x in ordered], "^:", color="tab:green", label="requests/s")
    requests.set_ylabel("requests / s")
    _concurrency_axis(tokens, xs)
    handles = tokens.get_legend_handles_labels()[0] + requests.get_legend_handles_labels()[0]
    tokens.legend(handles, [h.get_label() for h in handles], loc="upper left")
    tokens.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(levels: list[Level], slo: Slo, path: Path, title: str) -> Path:
    """TTFT, ITL, TPOT and end-to-end latency (p50, p95, p99) against concurrency, SLOs as lines."""
    plt = _plt()
    ordered = sorted(levels, key=lambda x: x.concurrency)
    xs = [level.concurrency for level in ordered]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    limits = {"ttft": slo.ttft_ms, "itl": slo.itl_ms}
    for axis, metric in zip(axes.flat, METRICS, strict=True):
        for percentile, style in zip(PERCENTILES, ("o-", "s--", "^:"), strict=True):
            axis.plot(xs, [x.p(metric, percentile) for x in ordered], style, label=f"p{percentile}")
        if metric in limits:
            axis.axhline(limits[metric], color="tab:red", linewidth=1, label=f"SLO p95 {limits[metric]:g} ms")
        axis.set_title(METRIC_NAMES[metric])
        axis.set_ylabel("ms")
        axis.set_xlabel("concurrency")
        _concurrency_axis(axis, xs)
        axis.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _concurrency_axis(axis: Any, xs: list[int]) -> None:
    """Log-2 steps when the sweep doubles (1, 2, 4, ...), each level labelled."""
    if len(xs) > 2 and xs[-1] / max(xs[0], 1) >= 8:
        axis.set_xscale("log", base=2)
    axis.set_xticks(xs)
    axis.set_xticklabels([str(x) for x in xs])


def folder_name(deployment: str, started: datetime, host: str | None = None, instance: str | None = None) -> str:
    """`<deployment>-<UTC timestamp>`; an instance target adds its host and name (several hosts may have one)."""
    parts = [deployment] + ([host, instance] if instance else [])
    safe = ["".join(c if c.isalnum() or c in "._-" else "_" for c in str(p)) for p in parts]
    return "-".join([*safe, started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")])


def write_report(out: Path, inputs: Mapping[str, Any], results: Iterable[Mapping[str, Any]], slo: Slo) -> Path:
    """Write report.json, report.md, throughput.png, latency.png and results/c<N>.json into `out`."""
    results = list(results)
    levels = sorted((level_from_result(r) for r in results), key=lambda x: x.concurrency)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(exist_ok=True)
    for level, result in zip(levels, sorted(results, key=lambda r: r["max_concurrency"]), strict=True):
        (out / "results" / f"c{level.concurrency}.json").write_text(json.dumps(result, indent=1) + "\n")
    best = best_level(levels, slo)
    report = {
        "format": FORMAT,
        "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": dict(inputs),
        "slo": asdict(slo),
        "levels": [{**asdict(level), "meets_slo": meets(level, slo)} for level in levels],
        "best_concurrency": best.concurrency if best else None,
        "verdict": verdict(levels, slo).replace("**", ""),
    }
    (out / "report.json").write_text(json.dumps(_json_safe(report), indent=2, sort_keys=True, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(inputs, levels, slo))
    title = f"{inputs.get('deployment', '?')}: {_target_words(inputs)}, '{inputs.get('served_name', '?')}'"
    if levels:
        plot_throughput(levels, out / "throughput.png", title)
        plot_latency(levels, slo, out / "latency.png", title)
    return out


def _json_safe(value: Any) -> Any:
    """NaN (a figure vLLM did not report) as null: report.json stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def load_results(folder: Path) -> list[dict[str, Any]]:
    """vLLM result files (`c<N>.json`) of a folder, or of its `results/` (a report folder)."""
    source = folder / "results" if (folder / "results").is_dir() else folder
    found = sorted(source.glob("c*.json"))
    if not found:
        raise FileNotFoundError(f"no vLLM result files (c<N>.json) in {source}")
    return [json.loads(path.read_text()) for path in found]
