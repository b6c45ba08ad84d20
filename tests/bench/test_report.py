"""The benchmark report from vLLM's result files: SLO choice, markdown, plots, every input, no key.

Results are a real `vllm bench serve` result file (vLLM 0.32.0, CPU build, tiny model; in fixtures/)
with its figures changed per level, so the keys are exactly the ones vLLM writes.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pyinfra_cli.util import parse_cli_arg

from bench.command import target_for
from bench.inputs import describe, rerun_command
from bench.report import Slo, best_level, folder_name, level_from_result, load_results, render_markdown, write_report
from plan.schema import BY_NAME
from tests.deploy.fakeserver import host_plan_for

REAL = json.loads((Path(__file__).parent / "fixtures" / "vllm-0.32.0-c4.json").read_text())
PLAN_KEY = "sk-plan-only-0123456789"  # the key tests.deploy.fakeserver.host_plan_for plans with
SLO = Slo(ttft_ms=500, itl_ms=50)


def result(concurrency: int, ttft95: float, itl95: float, failed: int = 0, completed: int = 32) -> dict[str, Any]:
    """The real result file with this level's figures."""
    r = copy.deepcopy(REAL)
    r.update(max_concurrency=concurrency, num_prompts=completed + failed, completed=completed, failed=failed,
             p50_ttft_ms=ttft95 / 2, p95_ttft_ms=ttft95, p99_ttft_ms=ttft95 * 1.2,
             p50_itl_ms=itl95 / 2, p95_itl_ms=itl95, p99_itl_ms=itl95 * 1.2, request_throughput=concurrency * 1.5,
             output_throughput=concurrency * 100.0, total_token_throughput=concurrency * 300.0)
    return r


def levels(*rows: tuple) -> list:
    return [level_from_result(result(*row)) for row in rows]


def test_a_real_result_file_is_read_as_vllm_wrote_it() -> None:
    level = level_from_result(REAL)
    assert (level.concurrency, level.prompts, level.completed, level.failed) == (4, 12, 12, 0)
    assert level.output_throughput == REAL["output_throughput"]
    assert level.p("ttft", 95) == REAL["p95_ttft_ms"] and level.p("itl", 99) == REAL["p99_itl_ms"]
    assert level.p("e2el", 50) == REAL["p50_e2el_ms"] and level.latency_ms["tpot"]["mean"] == REAL["mean_tpot_ms"]


def test_the_highest_level_within_both_slos_is_chosen() -> None:
    swept = levels((1, 100, 10), (2, 200, 20), (4, 450, 49), (8, 900, 30), (16, 400, 60))
    assert best_level(swept, SLO).concurrency == 4  # 8 misses TTFT, 16 misses ITL


def test_every_level_within_the_slo_gives_the_highest() -> None:
    assert best_level(levels((1, 10, 1), (2, 20, 2), (4, 40, 4)), SLO).concurrency == 4


def test_a_level_with_a_failed_request_never_meets_the_slo() -> None:
    swept = levels((1, 10, 1), (2, 20, 2, 1, 31))
    assert best_level(swept, SLO).concurrency == 1
    assert best_level(levels((1, 10, 1, 32, 0)), SLO) is None  # nothing completed: fast, but no answer


def test_no_level_within_the_slo_says_so_and_why() -> None:
    swept = levels((1, 600, 10), (2, 900, 70))
    assert best_level(swept, SLO) is None
    text = render_markdown({}, swept, SLO)
    assert "**No level meets the SLO**" in text
    assert "even concurrency 1 has p95 TTFT 600 ms" in text and "ITL" not in text.split("even concurrency 1")[1][:40]


def test_markdown_has_the_table_verdict_plots_and_rerun_command() -> None:
    swept = levels((1, 100, 10), (2, 600, 20))
    text = render_markdown({"rerun_command": "pyinfra inv.py bench.py --data vllm_bench_concurrency=1,2"}, swept, SLO)
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert len(rows) == 3 and rows[0].startswith("| concurrency |")
    assert rows[1].startswith("| 1 | 32 | 32 | 0 | 1.50 | 100.0 | 300.0 |") and rows[1].endswith("| yes |")
    assert rows[2].startswith("| 2 |") and rows[2].endswith("| no |")
    assert "Highest concurrency meeting the SLO (p95 TTFT <= 500 ms and p95 ITL <= 50 ms" in text
    assert "**1**" in text
    assert "![throughput](throughput.png)" in text and "![latency](latency.png)" in text
    assert "```\npyinfra inv.py bench.py --data vllm_bench_concurrency=1,2\n```" in text


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, Any]:
    """A report written from a real host plan (API key required) and three levels."""
    plan = host_plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B"})
    assert plan.api_key == PLAN_KEY
    target = target_for(plan, "vllm")
    inputs = describe(plan, target, (1, 2, 4), plan.host_settings, inventory="inventory/prod.py",
                      started_utc="2026-12-01T10:00:00+00:00", client_vllm="0.32.0")
    out = write_report(tmp_path / "r", inputs, [result(4, 450, 40), result(1, 100, 10), result(2, 200, 20)], SLO)
    return out, plan


def test_report_folder_holds_every_file(report: tuple[Path, Any]) -> None:
    out, _ = report
    for name in ("report.json", "report.md", "throughput.png", "latency.png", "results/c1.json",
                 "results/c2.json", "results/c4.json"):
        assert (out / name).is_file(), name
    for plot in ("throughput.png", "latency.png"):
        data = (out / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, plot
    assert json.loads((out / "results" / "c2.json").read_text())["max_concurrency"] == 2


def test_report_json_has_every_input_and_output(report: tuple[Path, Any]) -> None:
    out, plan = report
    data = json.loads((out / "report.json").read_text())
    got = data["inputs"]
    model = plan.first.model
    assert got["model"] == {"name": "Qwen/Qwen3-8B", "revision": None, "source": model.source,
                            "dir": "/srv/models/Qwen3-8B"}
    assert got["served_name"] == plan.first.served_name and got["deployment"] == "vllm"
    (instance,) = got["instances"]
    assert instance["argv"] == list(plan.first.argv) and "--max-model-len" in instance["vllm_args"]
    assert got["vllm"]["package"] and got["vllm"]["client"] == "0.32.0"
    assert got["runtime"] == "venv" and got["device"] == "cuda"
    assert got["gpus"][0]["name"].startswith("NVIDIA H100") and got["host_facts"]["cpus"]
    assert got["dataset"] == {"name": "random", "input_len": 256, "output_len": 128, "ignore_eos": True}
    assert got["prompts"] == {"1": 16, "2": 16, "4": 32} and got["concurrency"] == [1, 2, 4]
    assert got["target"]["url"] == "http://127.0.0.1:8000" and got["rerun_command"].startswith("pyinfra inventory/")
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 2, 4]
    first = data["levels"][0]
    for key in ("request_throughput", "output_throughput", "total_token_throughput", "completed", "failed"):
        assert first[key] is not None, key
    assert set(first["latency_ms"]) == {"ttft", "tpot", "itl", "e2el"}
    assert set(first["latency_ms"]["itl"]) == {"mean", "p50", "p95", "p99"}
    assert data["best_concurrency"] == 4 and data["slo"] == {"ttft_ms": 500, "itl_ms": 50}


def test_the_key_is_nowhere_in_the_report(report: tuple[Path, Any]) -> None:
    out, _ = report
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 7
    for path in files:
        assert PLAN_KEY.encode() not in path.read_bytes(), path


def test_secret_looking_env_values_are_not_recorded(tmp_path: Path) -> None:
    plan = host_plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B",
                                                "vllm_env": {"HF_TOKEN": "hf_secret_value_123", "VLLM_X": "1"}})
    inputs = describe(plan, target_for(plan, "vllm"), (1,), plan.host_settings, inventory="i.py", started_utc="t")
    env = inputs["instances"][0]["env"]
    assert env["HF_TOKEN"] == "(not shown)" and env["VLLM_X"] == "1"
    assert "hf_secret_value_123" not in json.dumps(inputs)


@pytest.mark.parametrize("levels_", [(1, 2, 4), (4,)])
def test_rerun_command_gives_pyinfra_back_the_same_settings(levels_: tuple[int, ...]) -> None:
    plan = host_plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B", "vllm_bench_concurrency": list(levels_),
                                                "vllm_bench_prompts": 12, "vllm_bench_target": "vllm"})
    settings = plan.host_settings
    words = rerun_command("inventory/prod.py", settings).split()
    assert words[:3] == ["pyinfra", "inventory/prod.py", "bench.py"]
    data = dict(w.strip("'").split("=", 1) for w in words[3:] if w != "--data")
    assert len(data) == 8
    for name, raw in data.items():  # as pyinfra's CLI parses --data, then as the settings validate it
        assert BY_NAME[name].check(parse_cli_arg(raw)) == getattr(settings, name), name


def test_folder_name_is_deployment_and_utc_time() -> None:
    when = datetime(2026, 12, 1, 10, 0, 5, tzinfo=UTC)
    assert folder_name("prod", when) == "prod-20261201T100005Z"
    assert folder_name("prod", when, "gpu/1", "chat") == "prod-gpu_1-chat-20261201T100005Z"


def test_cli_rebuilds_a_report_from_its_results(report: tuple[Path, Any], tmp_path: Path) -> None:
    from bench.__main__ import main

    out, _ = report
    assert main(["report", str(out), "--out", str(tmp_path / "again"), "--slo-ttft-ms", "150"]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["best_concurrency"] == 1 and again["inputs"]["model"]["name"] == "Qwen/Qwen3-8B"
    assert len(load_results(tmp_path / "again")) == 3
