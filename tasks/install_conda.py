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
from tasks.install_venv import pip_install_args


def _service_account(plan: HostPlan) -> None:
    """The service user and its directories, as the venv runtime has them."""
    server.user(name=f"Service user {plan.user}", user=plan.user, system=True, home=plan.state_dir,
                shell="/usr/sbin/nologin", create_home=False, ensure_home=False)
    files.directory(name="vLLM prefix", path=plan.prefix, user="root", group="root", mode="755")
    for path in (plan.state_dir, f"{plan.state_dir}/cache", f"{plan.state_dir}/tmp"):
        files.directory(name=f"Service state {path}", path=path, user=plan.user, group=plan.user, mode="750")
    files.directory(name="Config directory", path=plan.config_dir, user="root", group=plan.user, mode="750")


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
        if plan.install.wheelhouse_local and plan.install.wheelhouse_remote:
            files.sync(name="Offline wheelhouse", src=plan.install.wheelhouse_local,
                       dest=plan.install.wheelhouse_remote, user="root", group="root", mode="644", dir_mode="755",
                       delete=True)
        changes.append(server.shell(name=f"Install {', '.join(conda.pip_install)} in the conda environment",
                                    commands=[pip_command(conda, pip_install_args(plan))]))
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
        apt.packages(name="Tools to download Miniconda", packages=list(conda.prerequisites), update=True,
                     no_recommends=True)
    _service_account(plan)
    return _conda_ops(plan, conda)
