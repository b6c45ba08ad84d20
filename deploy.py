"""Deploy verified vLLM services: `pyinfra inventory/prod.py deploy.py`.

Stages, in order: settings (validated host data) -> facts -> plan (printed,
and the host fails here with reasons if a model does not fit) -> NVIDIA driver
(installed, rebooted into and checked when missing or old) -> install (a model's
copy or hub download runs in the background meanwhile) -> model files -> API key ->
instances (each restarted and verified in turn) -> gateway -> watchdog ->
monitoring (exporters, Prometheus, Alertmanager, Grafana).
Nothing changes on any host until every host has a plan, so bad input stops the
run before the first change.
"""

from pyinfra import logger

from tasks.apt_mirror import apt_sources
from tasks.gateway import gateway
from tasks.install_conda import install_conda
from tasks.install_docker import install_docker
from tasks.install_venv import install_venv
from tasks.model_files import model_files, start_model_transfers
from tasks.monitoring import monitoring
from tasks.nvidia_driver import nvidia_driver
from tasks.planning import plan_for_current_host
from tasks.service_unit import api_key_files, auth_module, service_instances
from tasks.watchdog import watchdog

plan = plan_for_current_host()
logger.info(plan.summary())
apt_sources(plan)
logger.info(plan.driver.summary())
nvidia_driver(plan.driver)

start_model_transfers(plan)  # copies and hub downloads run while the runtime installs; model_files waits, verifies
install = {"docker": install_docker, "conda": install_conda}.get(plan.setup.runtime, install_venv)
restart_all = install(plan) + api_key_files(plan) + auth_module(plan)
restarts = service_instances(plan, restart_all=restart_all, restart_model=model_files(plan))
gateway(plan, restarts=restarts)
watchdog(plan)
monitoring(plan)
