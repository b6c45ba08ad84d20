"""Verify stage: the service answers /v1/models with the planned name and length, and completes.

Runs from the controller over the host's shell, so it works whatever firewall
sits in front of the port. It shows progress while vLLM loads, and when the
unit dies or the deadline passes it prints the journal and fails the host.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from datetime import UTC, datetime

import gevent
from pyinfra import host, logger
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import python

from plan.quoting import sh
from plan.recipes import tool_call_cut_off, tool_call_problem, tool_call_request
from plan.service import ServicePlan
from sizing.calibration import (
    JOURNAL_GREP,
    append_record,
    calibration_path,
    compare,
    format_comparison,
    make_record,
    parse_journal,
)
from tasks import remote

POLL_SECONDS = 2.0
PROGRESS_SECONDS = 10.0


def _run(command: str) -> tuple[bool, str]:
    ok, output = remote.run(command)
    return ok, "\n".join(output.stdout_lines)


def unit_state(unit: str) -> dict[str, str]:
    """systemd's view of the unit, with Jobs = how many start/stop/restart jobs are still queued for it."""
    service = sh(f"{unit}.service")
    _, text = _run(f"systemctl show -p ActiveState,SubState,NRestarts,Result {service}; "
                   f"echo Jobs=$(systemctl list-jobs --no-legend {service} 2>/dev/null | wc -l)")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def curl(url: str, payload: dict | None = None, header_file: str | None = None, extra: str = "") -> tuple[str, str]:
    """(status code, body) of a request made with curl on the host.

    The API key is read by curl from a 0600 header file, so it is in no command line. The URL
    and the file are quoted for the root shell; `extra` must come already quoted.
    """
    data = f" -H 'Content-Type: application/json' --data {shlex.quote(json.dumps(payload))}" if payload else ""
    auth = f" -H {sh('@' + header_file)}" if header_file else ""
    ok, text = _run(f"curl -sS -m 30 -w '\\n%{{http_code}}'{auth}{extra} {sh(url)}{data} 2>/dev/null || true")
    body, _, code = text.rpartition("\n")
    return code.strip() or "000", body


def _http(plan: ServicePlan, path: str, payload: dict | None = None) -> tuple[str, str]:
    """(status code, body) of a request to the instance, from the host itself."""
    return curl(f"{plan.probe_url}{path}", payload, plan.key_header_file)


def _fail(plan: ServicePlan, message: str) -> None:
    journal_cmd = f"journalctl -u {sh(plan.unit + '.service')} -n 400 --no-pager -o cat"
    _, errors = _run(f"{journal_cmd} | grep -E 'Error|error:|Exception|Killed|denied' | grep -v '^  File' | tail -n 12")
    _, tail = _run(f"{journal_cmd} | tail -n 25")
    raise OperationError(f"{message}\n--- errors in the journal of {plan.unit}.service ---\n{errors}"
                         f"\n--- last journal lines ---\n{tail}")


def wait_until_serving(plan: ServicePlan) -> None:
    """Poll until /v1/models answers, then check it and a one-token completion."""
    start = time.monotonic()
    last_report = 0.0
    restarts_at_start = unit_state(plan.unit).get("NRestarts", "0")
    while True:
        elapsed = time.monotonic() - start
        # A restart is queued (--no-block) before this runs: until its job is done and the unit is
        # active (its ExecStartPost waited for /health), the answers may still come from the old process.
        state = unit_state(plan.unit)
        code, body = "-", ""
        if state.get("Jobs", "0").strip() == "0" and state.get("ActiveState") == "active":
            code, body = _http(plan, "/v1/models")
            if code == "200":
                break
        if state.get("ActiveState") == "failed" or state.get("NRestarts", "0") != restarts_at_start:
            _fail(plan, f"{plan.unit}.service died while starting ({state.get('Result')}, "
                        f"{state.get('NRestarts')} restarts)")
        if elapsed > plan.verify_timeout:
            _fail(plan, f"{plan.unit}.service not serving after {plan.verify_timeout}s "
                        f"({state.get('ActiveState')}/{state.get('SubState')})")
        if elapsed - last_report >= PROGRESS_SECONDS:
            last_report = elapsed
            logger.info(f"[{host.name}] waiting for vLLM: {elapsed:.0f}s, unit "
                        f"{state.get('ActiveState')}/{state.get('SubState')}, /v1/models -> {code}")
        gevent.sleep(POLL_SECONDS)

    models = json.loads(body).get("data", [])
    served = {m.get("id"): m for m in models}
    if plan.served_name not in served:
        _fail(plan, f"/v1/models lists {sorted(served)}, not the planned '{plan.served_name}'")
    length = served[plan.served_name].get("max_model_len")
    if length != plan.max_model_len:
        _fail(plan, f"/v1/models reports max_model_len {length}, the plan says {plan.max_model_len}")
    payload = {"model": plan.served_name, "prompt": plan.verify_prompt, "max_tokens": 1, "temperature": 0}
    code, body = _http(plan, "/v1/completions", payload)
    choices = json.loads(body).get("choices") if code == "200" else None
    if not choices:
        _fail(plan, f"completion failed: HTTP {code}: {body[:300]}")
    logger.info(f"[{host.name}] vLLM serving '{plan.served_name}' (max_model_len {length}) after "
                f"{time.monotonic() - start:.0f}s; completion: {choices[0].get('text')!r}")
    if plan.recipe is not None and plan.recipe.tools:
        code, body = _http(plan, "/v1/chat/completions", tool_call_request(plan.served_name, plan.verify_prompt))
        if tool_call_cut_off(code, body):
            logger.warning(f"[{host.name}] tool call accepted (HTTP 200), but the model used all max_tokens inside "
                           "the call (whitespace the JSON grammar allows): no verdict on its tool_calls")
        elif problem := tool_call_problem(code, body):
            _fail(plan, f"tool calling is on ({plan.recipe.tool_call_parser}), but a tool call failed: {problem}")
        else:
            logger.info(f"[{host.name}] tool call answered ({plan.recipe.tool_call_parser} parser)")
    calibrate(plan)


def calibrate(plan: ServicePlan) -> None:
    """vLLM's own start-up figures beside the plan's, printed and appended to the controller's calibration file.

    Only this start's lines (the unit's current InvocationID): an older start's figures would compare
    the plan with a process that no longer runs.
    """
    _, invocation = _run(f"systemctl show -p InvocationID --value {sh(plan.unit + '.service')}")
    invocation = invocation.strip()
    if not re.fullmatch(r"[0-9a-f]{32}", invocation):
        logger.warning(f"[{host.name}] calibration skipped: no InvocationID for {plan.unit}.service")
        return
    _, text = _run(f"journalctl {sh('_SYSTEMD_INVOCATION_ID=' + invocation)} -o cat --no-pager "
                   f"| grep -E {sh(JOURNAL_GREP)}")
    observed = parse_journal(text)
    if observed.empty:  # e.g. the journal of a long-running start was rotated away: nothing to compare, no fault
        logger.info(f"[{host.name}] calibration skipped: no memory figures in the journal of {plan.unit}.service")
        return
    rows = compare(plan.sizing, observed)
    logger.info(f"[{host.name}] calibration of {plan.unit}: predicted vs vLLM's own figures\n"
                f"{format_comparison(rows)}")
    for row in rows:
        if row.warn:
            logger.warning(f"[{host.name}] calibration: {row.figure} off by {row.error_percent:+.1f}% "
                           f"(predicted {row.predicted}, vLLM logged {row.observed})")
    record = make_record(
        host=plan.host, unit=plan.unit, invocation=invocation, gpu=plan.sizing.get("gpu") or plan.device,
        model=plan.model.name, revision=plan.model.revision,
        vllm_version=plan.install.package.rpartition("==")[2], argv=plan.vllm_args, predicted=plan.sizing,
        observed=observed, time=datetime.now(UTC).isoformat(timespec="seconds"))
    path = calibration_path()
    try:
        append_record(path, record)
    except OSError as error:  # a read-only home must not fail a deploy that serves
        logger.warning(f"[{host.name}] calibration record not written to {path}: {error}")


def restart_and_verify(plan: ServicePlan) -> None:
    """Queue a (re)start of the unit, then wait until the new process serves and completes.

    `reset-failed` first: a unit that hit its start limit (StartLimitBurst failures within
    StartLimitIntervalSec) refuses every start until then, so without it a deploy that fixed the
    cause could not start the unit again before the interval ran out.
    """
    service = sh(f"{plan.unit}.service")
    ok, output = remote.run(f"systemctl reset-failed {service} 2>/dev/null; "
                            f"systemctl restart --no-block {service}")
    if not ok:
        raise OperationError(f"systemctl restart {plan.unit}.service failed: {' '.join(output.stderr_lines)}")
    wait_until_serving(plan)


def check_follower(plan: ServicePlan) -> None:
    """A cluster follower has no API: its unit runs (the head's verify shows that it joined)."""
    state = unit_state(plan.unit)
    if state.get("ActiveState") != "active":
        _fail(plan, f"{plan.unit}.service (cluster {plan.cluster.name if plan.cluster else '?'} follower) is "
                    f"{state.get('ActiveState')}/{state.get('SubState')}")
    logger.info(f"[{host.name}] {plan.unit}.service runs headless (cluster follower, {state.get('NRestarts')} "
                "restarts); the head serves the model")


def verify_instance(plan: ServicePlan) -> OperationMeta:
    """Check the instance as it runs, changing nothing (verify.py)."""
    if plan.headless:
        return python.call(name=f"{plan.unit}: cluster follower runs", function=check_follower, plan=plan)
    return python.call(
        name=f"{plan.unit}: verify '{plan.served_name}' on port {plan.port}",
        function=wait_until_serving,
        plan=plan,
    )
