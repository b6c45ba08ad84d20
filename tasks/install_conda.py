"""Install stage for the conda runtime: Miniconda (verified), its mirror config, the vLLM environment.

The decisions are the host plan's (plan.conda, from the host's state): Miniconda is installed only when
PREFIX/bin/conda is absent, the environment only when its Python is missing or not the pinned
one, pip only for requirements not yet met; a host that is already right gets no change.
"""

from __future__ import annotations

from io import BytesIO

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server

from plan.conda import CondaPlan, create_env_command, installer_command, pip_command, pip_remove_command
from plan.host import HostPlan
from tasks.apt_lists import update_once
from tasks.install_venv import pip_install_args
from tasks.service_account import service_account, wheelhouse


def _conda_ops(plan: HostPlan, conda: CondaPlan) -> list[OperationMeta]:
    if conda.install_miniconda:
        server.shell(name=f"Miniconda in {conda.prefix} (SHA-256 checked)", commands=[installer_command(conda)])
    if conda.write_condarc:
        files.put(name="conda channels (.condarc)", src=BytesIO(conda.condarc.encode()), dest=conda.condarc_path,
                  user="root", group="root", mode="644")
    if conda.create_env or conda.recreate_env:
        server.shell(name=f"conda environment {conda.env} (Python {conda.python})",
                     commands=[create_env_command(conda)])
    if conda.pip_conf_action == "write" and conda.pip_conf:
        files.put(name="pip index of the environment (pip.conf)", src=BytesIO(conda.pip_conf.encode()),
                  dest=conda.pip_conf_path, user="root", group="root", mode="644")
    elif conda.pip_conf_action == "remove":
        files.file(name="pip index of the environment (pip.conf)", path=conda.pip_conf_path, present=False)
    changes = []
    if conda.pip_install:
        wheelhouse(plan.setup)
        changes.append(server.shell(name=f"Install {', '.join(conda.pip_install)} in the conda environment",
                                    commands=[pip_command(conda, pip_install_args(plan.setup))]))
    if conda.pip_remove:
        changes.append(server.shell(
            name="Remove packages that break this build",
            commands=[pip_remove_command(conda)]))
    return changes


@deploy("Install vLLM (conda runtime)")
def install_conda(plan: HostPlan) -> list[OperationMeta]:
    """Returns the operations whose change means the service must restart."""
    conda = plan.conda
    assert conda is not None, "the host plan decides the conda steps for the conda runtime"
    if conda.prerequisites:
        apt.packages(name="Tools to download Miniconda", packages=list(conda.prerequisites), no_recommends=True,
                     **update_once())
    service_account(plan.setup, plan.facts.install.account if plan.facts.install else None)
    return _conda_ops(plan, conda)
