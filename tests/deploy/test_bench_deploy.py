"""bench.py through the real pyinfra CLI on `@fake` hosts: where it runs, what it sends, what it writes.

The fake host answers the sweep's commands as a host would: the work directory mktemp made, then
per level the result file `vllm bench serve` saved (a real vLLM 0.32 result, its level changed).
Checked: the base URL and tokenizer on each level's command, the gateway reached on loopback under its
own name with TLS checked against its certificate, the API key in no command, no output and no report
file, and the report folder written on the controller.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from pyinfra_cli.util import parse_cli_arg

from bench.command import prompts_for
from bench.inputs import data_value
from tests.deploy.fakeserver import ROOT
from tests.fakehosts import write_inventory

PROFILE = "h100-x1-ubuntu2404"
REAL = json.loads((ROOT / "tests" / "bench" / "fixtures" / "vllm-0.32.0-c4.json").read_text())
WORKDIR = "/var/tmp/vllm-bench.Ab12Cd34"


def _result(level: int, prompts: int, failing: bool) -> str:
    """What the level's command prints: vLLM's result file; `failing`: every request failed."""
    r = copy.deepcopy(REAL)
    n = prompts_for(level, prompts)
    r.update(max_concurrency=level, num_prompts=n, completed=0 if failing else n, failed=n if failing else 0)
    return json.dumps(r)


def _bench(tmp: Path, data: dict, levels: tuple[int, ...], prompts: int, *args: str, failing: bool = False
           ) -> tuple[subprocess.CompletedProcess, str, Path]:
    """`pyinfra INVENTORY bench.py -y --data ...` on one fake host; (run, commands sent, report dir)."""
    responses = {"mktemp -d /var/tmp/vllm-bench.": [WORKDIR]}
    responses |= {f"--result-filename c{c}.json": [_result(c, prompts, failing)] for c in levels}
    extra = {"model": "Qwen/Qwen3-8B", "vllm_api_key_file": str(tmp / "api-keys" / "test.key"),
             "fake_responses": responses, **data}
    inventory = write_inventory(tmp / "inventory.py", [("gpu", PROFILE, "converged")], extra)
    reports = tmp / "reports"
    settings = {"vllm_bench_concurrency": data_value(levels), "vllm_bench_prompts": str(prompts),
                "vllm_bench_input_len": "64", "vllm_bench_output_len": "16", "vllm_bench_report_dir": str(reports)}
    words = [w for name, value in settings.items() for w in ("--data", f"{name}={value}")]
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp / "out"), str(inventory),
                           "bench.py", "-y", *words, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    commands_file = tmp / "out" / "gpu" / "commands.txt"
    return proc, commands_file.read_text() if commands_file.exists() else "", reports


def _level_commands(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "bench_serve.py" in line and "--result-filename" in line]


def _flag(command: str, name: str) -> str:
    words = command.split()
    return words[words.index(name) + 1].strip("'")


def test_instance_target_runs_each_level_with_the_instance_url_and_tokenizer(tmp_path: Path) -> None:
    proc, commands, reports = _bench(tmp_path, {}, (1, 2), 4, "--data", "vllm_bench_target=vllm")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    levels = _level_commands(commands)
    assert len(levels) == 2
    for level, command in zip((1, 2), levels, strict=True):
        assert _flag(command, "--base-url") == "http://127.0.0.1:8000"
        assert _flag(command, "--tokenizer") == "/srv/models/Qwen3-8B"
        assert _flag(command, "--max-concurrency") == str(level) and _flag(command, "--num-prompts") == "4"
        assert _flag(command, "--random-input-len") == "64" and _flag(command, "--random-output-len") == "16"
        assert _flag(command, "--result-dir") == WORKDIR and "--resolve" not in command
        assert f" /opt/vllm/venv/bin/python {WORKDIR}/bench_serve.py -- --backend openai " in command
        assert "sed -n 's/^Authorization: Bearer //p' /etc/vllm/api-key.header" in command
    assert f"rm -rf -- {WORKDIR}" in commands
    # Progress: one operation per level, each level's figures logged as it finished.
    assert "bench: concurrency 1 (1/2), 4 requests" in output and "bench: concurrency 2 (2/2), 4 requests" in output
    assert "bench concurrency 2 (2/2): " in output and "4 completed, 0 failed" in output
    (report,) = reports.iterdir()
    assert re.fullmatch(r"vllm-_fake_gpu-vllm-\d{8}T\d{6}Z", report.name), report.name
    data = json.loads((report / "report.json").read_text())
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 2]
    assert data["inputs"]["target"]["url"] == "http://127.0.0.1:8000"
    rerun = data["inputs"]["rerun_command"]
    assert rerun.startswith(f"pyinfra {tmp_path / 'inventory.py'} bench.py --data vllm_bench_target=vllm ")
    _assert_no_key(tmp_path, commands, output, report)


def test_gateway_target_reaches_the_gateway_by_name_on_loopback_with_tls_checked(tmp_path: Path) -> None:
    data = {"vllm_gateway": True, "vllm_gateway_server_name": "llm.example.com"}
    proc, commands, reports = _bench(tmp_path, data, (4,), 0)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    (command,) = _level_commands(commands)
    assert _flag(command, "--base-url") == "https://llm.example.com:443"
    assert _flag(command, "--resolve") == "llm.example.com:443:127.0.0.1"
    assert "SSL_CERT_FILE=/etc/vllm/gateway/vllm/tls.crt" in command
    assert _flag(command, "--num-prompts") == "32"  # 0: 8 per concurrent client
    (report,) = reports.iterdir()
    report_json = json.loads((report / "report.json").read_text())
    assert report_json["inputs"]["target"]["kind"] == "gateway"
    assert report_json["inputs"]["target"]["backends"] == ["@fake/gpu/vllm 127.0.0.1:8000"]
    _assert_no_key(tmp_path, commands, output, report)


def test_a_host_without_the_target_runs_nothing_and_an_unknown_target_is_refused(tmp_path: Path) -> None:
    proc, commands, reports = _bench(tmp_path, {}, (1,), 4)  # 'gateway', but no host runs one
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "vllm_bench_target: no host of deployment 'vllm' runs a gateway" in output
    assert not _level_commands(commands) and not reports.exists()


def test_a_level_where_every_request_failed_fails_the_host_and_writes_no_report(tmp_path: Path) -> None:
    proc, commands, reports = _bench(tmp_path, {}, (1, 2), 4, "--data", "vllm_bench_target=vllm", failing=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "bench: concurrency 1: all 4 requests failed against http://127.0.0.1:8000" in output
    assert len(_level_commands(commands)) == 1 and not reports.exists()


def test_the_data_values_of_the_documented_command_pass_the_settings() -> None:
    """How pyinfra 3.10 hands `--data` values over, through the settings' own validators."""
    from plan.schema import BY_NAME

    for name, raw, want in (("vllm_bench_concurrency", "1,2,4", (1, 2, 4)), ("vllm_bench_concurrency", "[8]", (8,)),
                            ("vllm_bench_prompts", "12", 12), ("vllm_bench_target", "gateway", "gateway"),
                            ("vllm_bench_report_dir", "/tmp/bench", "/tmp/bench"), ("vllm_slo_ttft_ms", "500", 500)):
        assert BY_NAME[name].check(parse_cli_arg(raw)) == want, (name, raw)


def _assert_no_key(tmp: Path, commands: str, output: str, report: Path) -> None:
    key = (tmp / "api-keys" / "test.key").read_text().strip()
    assert len(key) >= 16
    assert key not in commands and key not in output
    for path in report.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
