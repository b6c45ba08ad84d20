"""The service account, its state directories and the offline wheelhouse: the part every runtime's install shares.

One helper so the venv, conda and docker stages cannot drift apart in names, owners or modes
(the whole-deploy tests match operations by these names).
"""

from __future__ import annotations

from pyinfra.operations import files, server

from plan.host import HostSetup


def service_user(setup: HostSetup) -> None:
    """The system account vLLM runs as (venv and conda; the docker unit runs as root)."""
    server.user(
        name=f"Service user {setup.user}",
        user=setup.user,
        system=True,
        home=setup.state_dir,
        shell="/usr/sbin/nologin",
        create_home=False,
        ensure_home=False,  # the state directories set their own owners and modes
    )


def service_directories(setup: HostSetup, owner: str) -> None:
    """The prefix, the state directories (owned by `owner`) and the config directory (readable by `owner`)."""
    files.directory(name="vLLM prefix", path=setup.prefix, user="root", group="root", mode="755")
    for path in (setup.state_dir, f"{setup.state_dir}/cache", f"{setup.state_dir}/tmp"):
        files.directory(name=f"Service state {path}", path=path, user=owner, group=owner, mode="750")
    files.directory(name="Config directory", path=setup.config_dir, user="root", group=owner, mode="750")


def service_account(setup: HostSetup) -> None:
    """The service user, then its directories owned by it."""
    service_user(setup)
    service_directories(setup, owner=setup.user)


def wheelhouse(setup: HostSetup) -> None:
    """Copy the controller's offline wheelhouse to the host when one is set (pip then installs from it alone)."""
    if setup.install.wheelhouse_local and setup.install.wheelhouse_remote:
        files.sync(
            name="Offline wheelhouse",
            src=setup.install.wheelhouse_local,
            dest=setup.install.wheelhouse_remote,
            user="root",
            group="root",
            mode="644",
            dir_mode="755",
            delete=True,
        )
