"""Whole @fake deploys: a model family's parser flags reach the unit, the verify stage sends its tool call and
records vLLM's logged figures beside the plan's in the controller's calibration file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plan.service import PlanError
from tests.deploy.fakeserver import plan_for, run_fake_deploy, serving_responses

PROFILE = "h100-x1-ubuntu2404"
INVOCATION = "0b14ce10b012487e817077ceddf478e9"


def _journal(plan, kv_factor: float = 1.0) -> str:  # noqa: ANN001
    """vLLM 0.32's own lines (its format strings) carrying the plan's figures, the KV cache scaled by kv_factor."""
    s = plan.sizing
    tokens = int(s["kv_cache_tokens"] * kv_factor)
    return "\n".join([
        "(APIServer pid=7) INFO 12-01 11:50:15 [api_utils.py:347]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0",
        f"(EngineCore_DP0 pid=9) INFO 12-01 11:50:28 [gpu_model_runner.py:5150] Model loading took "
        f"{round(s['weights_gib'], 2)} GiB memory and 3.100000 seconds",
        f"(EngineCore_DP0 pid=9) INFO 12-01 11:50:40 [gpu_worker.py:760] Available KV cache memory: "
        f"{round(s['kv_cache_gib'] * kv_factor, 2)} GiB",
        f"(EngineCore_DP0 pid=9) INFO 12-01 11:50:40 [kv_cache_utils.py:2327] GPU KV cache size: {tokens:,} tokens, "
        f"Maximum concurrency for {plan.max_model_len:,} tokens per request: {tokens / plan.max_model_len:.2f}x",
    ])


def _run(tmp_path: Path, data: dict, plan, journal: str) -> str:  # noqa: ANN001
    responses = {**serving_responses(plan), "-p InvocationID": INVOCATION, "_SYSTEMD_INVOCATION_ID=": journal}
    proc, _ = run_fake_deploy(tmp_path, PROFILE, {**data, "fake_responses": responses}, None)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def test_qwen3_gets_its_parsers_and_the_deploy_checks_a_tool_call_and_calibrates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calibration = tmp_path / "calibration.jsonl"
    monkeypatch.setenv("VLLM_DEPLOY_CALIBRATION", str(calibration))
    data = {"model": "Qwen/Qwen3-8B"}
    plan = plan_for(PROFILE, data)
    argv = " ".join(plan.argv)
    assert "--enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser qwen3" in argv
    assert "tools     hermes   reasoning qwen3" in plan.summary() and "recipe Qwen3:" in plan.summary()

    output = _run(tmp_path, data, plan, _journal(plan, kv_factor=0.9))
    assert "tools     hermes   reasoning qwen3" in output, "the printed plan shows the recipe"
    assert "tool call answered (hermes parser)" in output
    assert "calibration of vllm: predicted vs vLLM's own figures" in output
    assert "calibration: kv_cache_gib off by -10.0%" in output, "a 10 % miss is a warning"
    unit = (tmp_path / "out" / "gpu" / "files/etc/systemd/system/vllm.service").read_text()
    assert "--tool-call-parser hermes" in unit
    [record] = [json.loads(line) for line in calibration.read_text().splitlines()]
    assert record["gpu"] == plan.sizing["gpu"] and record["vllm_version"] == "0.32.0"
    assert record["invocation"] == INVOCATION and record["model"] == "Qwen/Qwen3-8B"
    assert record["observed"]["kv_cache_tokens"] == int(plan.sizing["kv_cache_tokens"] * 0.9)
    assert record["error_percent"]["kv_cache_gib"] == pytest.approx(-10, abs=0.2)
    assert "--tool-call-parser" in record["argv"]


def test_tool_calling_off_sends_no_tool_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_DEPLOY_CALIBRATION", str(tmp_path / "calibration.jsonl"))
    data = {"model": "Qwen/Qwen3-8B", "vllm_tool_calling": False, "vllm_reasoning_parser": False}
    plan = plan_for(PROFILE, data)
    assert "--tool-call-parser" not in plan.argv and "--reasoning-parser" not in plan.argv
    output = _run(tmp_path, data, plan, _journal(plan))
    assert "tool call answered" not in output and "tools     off   reasoning off" in output
    assert "off by" not in output, "figures that match raise no warning"


def test_a_mistyped_parser_is_refused_before_any_change() -> None:
    with pytest.raises(PlanError, match="vllm_tool_call_parser: 'hermess' is no tool-call parser"):
        plan_for(PROFILE, {"model": "Qwen/Qwen3-8B", "vllm_tool_call_parser": "hermess"})
