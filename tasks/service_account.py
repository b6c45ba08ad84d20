"""The service account, its state directories and the offline wheelhouse: the part every runtime's install shares.

One helper so the venv, conda and docker stages cannot drift apart in names, owners or modes
(the whole-deploy tests match operations by these names).
"""

from __future__ import annotations

from typing import Protocol

from pyinfra.operations import files, server

from plan.service import InstallPlan


class ServiceLayout(Protocol):
    """What these operations read: a service plan, or a host plan through its first instance."""

    @property
    def user(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def state_dir(self) -> str: ...
    @property
    def config_dir(self) -> str: ...
    @property
    def install(self) -> InstallPlan: ...


def service_user(plan: ServiceLayout) -> None:
    """The system account vLLM runs as (venv and conda; the docker unit runs as root)."""
    server.user(
        name=f"Service user {plan.user}",
        user=plan.user,
        system=True,
        home=plan.state_dir,
        shell="/usr/sbin/nologin",
        create_home=False,
        ensure_home=False,  # the state directories set their own owners and modes
    )


def service_directories(plan: ServiceLayout, owner: str) -> None:
    """The prefix, the state directories (owned by `owner`) and the config directory (readable by `owner`)."""
    files.directory(name="vLLM prefix", path=plan.prefix, user="root", group="root", mode="755")
    for path in (plan.state_dir, f"{plan.state_dir}/cache", f"{plan.state_dir}/tmp"):
        files.directory(name=f"Service state {path}", path=path, user=owner, group=owner, mode="750")
    files.directory(name="Config directory", path=plan.config_dir, user="root", group=owner, mode="750")


def service_account(plan: ServiceLayout) -> None:
    """The service user, then its directories owned by it."""
    service_user(plan)
    service_directories(plan, owner=plan.user)


def wheelhouse(plan: ServiceLayout) -> None:
    """Copy the controller's offline wheelhouse to the host when one is set (pip then installs from it alone)."""
    if plan.install.wheelhouse_local and plan.install.wheelhouse_remote:
        files.sync(
            name="Offline wheelhouse",
            src=plan.install.wheelhouse_local,
            dest=plan.install.wheelhouse_remote,
            user="root",
            group="root",
            mode="644",
            dir_mode="755",
            delete=True,
        )
