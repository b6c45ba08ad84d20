"""Install stage for the docker runtime: docker-ce and, on GPU hosts, the NVIDIA container toolkit through the
mirror preset, daemon.json, then the pinned vLLM image and the service's state directories.

Every decision is the host plan's (plan.docker_engine, from the host's facts): packages are installed only when
dpkg lacks them, nvidia-ctk runs only when daemon.json has no nvidia runtime, docker restarts only
when daemon.json changed, so a host that is already right gets no change.
"""

from __future__ import annotations

from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, docker, files, server, systemd
from pyinfra.operations.util import any_changed

from plan.docker_engine import DAEMON_JSON, TOOLKIT_PACKAGES, DockerEnginePlan, key_command
from plan.host import HostPlan
from tasks.apt_lists import refreshed, update_once
from tasks.service_account import service_directories


def docker_engine(engine: DockerEnginePlan) -> list[OperationMeta]:
    """Repositories, packages and daemon.json of the engine; returns the operations that ran."""
    for warning in engine.warnings:
        logger.warning(f"[{host.name}] {warning}")
    ops = []
    if engine.prerequisites:
        ops.append(apt.packages(name="Tools to fetch apt keys", packages=list(engine.prerequisites),
                                no_recommends=True, **update_once()))
    for key in engine.keys:
        ops.append(server.shell(name=f"apt key {key.path}", commands=[key_command(key)]))
    for repo in engine.repo_files:
        ops.append(files.put(name=f"apt repository {repo.path}", src=BytesIO(repo.content.encode()), dest=repo.path,
                             user="root", group="root", mode="644"))
    if engine.packages:
        toolkit = any(name in TOOLKIT_PACKAGES for name in engine.packages)
        ops.append(apt.packages(name="Docker engine and NVIDIA container toolkit" if toolkit else "Docker engine",
                                packages=list(engine.packages),
                                update=True))  # the repositories above are new: their lists are not in any cache
        refreshed()
    daemon_ops = []
    if engine.configure_runtime:
        daemon_ops.append(server.shell(name="nvidia runtime in daemon.json",
                                       commands=["nvidia-ctk runtime configure --runtime=docker"]))
    if engine.daemon_json is not None:
        daemon_ops.append(files.put(name="Registry mirrors in daemon.json", src=BytesIO(engine.daemon_json.encode()),
                                    dest=DAEMON_JSON, user="root", group="root", mode="644"))
    if daemon_ops:
        # Restarted when running, started when not: either way docker reads the new daemon.json.
        daemon_ops.append(systemd.service(name="Restart docker (daemon.json changed)", service="docker.service",
                                          running=True, restarted=True, _if=any_changed(*daemon_ops)))
    return ops + daemon_ops


@deploy("Install vLLM (docker runtime)")
def install_docker(plan: HostPlan) -> list[OperationMeta]:
    """Returns the operations whose change means the service must restart."""
    assert plan.docker_engine is not None, "the host plan decides the engine for the docker runtime"
    docker_engine(plan.docker_engine)
    service_directories(plan.setup, owner="root")  # the docker unit runs as root: no service user
    return [docker.image(name=f"Image {plan.setup.docker_image}", image=plan.setup.docker_image)]
