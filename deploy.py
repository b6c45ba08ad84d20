"""Deploy a verified vLLM service: `pyinfra inventory/prod.py deploy.py`.

Stages, in order: settings (validated host data) -> facts -> plan (printed,
and the host fails here with reasons if the model does not fit) -> install ->
model files -> service -> verify. Nothing changes on any host until every host
has a plan, so bad input stops the run before the first change.
"""

from pyinfra import logger

from tasks.host_plan import plan_for_current_host
from tasks.install_docker import install_docker
from tasks.install_venv import install_venv
from tasks.model_files import model_files
from tasks.service_unit import service_unit
from tasks.verify import verify

plan = plan_for_current_host()
logger.info(plan.summary())

install = install_docker if plan.runtime == "docker" else install_venv
restart_when = install(plan) + model_files(plan)
service_op = service_unit(plan, restart_when=restart_when)
verify(plan, when=service_op.did_change)
