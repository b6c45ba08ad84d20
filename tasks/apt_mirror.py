"""apt sources from the mirror preset: the decisions of plan.apt_mirror, applied."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pyinfra import host
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server

from facts import host as fact
from plan.apt_mirror import MANAGED_FILE, AptMirrorError, move_commands, plan_apt_mirror, watched_paths


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
