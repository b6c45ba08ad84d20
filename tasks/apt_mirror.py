"""apt sources from the mirror preset: the decisions of plan.apt_mirror, applied."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server

from facts import host as fact
from plan.apt_mirror import MANAGED_FILE, AptMirrorError, move_commands, plan_apt_mirror, watched_paths
from plan.host import HostPlan


def apt_mirror(mirror: str | None, os_release: Any) -> list[OperationMeta]:
    """Point apt at `mirror` (None: the host's own sources); returns the operations, if any."""
    os_id = getattr(os_release, "id", "") or ""
    current = host.get_fact(fact.TextFiles, paths=watched_paths(os_id)) if mirror or os_id else {}
    try:
        plan = plan_apt_mirror(mirror, os_release, current)
    except AptMirrorError as error:
        raise DeployError(f"{host.name}: apt_mirror: {error}") from None
    ops = []
    if plan.content is not None:
        ops.append(files.put(name="apt sources from the mirror preset", src=BytesIO(plan.content.encode()),
                             dest=MANAGED_FILE, user="root", group="root", mode="644"))
    moves = move_commands(plan)
    if moves:
        ops.append(server.shell(name="Host's own apt sources kept in /etc/apt/vllm-deploy-backup", commands=moves))
    return ops


@deploy("apt sources")
def apt_sources(plan: HostPlan) -> list[OperationMeta]:
    """The mirror preset's apt sources, first of all stages, so the driver and every package use them.

    When the sources change, apt's lists are refreshed at once: lists of the old sources, however
    fresh, know nothing of the new ones, and later stages skip `apt-get update` on a fresh cache.
    """
    ops = apt_mirror(plan.host_settings.apt_mirror, plan.facts.os)
    if ops:
        ops.append(server.shell(name="apt lists from the new sources", commands=[
            "apt-get update -q && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp"]))
    return ops
