"""Configure and activate stage: env file, unit file, chat template, the running service."""

from __future__ import annotations

from pathlib import Path

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, systemd

from plan.service import ServicePlan

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@deploy("vLLM service")
def service_unit(plan: ServicePlan, restart_when: list[OperationMeta] | None = None) -> OperationMeta:
    """Render and (re)start the unit; restarted when it or any of `restart_when` changes."""
    changes = list(restart_when or [])
    group = "root" if plan.runtime == "docker" else plan.user
    if plan.chat_template_source:
        changes.append(files.put(
            name="Chat template",
            src=plan.chat_template_source,
            dest=[a for a in plan.argv if a.endswith(".jinja")][-1],
            user="root",
            group=group,
            mode="640",
        ))
    changes.append(files.template(
        name="Service environment",
        src=str(TEMPLATES / "vllm.env.j2"),
        dest=plan.env_file,
        user="root",
        group=group,
        mode="640",
        plan=plan,
    ))
    unit = files.template(
        name="Service unit",
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
            name="Standalone docker run script",
            src=str(TEMPLATES / "docker-run.sh.j2"),
            dest=plan.docker_script,
            user="root",
            group="root",
            mode="755",
            plan=plan,
        )
    return systemd.service(
        name=f"{plan.unit}.service enabled and running",
        service=f"{plan.unit}.service",
        running=True,
        enabled=True,
        daemon_reload=unit.will_change,
        restarted=any(op.will_change for op in changes),
    )
