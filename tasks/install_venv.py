"""Install stage for the venv runtime: system packages, service user, vLLM in a virtualenv."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, pip

from plan.quoting import sh_join
from plan.service import ServicePlan
from tasks.service_account import service_account, wheelhouse


def pip_install_args(plan: ServicePlan) -> str:
    """Offline wheelhouse beats a mirror preset; neither keeps pip's own default index.

    Shell-quoted: pyinfra pastes extra_install_args into the root command line as they are.
    """
    if plan.install.wheelhouse_remote:
        return sh_join(["--no-index", "--find-links", plan.install.wheelhouse_remote])
    if plan.install.index_url:
        return sh_join(["--index-url", plan.install.index_url])
    return ""


@deploy("Install vLLM (venv runtime)")
def install_venv(plan: ServicePlan) -> list[OperationMeta]:
    """Returns the operations whose change means the service must restart."""
    apt.packages(
        name="System packages for a Python virtualenv",
        packages=list(plan.install.apt_packages),
        update=True,
        cache_time=24 * 3600,
        no_recommends=True,
    )
    service_account(plan)
    wheelhouse(plan)
    pip.venv(name="vLLM virtualenv", path=plan.venv, python="python3")
    extra = pip_install_args(plan)
    changes = [pip.packages(
        name=f"Install {plan.install.package}",
        packages=[plan.install.package, *plan.install.extra_packages],
        virtualenv=plan.venv,
        extra_install_args=extra or None,
    )]
    if plan.install.remove_packages:
        changes.append(pip.packages(
            name="Remove packages that break this build",
            packages=list(plan.install.remove_packages),
            present=False,
            virtualenv=plan.venv,
        ))
    return changes
