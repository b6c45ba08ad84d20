"""apt sources from the mirror preset: the decisions of plan.apt_mirror, applied."""

from __future__ import annotations

from io import BytesIO

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server

from plan.apt_mirror import MANAGED_FILE, AptMirrorPlan, move_commands
from plan.host import HostPlan
from tasks.apt_lists import refreshed


def apt_mirror(apt: AptMirrorPlan) -> list[OperationMeta]:
    """Write the preset's sources file and move the host's own aside (or back); returns the operations, if any."""
    ops = []
    if apt.content is not None:
        ops.append(files.put(name="apt sources from the mirror preset", src=BytesIO(apt.content.encode()),
                             dest=MANAGED_FILE, user="root", group="root", mode="644"))
    moves = move_commands(apt)
    if moves:
        ops.append(server.shell(name="Host's own apt sources kept in /etc/apt/vllm-deploy-backup", commands=moves))
    return ops


@deploy("apt sources")
def apt_sources(plan: HostPlan) -> list[OperationMeta]:
    """The mirror preset's apt sources, first of all stages, so the driver and every package use them.

    When the sources change, apt's lists are refreshed at once: lists of the old sources, however
    fresh, know nothing of the new ones, and later stages skip `apt-get update` on a fresh cache.
    """
    ops = apt_mirror(plan.apt) if plan.apt else []
    if ops:
        ops.append(server.shell(name="apt lists from the new sources", commands=[
            "apt-get update -q && mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp"]))
        refreshed()
    return ops
