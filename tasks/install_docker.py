"""Install stage for the docker runtime: the pinned vLLM image and the service's state directories.

Docker itself and the NVIDIA container toolkit must already work on the host
(checked before any change); the unit runs the image with the plan's flags.
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import docker, files

from plan.service import ServicePlan


@deploy("Install vLLM (docker runtime)")
def install_docker(plan: ServicePlan) -> list[OperationMeta]:
    """Returns the operations whose change means the service must restart."""
    files.directory(name="vLLM prefix", path=plan.prefix, user="root", group="root", mode="755")
    for path in (plan.state_dir, f"{plan.state_dir}/cache", f"{plan.state_dir}/tmp"):
        files.directory(name=f"Service state {path}", path=path, user="root", group="root", mode="750")
    files.directory(name="Config directory", path=plan.config_dir, user="root", group="root", mode="750")
    return [docker.image(name=f"Image {plan.docker_image}", image=plan.docker_image)]
