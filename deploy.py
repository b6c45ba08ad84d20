"""Deploy a verified vLLM service: `pyinfra inventory/prod.py deploy.py`.

Stages, in order: settings (validated host data) -> facts -> plan (printed,
and the host fails here with reasons if the model does not fit) -> install ->
model files -> service -> verify. Nothing changes on any host until every host
has a plan, so bad input stops the run before the first change.
"""

from pyinfra import host, logger
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.systemd import SystemdStatus

from facts.gather import gather_host_facts
from plan.service import PlanError, build_plan
from plan.settings import SettingsError, load_settings
from tasks.install_venv import install_venv
from tasks.model_files import model_files
from tasks.service_unit import service_unit
from tasks.verify import verify

try:
    settings = load_settings(host.data.dict())
    facts = gather_host_facts(host, model_dir=settings.model_dir, ports=[settings.vllm_port])
    active = host.get_fact(SystemdStatus).get("vllm.service", False)
    plan = build_plan(settings, facts, host.name, service_active=bool(active))
except (SettingsError, PlanError) as error:
    raise DeployError(f"{host.name}: {error}") from None

logger.info(plan.summary())

restart_when = install_venv(plan) + model_files(plan)
service_op = service_unit(plan, restart_when=restart_when)
verify(plan, when=service_op.did_change)
