"""Configure and activate stage: per instance its env file, unit, chat template and running service.

Instances are handled one at a time, each (re)started and verified before the
next is touched, so a change of model, flags or vLLM version rolls through the
host while its other instances (and the gateway in front of them) keep serving.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, python, systemd

from plan.host import HostPlan
from plan.service import AUTH_DIR, AUTH_FILE, AUTH_SOURCE, ServicePlan
from tasks.cluster import cluster_member, launcher
from tasks.secret_files import secret_file
from tasks.verify import restart_and_verify

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def api_key_files(plan: HostPlan) -> list[OperationMeta]:
    """The key for vLLM (env file) and for checks on the host (curl header file), both 0600 root.

    Written by `secret_file`: never on a command line, in /tmp or in pyinfra's output (--diff,
    -vvv, --debug). Returns only the env file's operation, the one whose change must restart the
    instances: the header file is read by the checks alone, so rewriting it restarts nothing.
    """
    if not plan.api_key or not plan.key_env_file or not plan.key_header_file:
        return []
    env = secret_file(name="API key for vLLM (0600)", dest=plan.key_env_file,
                      content=f"VLLM_API_KEY={plan.api_key}\n")
    secret_file(name="API key header for checks on the host (0600)", dest=plan.key_header_file,
                content=f"Authorization: Bearer {plan.api_key}\n")
    return [env]


def auth_module(plan: HostPlan) -> list[OperationMeta]:
    """The key check every instance's vLLM loads (`--middleware`): root-owned, readable by the service.

    Returns the upload, whose change must restart the instances (vLLM imports it once, at start).
    """
    if not any(i.auth_middleware for i in plan.instances):
        return []
    files.directory(name="Key check module directory (root only writes)", path=AUTH_DIR, user="root", group="root",
                    mode="755")
    return [files.put(name="Key check for every route but /health (vLLM --middleware)", src=str(AUTH_SOURCE),
                      dest=AUTH_FILE, user="root", group="root", mode="644")]


def _changed(ops: list[OperationMeta]) -> Callable[[], bool]:
    return lambda: any(op.did_change() for op in ops)


def _instance_files(plan: ServicePlan) -> tuple[list[OperationMeta], OperationMeta]:
    """Render the instance's files; returns (every file op, the unit file op)."""
    changes = []
    group = "root" if plan.runtime == "docker" else plan.user
    if plan.chat_template_source:
        changes.append(files.put(
            name=f"{plan.unit}: chat template",
            src=plan.chat_template_source,
            dest=[a for a in plan.argv if a.endswith(".jinja")][-1],
            user="root",
            group=group,
            mode="640",
        ))
    changes.append(files.template(
        name=f"{plan.unit}: environment",
        src=str(TEMPLATES / "vllm.env.j2"),
        dest=plan.env_file,
        user="root",
        group=group,
        mode="640",
        plan=plan,
    ))
    unit = files.template(
        name=f"{plan.unit}: unit",
        src=str(TEMPLATES / "vllm.service.j2"),
        dest=plan.unit_file,
        user="root",
        group="root",
        mode="644",
        plan=plan,
    )
    changes.append(unit)
    if plan.docker_script:
        files.template(
            name=f"{plan.unit}: standalone docker run script",
            src=str(TEMPLATES / "docker-run.sh.j2"),
            dest=plan.docker_script,
            user="root",
            group="root",
            mode="755",
            plan=plan,
        )
    return changes, unit


@deploy("vLLM instances")
def service_instances(plan: HostPlan, restart_all: list[OperationMeta],
                      restart_model: dict[str, list[OperationMeta]] | None = None) -> list[OperationMeta]:
    """Each instance in turn: render, enable, then (re)start and verify when anything it runs on changed.

    Returns the (re)start operations, so later stages can tell whether anything restarted.
    """
    running = host.get_fact(SystemdStatus)
    starts = []
    for instance in plan.instances:
        changes, unit = _instance_files(instance)
        if instance.cluster is not None:
            changes.append(launcher(instance))
        changes += restart_all + (restart_model or {}).get(instance.model.host_dir, [])
        systemd.daemon_reload(name=f"{instance.unit}: systemd daemon-reload", _if=unit.did_change)
        systemd.service(name=f"{instance.unit}.service enabled at boot", service=f"{instance.unit}.service",
                        running=None, enabled=True)
        is_running = bool(running.get(f"{instance.unit}.service"))
        if instance.cluster is not None:
            starts.append(cluster_member(instance, changes, is_running))
            continue
        if not is_running:
            # Serving nothing yet, so nothing to keep up: every host's new instance starts at once (a fleet's
            # cold deploy would otherwise wait for each host's start in turn).
            start = python.call(name=f"{instance.unit}: start and verify", function=restart_and_verify,
                                plan=instance)
        else:
            # Serial: across the whole deployment one instance at a time is down, so the gateway always
            # has the others of its model (two hosts restarting in parallel could leave none).
            start = python.call(
                name=f"{instance.unit}: restart and verify (one instance at a time)",
                function=restart_and_verify,
                plan=instance,
                _if=_changed(changes),
                _serial=True,
            )
        starts.append(start)
    return starts
