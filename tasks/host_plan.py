"""The bridge from pyinfra to the pure planner: settings + facts of the current host -> plan."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.systemd import SystemdStatus

from facts.gather import gather_host_facts
from plan.service import UNIT_NAME, PlanError, ServicePlan, build_plan
from plan.settings import SettingsError, load_settings


def plan_for_current_host() -> ServicePlan:
    """Validate the host's data, gather its facts and plan; bad input stops the run before any change."""
    try:
        settings = load_settings(host.data.dict())
        facts = gather_host_facts(host, model_dir=settings.model_dir, ports=[settings.vllm_port])
        active = bool(host.get_fact(SystemdStatus).get(f"{UNIT_NAME}.service", False))
        return build_plan(settings, facts, host.name, service_active=active)
    except (SettingsError, PlanError) as error:
        raise DeployError(f"{host.name}: {error}") from None
