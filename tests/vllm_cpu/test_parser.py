"""The installed vLLM's own serve parser accepts what the project renders and refuses removed flags.

All command lines are checked in one subprocess (importing vLLM costs about 9 s), run with the
controller venv's python so this test process never imports vllm.
"""

from __future__ import annotations

import pytest

from tests.vllm_cpu.realparser import (
    check_args_with_real_parser,
    check_many_with_real_parser,
    require_controller_python,
)

pytestmark = pytest.mark.vllm

BASE = ["--model", "/srv/vllm/models/m", "--served-model-name", "m", "--host", "127.0.0.1", "--port", "8000"]

# Flags the sizing plan and the service plan render, with representative values.
ACCEPTED: dict[str, list[str]] = {
    "base": [],
    "tensor-parallel": ["--tensor-parallel-size", "2"],
    "pipeline-parallel": ["--pipeline-parallel-size", "2"],
    "dtype": ["--dtype", "bfloat16"],
    "gpu-memory-utilization": ["--gpu-memory-utilization", "0.9"],
    "max-model-len": ["--max-model-len", "32768"],
    "max-num-seqs": ["--max-num-seqs", "64"],
    "max-num-batched-tokens": ["--max-num-batched-tokens", "8192"],
    "enforce-eager": ["--enforce-eager"],
    "kv-cache-dtype": ["--kv-cache-dtype", "fp8"],
    "quantization": ["--quantization", "awq"],
    "disable-custom-all-reduce": ["--disable-custom-all-reduce"],
    "kv-cache-memory-bytes": ["--kv-cache-memory-bytes", "64M"],
    "chunked-prefill": ["--enable-chunked-prefill"],
    "prefix-caching-off": ["--no-enable-prefix-caching"],
    "trust-remote-code": ["--trust-remote-code"],
    "seed": ["--seed", "0"],
    "rope-via-hf-overrides": [
        "--hf-overrides", '{"rope_scaling": {"rope_type": "yarn", "factor": 4.0, '
        '"original_max_position_embeddings": 32768}, "max_position_embeddings": 131072}',
    ],
    "speculative-config": ["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}'],
    "shutdown-timeout": ["--shutdown-timeout", "5"],
    "cpu-recipe": [
        "--kv-cache-memory-bytes", "64M", "--enforce-eager", "--dtype", "float32", "--max-model-len", "1024",
    ],
}

# Flags older guides use that this vLLM refuses (exit 2, "unrecognized arguments").
REJECTED: dict[str, list[str]] = {
    "--swap-space": ["--swap-space", "4"],
    "--tokenizer-pool-size": ["--tokenizer-pool-size", "4"],
    "--rope-scaling": ["--rope-scaling", '{"rope_type": "yarn", "factor": 4.0}'],
    "--rope-theta": ["--rope-theta", "1000000"],
    "--disable-log-requests": ["--disable-log-requests"],
    "--worker-use-ray": ["--worker-use-ray"],
    "--engine-use-ray": ["--engine-use-ray"],
    "--use-v2-block-manager": ["--use-v2-block-manager"],
    "--num-lookahead-slots": ["--num-lookahead-slots", "4"],
    "--guided-decoding-backend": ["--guided-decoding-backend", "xgrammar"],
    "--speculative-model": ["--speculative-model", "/m/draft"],
    "--num-speculative-tokens": ["--num-speculative-tokens", "4"],
    "--scheduler-delay-factor": ["--scheduler-delay-factor", "0.5"],
    "--preemption-mode": ["--preemption-mode", "swap"],
    "--max-seq-len-to-capture": ["--max-seq-len-to-capture", "8192"],
    "--num-scheduler-steps": ["--num-scheduler-steps", "8"],
    "--multi-step-stream-outputs": ["--multi-step-stream-outputs"],
    "--disable-frontend-multiprocessing": ["--disable-frontend-multiprocessing"],
    "--enable-reasoning": ["--enable-reasoning"],
    "--disable-async-output-proc": ["--disable-async-output-proc"],
}

# Refused for other reasons; the message must point at the flag to fix.
REFUSED_WITH_REASON: dict[str, tuple[list[str], str]] = {
    "abbreviation": (["--max-model", "4096"], "--max-model-len"),
    "bad-value": (["--max-model-len", "lots"], "--max-model-len"),
    "bad-choice": (["--dtype", "fp64"], "--dtype"),
    "pre-load-check": (["--enable-auto-tool-choice"], "--tool-call-parser"),
}


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[bool, str]]:
    """Every case of this module parsed in one vLLM subprocess, keyed by case name."""
    require_controller_python()
    cases = {f"ok:{k}": BASE + v for k, v in ACCEPTED.items()}
    cases |= {f"bad:{k}": BASE + v for k, v in REJECTED.items()}
    cases |= {f"why:{k}": BASE + v[0] for k, v in REFUSED_WITH_REASON.items()}
    names = list(cases)
    return dict(zip(names, check_many_with_real_parser([cases[n] for n in names]), strict=True))


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_rendered_flags_are_accepted(results: dict[str, tuple[bool, str]], case: str) -> None:
    ok, message = results[f"ok:{case}"]
    assert ok, f"{ACCEPTED[case]} refused by the installed vLLM: {message}"


@pytest.mark.parametrize("flag", sorted(REJECTED))
def test_removed_flags_are_rejected(results: dict[str, tuple[bool, str]], flag: str) -> None:
    ok, message = results[f"bad:{flag}"]
    assert not ok, f"{flag} is accepted again by the installed vLLM; update the removed-flags list"
    assert "unrecognized arguments" in message and flag in message, message


def test_single_check_of_a_rendered_line() -> None:
    """The reusable one-shot helper others call on a rendered command line (no model needed)."""
    require_controller_python()
    assert check_args_with_real_parser([*BASE, *ACCEPTED["cpu-recipe"]]) == (True, "accepted")
    ok, message = check_args_with_real_parser([*BASE, "--swap-space", "4"])
    assert not ok and "--swap-space" in message, message


@pytest.mark.parametrize("case", sorted(REFUSED_WITH_REASON))
def test_other_refusals_name_the_flag(results: dict[str, tuple[bool, str]], case: str) -> None:
    args, expected = REFUSED_WITH_REASON[case]
    ok, message = results[f"why:{case}"]
    assert not ok and expected in message, f"{args}: {message}"
