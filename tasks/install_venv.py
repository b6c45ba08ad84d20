"""Install stage for the venv runtime: system packages, service user, vLLM in a virtualenv."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, pip

from plan.host import HostPlan, HostSetup
from plan.packages import pip_satisfied
from plan.quoting import sh_join
from tasks.service_account import service_account, wheelhouse


def pip_install_args(setup: HostSetup) -> str:
    """Offline wheelhouse beats a mirror preset; neither keeps pip's own default index.

    Shell-quoted: pyinfra pastes extra_install_args into the root command line as they are.
    """
    if setup.install.wheelhouse_remote:
        return sh_join(["--no-index", "--find-links", setup.install.wheelhouse_remote])
    if setup.install.index_url:
        return sh_join(["--index-url", setup.install.index_url])
    return ""


@deploy("Install vLLM (venv runtime)")
def install_venv(plan: HostPlan) -> list[OperationMeta]:
    """Returns the operations whose change means the service must restart."""
    setup = plan.setup
    apt.packages(
        name="System packages for a Python virtualenv",
        packages=list(setup.install.apt_packages),
        update=True,
        cache_time=24 * 3600,
        no_recommends=True,
    )
    service_account(setup)
    wheelhouse(setup)
    pip.venv(name="vLLM virtualenv", path=setup.venv, python="python3")
    installed = plan.facts.install.venv_packages if plan.facts.install else None
    wanted = (setup.install.package, *setup.install.extra_packages)
    if installed is not None and pip_satisfied(installed, wanted, setup.install.remove_packages):
        return []  # what pip would find itself, asked once at planning instead of once per pip operation
    extra = pip_install_args(setup)
    changes = [pip.packages(
        name=f"Install {setup.install.package}",
        packages=[setup.install.package, *setup.install.extra_packages],
        virtualenv=setup.venv,
        extra_install_args=extra or None,
    )]
    if setup.install.remove_packages:
        changes.append(pip.packages(
            name="Remove packages that break this build",
            packages=list(setup.install.remove_packages),
            present=False,
            virtualenv=setup.venv,
        ))
    return changes
