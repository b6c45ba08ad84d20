"""Benchmark a deployment with vLLM's own `vllm bench serve`: `pyinfra inventory/prod.py bench.py`.

Plans each host exactly as deploy.py does (validation and facts, no change), then runs only where the
target is served: the deployment's gateway host for `vllm_bench_target = 'gateway'`, or each host with
an instance of that name. There the host's own vLLM (the venv's or conda env's Python, or the planned
docker image) sweeps the concurrency levels of `vllm_bench_concurrency`, one operation per level so
pyinfra shows the progress, and each level's figures are logged as it finishes. The report folder
(report.json, report.md, throughput.png, latency.png, vLLM's result files) is written on the
controller under `vllm_bench_report_dir`. Requests go to loopback on the host; the API key is read
there from its 0600 header file and appears in no command line and no output. Options:
`--data vllm_bench_concurrency=1,2,4 --data vllm_bench_prompts=32 --data vllm_bench_target=vllm ...`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyinfra import host, logger, state
from pyinfra.api.exceptions import DeployError, OperationError
from pyinfra.operations import python

from bench.command import (
    Target,
    check_workdir,
    cleanup_command,
    level_command,
    prepare_command,
    prompts_for,
    target_for,
    vllm_bench_args,
)
from bench.inputs import describe
from bench.report import Slo, folder_name, level_from_result, write_report
from plan.host import HostPlan
from plan.settings import Settings, SettingsError, load_instances
from tasks import remote
from tasks.planning import plan_for_current_host, pyinfra_data_keys


def _inventory_argument() -> str:
    """The inventory as it was given to pyinfra (the argument before this script), for the rerun command."""
    for index, word in enumerate(sys.argv[1:], start=1):
        if Path(word).name == "bench.py" and index > 1 and not sys.argv[index - 1].startswith("-"):
            return sys.argv[index - 1]
    return "INVENTORY"


def _served_somewhere(settings: Settings) -> bool:
    """Whether any host of this deployment serves the target (else every host would silently skip)."""
    for other in state.inventory:
        try:
            instances = load_instances(other.data.dict(), pyinfra_data_keys())
        except SettingsError:
            continue
        member = instances[0].settings
        if member.vllm_deployment != settings.vllm_deployment:
            continue
        if settings.vllm_bench_target == "gateway" and member.vllm_gateway:
            return True
        if any(i.name == settings.vllm_bench_target for i in instances):
            return True
    return False


def _run(command: str) -> tuple[bool, str]:
    ok, output = remote.run(command)
    return ok, "\n".join(output.stdout_lines + output.stderr_lines if not ok else output.stdout_lines)


@dataclass
class Sweep:
    """One host's sweep: filled by the operations' callbacks as they run, in order."""

    plan: HostPlan
    target: Target
    settings: Settings
    levels: tuple[int, ...]
    inventory: str
    workdir: str = ""
    started: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def prepare(self) -> None:
        """A private work directory on the host with the launcher in it."""
        ok, text = _run(prepare_command())
        if not ok:
            raise OperationError(f"bench: could not prepare a work directory on the host:\n{text[-2000:]}")
        self.workdir = check_workdir(text.strip().splitlines()[-1])
        self.started = datetime.now(UTC)

    def level(self, level: int, position: int) -> None:
        """Run one concurrency level and log its figures; a level that completes nothing fails the host."""
        s = self.settings
        prompts = prompts_for(level, s.vllm_bench_prompts)
        args = vllm_bench_args(self.target, level, prompts, s.vllm_bench_input_len, s.vllm_bench_output_len,
                               self.workdir)
        ok, text = _run(level_command(self.plan, self.target, self.workdir, level, args))
        if not ok:
            raise OperationError(f"bench: concurrency {level} failed; the end of vllm bench serve's output "
                                 f"(all of it in {self.workdir}/c{level}.log on the host):\n{text[-6000:]}")
        try:
            result = json.loads(text[text.index("{"):])
        except ValueError:
            raise OperationError(f"bench: concurrency {level}: no result JSON in the output:\n{text[-2000:]}") from None
        figures = level_from_result(result)
        logger.info(f"[{host.name}] bench concurrency {level} ({position}/{len(self.levels)}): "
                    f"{figures.request_throughput:.2f} req/s, {figures.output_throughput:.1f} output tok/s, "
                    f"p95 TTFT {figures.p('ttft', 95):.0f} ms, p95 ITL {figures.p('itl', 95):.1f} ms, "
                    f"{figures.completed} completed, {figures.failed} failed")
        self.results.append(result)
        if figures.completed == 0:
            _, log = _run(f"tail -n 40 {self.workdir}/c{level}.log")
            raise OperationError(f"bench: concurrency {level}: all {prompts} requests failed against "
                                 f"{self.target.url}; the end of the log:\n{log}")

    def report(self) -> None:
        """Write the report folder on the controller, then remove the work directory on the host."""
        assert self.started is not None
        client = next((r.get("bench_client_vllm_version") for r in self.results), None)
        inputs = describe(self.plan, self.target, self.levels, self.settings, inventory=self.inventory,
                          started_utc=self.started.isoformat(timespec="seconds"), client_vllm=client)
        name = folder_name(self.settings.vllm_deployment, self.started,
                           *((self.plan.host, self.target.name) if self.target.kind == "instance" else ()))
        out = Path(self.settings.vllm_bench_report_dir).expanduser() / name
        write_report(out, inputs, self.results, Slo(self.settings.vllm_slo_ttft_ms, self.settings.vllm_slo_itl_ms))
        _run(cleanup_command(self.workdir))
        logger.info(f"[{host.name}] bench report: {out}/report.md")


def sweep(plan: HostPlan, target: Target) -> None:
    settings = plan.host_settings
    levels = settings.vllm_bench_concurrency
    run = Sweep(plan, target, settings, levels, _inventory_argument())
    logger.info(f"[{host.name}] bench: {target.kind} {target.url} ('{target.served_name}'), concurrency "
                f"{', '.join(map(str, levels))}, {settings.vllm_bench_input_len} in / "
                f"{settings.vllm_bench_output_len} out tokens, requests per level "
                f"{', '.join(str(prompts_for(c, settings.vllm_bench_prompts)) for c in levels)}")
    python.call(name="bench: prepare the host", function=run.prepare)
    for position, level in enumerate(host.loop(levels), start=1):
        python.call(name=f"bench: concurrency {level} ({position}/{len(levels)}), "
                         f"{prompts_for(level, settings.vllm_bench_prompts)} requests",
                    function=run.level, level=level, position=position)
    python.call(name="bench: write the report on the controller", function=run.report)


plan = plan_for_current_host()
settings = plan.host_settings
target = target_for(plan, settings.vllm_bench_target)
if target is not None:
    sweep(plan, target)
elif not _served_somewhere(settings):
    kind = "runs a gateway" if settings.vllm_bench_target == "gateway" else \
        f"has an instance named '{settings.vllm_bench_target}'"
    raise DeployError(f"{host.name}: vllm_bench_target: no host of deployment '{settings.vllm_deployment}' {kind}; "
                      "set vllm_bench_target to 'gateway' or to an instance's name")
else:
    where = "the gateway host" if settings.vllm_bench_target == "gateway" else \
        f"the hosts with an instance named '{settings.vllm_bench_target}'"
    logger.info(f"[{host.name}] bench: nothing to run here; the sweep runs on {where}")
