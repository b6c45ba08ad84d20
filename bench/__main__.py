"""`python -m bench report DIR`: rebuild a report from saved `vllm bench serve` result files.

DIR is a report folder (its results/ and report.json are read: the inputs and SLO are kept unless
overridden) or any folder of `c<N>.json` result files. Useful to judge old runs against a new SLO.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.report import Slo, load_results, write_report
from plan.schema import BY_NAME


def _inputs_from_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What the result files themselves say, when no report.json came with them."""
    first = results[0]
    return {"served_name": first.get("model_id"), "model": {"name": first.get("tokenizer_id")},
            "vllm": {"client": first.get("bench_client_vllm_version")},
            "concurrency": sorted(r.get("max_concurrency") for r in results)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="rebuild report.json, report.md and the plots")
    report.add_argument("dir", type=Path)
    report.add_argument("--out", type=Path, help="where to write (default: DIR itself)")
    report.add_argument("--slo-ttft-ms", type=float, help="p95 TTFT SLO (default: the report's, else the setting's)")
    report.add_argument("--slo-itl-ms", type=float, help="p95 ITL SLO (default: the report's, else the setting's)")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.dir)
    except (OSError, ValueError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    previous = args.dir / "report.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    inputs = old.get("inputs") or _inputs_from_results(results)
    slo = old.get("slo") or {"ttft_ms": BY_NAME["vllm_slo_ttft_ms"].default,
                             "itl_ms": BY_NAME["vllm_slo_itl_ms"].default}
    out = write_report(args.out or args.dir, inputs, results,
                       Slo(ttft_ms=args.slo_ttft_ms or slo["ttft_ms"], itl_ms=args.slo_itl_ms or slo["itl_ms"]))
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
