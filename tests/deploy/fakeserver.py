"""Whole deploys against recorded GPU servers: plan in-process, then the real pyinfra CLI on `@fake` hosts.

A recorded profile answers the fact commands; `serving_responses` adds what a
server that has the model and answers on its port prints (the /v1/models body
has the shape vLLM 0.32 returns), so the run goes through every stage, verify
included, and the files it would upload are kept for the assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyinfra.context import ctx_host, ctx_state

from facts.gather import gather_host_facts
from facts.model import HostFacts
from plan.host import HostPlan, build_host_plan
from plan.recipes import PROBE_TOOL
from plan.service import ServicePlan
from plan.settings import load_instances
from sizing.catalog import find_model
from tasks.model_files import MARKER, downloaded_config_command
from tests.fakehosts import fake_host_data, make_fake_state, write_inventory

ROOT = Path(__file__).resolve().parents[2]


def facts_for(profile: str, state: str = "converged", model_dir: str = "/srv/models/Qwen3-8B") -> HostFacts:
    """The facts deploy.py gathers from this recorded host."""
    fake = make_fake_state([("h", fake_host_data(profile, state))])
    host = fake.inventory.get_host("@fake/h")
    with ctx_state.use(fake), ctx_host.use(host):
        return gather_host_facts(host, model_dir=model_dir, ports=[])


def host_plan_for(profile: str, data: dict[str, Any], state: str = "converged") -> HostPlan:
    """The host plan deploy.py computes for this recorded host, computed here without the CLI."""
    fake = make_fake_state([("h", fake_host_data(profile, state))])
    host = fake.inventory.get_host("@fake/h")
    with ctx_state.use(fake), ctx_host.use(host):
        instances = load_instances(data)
        settings = instances[0].settings
        facts = gather_host_facts(host, model_dir=settings.model_dir, ports=[settings.vllm_port])
        key = "sk-plan-only-0123456789" if settings.vllm_require_api_key else None
        return build_host_plan(instances, facts, host.name, api_key=key)


def plan_for(profile: str, data: dict[str, Any], state: str = "converged") -> ServicePlan:
    """The (first) instance's plan, as deploy.py computes it for this recorded host."""
    return host_plan_for(profile, data, state).instances[0]


def serving_responses(plan: ServicePlan, model_present: bool = True) -> dict[str, Any]:
    """Answers of a host that serves the model as planned (and already holds it, unless told otherwise)."""
    models = {"object": "list", "data": [{
        "id": plan.served_name, "object": "model", "created": 1763884800, "owned_by": "vllm",
        "root": plan.model.host_dir, "parent": None, "max_model_len": plan.max_model_len,
        "permission": [],
    }]}
    completion = {"id": "cmpl-1", "object": "text_completion", "model": plan.served_name,
                  "choices": [{"index": 0, "text": " Hi", "finish_reason": "length"}]}
    tool_call = {"id": "chatcmpl-1", "object": "chat.completion", "model": plan.served_name, "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "", "tool_calls": [{
            "id": "chatcmpl-tool-1", "type": "function",
            "function": {"name": PROBE_TOOL, "arguments": "{\"ok\": true}"}}]}}]}
    responses = {
        "uname -s": "Linux",
        "command -v useradd": "/usr/sbin/useradd",
        f"127.0.0.1:{plan.port}/v1/models": json.dumps(models) + "\n200",
        f"127.0.0.1:{plan.port}/v1/completions": json.dumps(completion) + "\n200",
        # The verify stage's tool call (plans with tool calling on): vLLM's answer to a named tool choice.
        f"127.0.0.1:{plan.port}/v1/chat/completions": json.dumps(tool_call) + "\n200",
        f"NRestarts,Result {plan.unit}.service": ["ActiveState=active", "SubState=running", "NRestarts=0",
                                                   "Result=success"],
        # The download oneshot, polled while it runs: finished, and the model weighs what it should.
        "NRestarts,Result vllm-model-download.service": ["ActiveState=inactive", "Result=success"],
        f"du -sb {plan.model.host_dir}": [str(plan.model.weight_bytes or 0)],
    }
    if model_present:
        responses[f"{plan.model.host_dir}/{MARKER}"] = "2026-11-20T08:00:00Z"
    else:
        # What the download leaves: the repository's own config.json, here the catalog's copy of it.
        responses[downloaded_config_command(plan.model.host_dir)] = json.dumps(find_model(plan.model.name).config)
    return responses


def run_fake_deploy(tmp: Path, profile: str, data: dict[str, Any], plan: ServicePlan | None,
                    state: str = "converged", *args: str, model_present: bool = True,
                    ) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `pyinfra INVENTORY deploy.py -y ARGS` on one fake host; returns the run and its files dir."""
    extra = {"vllm_api_key_file": str(tmp / "api-keys" / "test.key"), **data}
    if plan is not None:
        extra["fake_responses"] = serving_responses(plan, model_present)
    inventory = write_inventory(tmp / "inventory.py", [("gpu", profile, state)], extra)
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp / "out"), str(inventory),
                           "deploy.py", "-y", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, tmp / "out" / "gpu"
