"""The service account, its state directories and the offline wheelhouse: the part every runtime's install shares.

One helper so the venv, conda and docker stages cannot drift apart in names, owners or modes
(the whole-deploy tests match operations by these names).
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server

from facts.model import Account
from plan.host import HostSetup
from tasks.directory_copy import copy_directory, wait_for_copy

WHEELHOUSE_MARKER = ".vllm-deploy-synced"
# Hosts whose wheelhouse copy this run has started, and waited for: the hub CLI's install, before the runtime's,
# may need it first; the runtime's stage then finds it done.
_STARTED: set[str] = set()
_FINISHED: set[str] = set()


NOLOGIN = "/usr/sbin/nologin"


def service_user(setup: HostSetup, existing: Account | None = None) -> None:
    """The system account vLLM runs as (venv and conda; the docker unit runs as root).

    `existing` is the account as planning found it: when it already has this home and shell, pyinfra's user
    operation would change nothing, and its check (every account's groups and homes) is left out."""
    if existing and existing.home == setup.state_dir and existing.shell == NOLOGIN:
        return
    server.user(
        name=f"Service user {setup.user}",
        user=setup.user,
        system=True,
        home=setup.state_dir,
        shell=NOLOGIN,
        create_home=False,
        ensure_home=False,  # the state directories set their own owners and modes
    )


def service_directories(setup: HostSetup, owner: str) -> None:
    """The prefix, the state directories (owned by `owner`) and the config directory (readable by `owner`)."""
    files.directory(name="vLLM prefix", path=setup.prefix, user="root", group="root", mode="755")
    for path in (setup.state_dir, f"{setup.state_dir}/cache", f"{setup.state_dir}/tmp"):
        files.directory(name=f"Service state {path}", path=path, user=owner, group=owner, mode="750")
    files.directory(name="Config directory", path=setup.config_dir, user="root", group=owner, mode="750")


def service_account(setup: HostSetup, existing: Account | None = None) -> None:
    """The service user, then its directories owned by it."""
    service_user(setup, existing)
    service_directories(setup, owner=setup.user)


def wheelhouse_digest(root: str | Path) -> str:
    """The wheelhouse's identity: every file's name, size and modification time (wheels never change in place;
    one rebuilt or replaced changes its size or time). Cheap on 1 GB of wheels, unlike hashing them each run."""
    lines = [f"{path.relative_to(root).as_posix()} {stat.st_size} {stat.st_mtime_ns}"
             for path in sorted(Path(root).rglob("*")) if path.is_file() and (stat := path.stat())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def wheelhouse(setup: HostSetup) -> None:
    """Copy the controller's offline wheelhouse to the host when one is set (pip then installs from it alone)."""
    start_wheelhouse(setup)
    finish_wheelhouse(setup)


def start_wheelhouse(setup: HostSetup, background: bool = False) -> None:
    """Start the wheelhouse's copy (in the background: on its own SSH channel while apt and the service account
    run; `finish_wheelhouse` waits for it). Skipped while the marker holds the wheelhouse's digest: even with
    nothing to send, the copy lists the host's files, one command. Once per host and run."""
    if host.name in _STARTED or _wheelhouse_digest_if_stale(setup) is None:
        return
    _STARTED.add(host.name)
    copy_directory(
        name="Offline wheelhouse",
        src=setup.install.wheelhouse_local,
        dest=setup.install.wheelhouse_remote,
        keep=[WHEELHOUSE_MARKER],
        delete=True,
        background=background,
    )


def finish_wheelhouse(setup: HostSetup) -> None:
    """Wait for a background copy, then write the marker (only after a complete copy: the next run skips it)."""
    digest = _wheelhouse_digest_if_stale(setup)
    if digest is None or host.name in _FINISHED:
        return
    _FINISHED.add(host.name)
    wait_for_copy(name="Offline wheelhouse copied", dest=setup.install.wheelhouse_remote)
    files.put(name="Offline wheelhouse marker (its digest: the next run skips the sync)",
              src=BytesIO(f"{digest}\n".encode()), dest=f"{setup.install.wheelhouse_remote}/{WHEELHOUSE_MARKER}",
              user="root", group="root", mode="644")


def _wheelhouse_digest_if_stale(setup: HostSetup) -> str | None:
    """The wheelhouse's digest when the host's copy needs a sync; None without a wheelhouse or when it is current."""
    if not (setup.install.wheelhouse_local and setup.install.wheelhouse_remote):
        return None
    digest = wheelhouse_digest(setup.install.wheelhouse_local)
    synced = host.get_fact(FileContents, path=f"{setup.install.wheelhouse_remote}/{WHEELHOUSE_MARKER}")
    return None if synced and synced[0].strip() == digest else digest
