"""Every input of a sweep, from the host plan: what report.json records so a figure can be traced to its cause.

Built from the plan's own data (which never holds the API key); environment values whose names look
like credentials are replaced, since `vllm_env` is free-form.
"""

from __future__ import annotations

import re
from typing import Any

from bench.command import PERCENTILES, Target, prompts_for
from plan.host import HostPlan
from plan.quoting import sh_join
from plan.settings import Settings

BENCH_SETTINGS = ("vllm_bench_target", "vllm_bench_concurrency", "vllm_bench_prompts", "vllm_bench_input_len",
                  "vllm_bench_output_len", "vllm_slo_ttft_ms", "vllm_slo_itl_ms", "vllm_bench_report_dir")
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
REDACTED = "(not shown)"


def data_value(value: Any) -> str:
    """A setting as `pyinfra --data NAME=VALUE` takes it back: a list as "1,2,4", one level as "[4]".

    pyinfra turns a bare "4" into the integer 4, which is no list of levels.
    """
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if len(value) > 1 else f"[{','.join(str(v) for v in value)}]"
    return str(value)


def rerun_command(inventory: str, settings: Settings) -> str:
    """The exact command that repeats this sweep: every bench setting written out with --data."""
    words = ["pyinfra", inventory, "bench.py"]
    for name in BENCH_SETTINGS:
        words += ["--data", f"{name}={data_value(getattr(settings, name))}"]
    return sh_join(words)


def _env(env: dict[str, str]) -> dict[str, str]:
    return {name: REDACTED if _SECRET_NAME.search(name) else value for name, value in sorted(env.items())}


def _host_facts(plan: HostPlan) -> dict[str, Any]:
    facts = plan.facts
    os_release = facts.os
    return {
        "os": (os_release.pretty_name or os_release.id) if os_release else None,
        "kernel": facts.kernel_release,
        "cpus": facts.cpu_count,
        "memory_gib": round(facts.mem_total_bytes / 2**30, 1) if facts.mem_total_bytes else None,
        "nvidia_driver": facts.driver_version,
    }


def _gpus(plan: HostPlan) -> list[dict[str, Any]]:
    return [{"index": g.index, "name": g.name, "memory_total_mib": g.memory_total_mib,
             "compute_capability": g.compute_cap} for g in plan.facts.gpus]


def describe(plan: HostPlan, target: Target, levels: tuple[int, ...], settings: Settings, *, inventory: str,
             started_utc: str, client_vllm: str | None = None) -> dict[str, Any]:
    """The sweep's inputs: target (URL, no key), model, instance flags, vLLM, runtime, GPUs, host, dataset."""
    serving = [i for i in plan.instances if (i.name == target.name if target.kind == "instance"
                                             else i.served_name == target.served_name)]
    model = serving[0].model if serving else plan.first.model
    return {
        "deployment": settings.vllm_deployment,
        "host": plan.host,
        "started_utc": started_utc,
        "target": {"kind": target.kind, "name": target.name, "url": target.url, "backends": list(target.backends),
                   "tls_checked_against": target.ca_file},
        "served_name": target.served_name,
        "model": {"name": model.name, "revision": model.revision, "source": model.source, "dir": model.host_dir},
        "instances": [{"host": plan.host, "name": i.name, "unit": i.unit, "port": i.port, "gpus": i.gpus,
                       "vllm_args": list(i.vllm_args), "argv": list(i.argv), "env": _env(i.env),
                       "max_model_len": i.max_model_len,
                       "sizing": {k: v for k, v in i.sizing.items() if isinstance(v, int | float | str | bool)}}
                      for i in serving],
        "vllm": {"package": plan.setup.install.package, "image": plan.setup.docker_image, "client": client_vllm},
        "runtime": plan.setup.runtime,
        "device": plan.setup.device,
        "gpus": _gpus(plan),
        "host_facts": _host_facts(plan),
        "dataset": {"name": "random", "input_len": settings.vllm_bench_input_len,
                    "output_len": settings.vllm_bench_output_len, "ignore_eos": True},
        "concurrency": list(levels),
        "prompts": {str(level): prompts_for(level, settings.vllm_bench_prompts) for level in levels},
        "percentiles": list(PERCENTILES),
        "settings": {name: getattr(settings, name) for name in BENCH_SETTINGS},
        "rerun_command": rerun_command(inventory, settings),
    }
