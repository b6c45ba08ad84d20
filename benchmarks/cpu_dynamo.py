"""Throughput of an eager CPU instance with TorchDynamo off (what the plan renders: TORCHDYNAMO_DISABLE=1) and on.

Why: with TorchDynamo on, one ordinary request (`echo` + `logprobs`) makes torch compile a helper with the host's
C++ compiler; a server without one loses its engine. The plan turns TorchDynamo off for every eager CPU plan, and
this shows what that costs. Both arms run the tiny model on the controller's vLLM CPU build (scripts/setup.sh --lab)
with a C++ compiler on PATH (so the arm with TorchDynamo on can answer at all), the same flags as the deployed
unit's eager CPU plan, and the same `vllm bench serve` levels that bench.py sends to a host (bench.command).
The arms alternate ROUNDS times and each level's best round is printed, so a busy machine hurts both alike.
Run: .venv/bin/python benchmarks/cpu_dynamo.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.command import Target, check_workdir, cleanup_command, level_command, prepare_command, vllm_bench_args
from bench.report import Level, level_from_result
from tests.vllm_cpu.realparser import require_controller_python
from tests.vllm_cpu.test_bench_real import LocalHost, LocalSetup
from tests.vllm_cpu.tinyserver import ensure_tiny_model, start_tiny_server

LEVELS = (1, 4)
PROMPTS = 24
INPUT_LEN, OUTPUT_LEN = 64, 32
ROUNDS = 2
KEY = "sk-bench-cpu-dynamo-0123456789"
ARMS = {"TorchDynamo off (the plan)": {"TORCHDYNAMO_DISABLE": "1"},
        "TorchDynamo on": {"TORCHDYNAMO_DISABLE": None, "CXX": shutil.which("c++") or shutil.which("g++")}}


def _bash(command: str) -> str:
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=900)
    if run.returncode:
        raise RuntimeError(f"{command[:80]}... failed:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
    return run.stdout


def measure(env: dict[str, str | None], model: Path, python: Path, tmp: Path) -> dict[int, Level]:
    server = start_tiny_server(python, model, Path(tempfile.mkdtemp(dir=tmp)), api_key=KEY, env_changes=env)
    try:
        header = tmp / "api-key.header"
        header.write_text(f"Authorization: Bearer {KEY}\n")
        header.chmod(0o600)
        local = LocalHost(LocalSetup(python=str(python)), key_header_file=str(header))
        target = Target(kind="instance", name="vllm", url=server.base, served_name="tiny", tokenizer=str(model))
        workdir = check_workdir(_bash(prepare_command()).strip())
        try:
            levels = {}
            for level in LEVELS:
                args = vllm_bench_args(target, level, PROMPTS, INPUT_LEN, OUTPUT_LEN, workdir)
                levels[level] = level_from_result(json.loads(_bash(level_command(local, target, workdir, level,
                                                                                   args))))  # type: ignore[arg-type]
            return levels
        finally:
            _bash(cleanup_command(workdir))
    finally:
        server.stop()


def main() -> None:
    if not ARMS["TorchDynamo on"]["CXX"]:
        sys.exit("no C++ compiler on PATH: the arm with TorchDynamo on needs one")
    python = require_controller_python()
    model = ensure_tiny_model(python)
    best: dict[str, dict[int, Level]] = {arm: {} for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            for arm, env in ARMS.items():
                for level, measured in measure(env, model, python, Path(tmp)).items():
                    kept = best[arm].get(level)
                    if kept is None or measured.output_throughput > kept.output_throughput:
                        best[arm][level] = measured
                print(f"round {round_ + 1}: {arm} measured", flush=True)
    print(f"\n{PROMPTS} prompts per level, {INPUT_LEN} tokens in, {OUTPUT_LEN} out; best of {ROUNDS} rounds")
    print(f"{'arm':28} {'clients':>7} {'output tok/s':>12} {'req/s':>7} {'p50 TTFT ms':>11} {'p50 ITL ms':>10}")
    for arm, levels in best.items():
        for level, m in sorted(levels.items()):
            print(f"{arm:28} {level:>7} {m.output_throughput:>12.1f} {m.request_throughput:>7.2f} "
                  f"{m.p('ttft', 50):>11.0f} {m.p('itl', 50):>10.1f}")
    off, on = best["TorchDynamo off (the plan)"], best["TorchDynamo on"]
    for level in LEVELS:
        print(f"{level} client(s): off / on = {off[level].output_throughput / on[level].output_throughput:.3f}")


if __name__ == "__main__":
    main()
