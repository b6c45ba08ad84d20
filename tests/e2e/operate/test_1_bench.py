"""bench.py on the operate lab: vLLM's own `vllm bench serve` through the gateway (TLS, API key), a report.

Host A runs the gateway; the sweep runs there with A's vLLM venv, against https://<A>:443 reached on
loopback and checked against the gateway's certificate; B has nothing to do. The report's completed
count must equal the completions the gateway itself logged over the run (its access log) and those
the instances themselves counted (vLLM's generation-length histogram on their `/metrics`), the key
must be nowhere in pyinfra's output or the report, and the host keeps no work directory.
"""

from __future__ import annotations

import json
import re

import pytest

from hostlab.deployrun import lab_api_key
from tests.e2e.gatewaylab import Story

pytestmark = pytest.mark.hosts

LEVELS = (1, 2, 4)
PROMPTS = 12
ACCESS_LOG = "/var/log/nginx/vllm-vllm.access.log"


def _served_with_16_tokens(story: Story) -> float:
    """Requests every instance itself counted with 11-20 generated tokens (vLLM's own histogram): the
    benchmark's (exactly 16 each), not the watchdog's one-token probes or other tests' shorter ones."""
    total = 0.0
    for host, ports in ((story.a, (8001, 8002)), (story.b, (8001,))):
        for port in ports:
            text = host.run(f"curl -s -H @/etc/vllm/api-key.header http://127.0.0.1:{port}/metrics").stdout
            buckets = {le: float(v) for le, v in re.findall(
                r'^vllm:request_generation_tokens_bucket\{[^}]*le="([0-9.]+)"[^}]*\} (\S+)$', text, re.M)}
            total += buckets["20.0"] - buckets["10.0"]
    return total


def _completions_logged(story: Story) -> int:
    """Completions the gateway answered 200, from its own access log."""
    out = story.a.run(f"grep -c '\"POST /v1/completions HTTP/1.1\" 200 ' {ACCESS_LOG} || true").stdout
    return int(out.strip() or 0)


@pytest.fixture(scope="module")
def bench_run(operated: Story, tmp_path_factory: pytest.TempPathFactory) -> dict:
    reports = tmp_path_factory.mktemp("bench-reports")
    before, counted_before = _completions_logged(operated), _served_with_16_tokens(operated)
    result = operated.deploy(True, "bench.py",
                             "--data", f"vllm_bench_concurrency={','.join(map(str, LEVELS))}",
                             "--data", f"vllm_bench_prompts={PROMPTS}",
                             "--data", "vllm_bench_input_len=32", "--data", "vllm_bench_output_len=16",
                             "--data", f"vllm_bench_report_dir={reports}")
    return {"result": result, "reports": reports, "logged": _completions_logged(operated) - before,
            "counted": _served_with_16_tokens(operated) - counted_before}


def test_bench_runs_on_the_gateway_host_only_with_progress(bench_run: dict, operated: Story) -> None:
    result = bench_run["result"]
    assert result.returncode == 0, result.failure(8000)
    for position, level in enumerate(LEVELS, start=1):
        assert f"bench: concurrency {level} ({position}/{len(LEVELS)}), {PROMPTS} requests" in result.output
        assert f"[{operated.a.ip}] bench concurrency {level} ({position}/{len(LEVELS)}): " in result.output
    assert f"[{operated.b.ip}] bench: nothing to run here; the sweep runs on the gateway host" in result.output
    assert f"[{operated.a.ip}] bench: gateway https://{operated.a.ip}:443 " in result.output


def test_report_counts_every_request_the_gateway_served(bench_run: dict) -> None:
    (folder,) = bench_run["reports"].iterdir()
    assert folder.name.startswith("vllm-")
    for name in ("report.json", "report.md", "throughput.png", "latency.png"):
        assert (folder / name).is_file(), name
    report = json.loads((folder / "report.json").read_text())
    levels = report["levels"]
    assert [lv["concurrency"] for lv in levels] == list(LEVELS)
    assert all(lv["completed"] == PROMPTS and lv["failed"] == 0 for lv in levels), levels
    completed = sum(lv["completed"] for lv in levels)
    assert completed == bench_run["logged"] == bench_run["counted"] == len(LEVELS) * PROMPTS, bench_run
    assert all(lv["total_output_tokens"] == PROMPTS * 16 for lv in levels)  # --ignore-eos: exactly 16 each
    inputs = report["inputs"]
    assert inputs["target"]["kind"] == "gateway" and inputs["target"]["url"].startswith("https://")
    assert len(inputs["target"]["backends"]) == 3  # a and b on A, c on B
    assert inputs["vllm"]["client"] and inputs["instances"]
    text = (folder / "report.md").read_text()
    assert "| concurrency |" in text and "bench.py --data vllm_bench_target=gateway" in text
    assert ("Highest concurrency meeting the SLO" in text) != ("No level meets the SLO" in text)


def test_key_is_nowhere_and_the_host_keeps_no_work_directory(bench_run: dict, operated: Story) -> None:
    key = lab_api_key()
    assert key not in bench_run["result"].output
    for path in bench_run["reports"].rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert operated.a.run("ls -d /var/tmp/vllm-bench.* 2>/dev/null | wc -l").stdout.strip() == "0"
