"""Docker engine (and, for GPU hosts, the NVIDIA container toolkit) for the docker runtime: pure decisions
from host facts.

docker-ce comes from Docker's apt repository (or the preset's mirror of it), the toolkit from
NVIDIA's (or a mirror), each with its own keyring and sources file. A CPU host gets no toolkit:
its container asks for no GPUs, so nothing of NVIDIA's is needed there. Packages are installed only
when dpkg lacks them, `nvidia-ctk runtime configure --runtime=docker` runs only when daemon.json
has no nvidia runtime, and registry mirrors are merged into daemon.json keeping every other key the
user set. A host where all of this is already right gets an empty plan: no change, no restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plan.apt_mirror import distribution
from plan.packages import PREREQUISITES, installed, missing_packages
from plan.quoting import config_word, sh

KEYRINGS_DIR = "/etc/apt/keyrings"
DOCKER_KEY = f"{KEYRINGS_DIR}/docker.asc"
DOCKER_SOURCES = "/etc/apt/sources.list.d/docker.sources"
NVIDIA_KEY = f"{KEYRINGS_DIR}/nvidia-container-toolkit.asc"
NVIDIA_SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
DAEMON_JSON = "/etc/docker/daemon.json"
ENGINE_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io")
TOOLKIT_PACKAGES = ("nvidia-container-toolkit",)
# Distribution engines that conflict with docker-ce (containerd.io replaces containerd); if one
# is installed it is used as it is.
DISTRO_ENGINES = ("docker.io",)
DPKG_NAMES = (*PREREQUISITES, *ENGINE_PACKAGES, *TOOLKIT_PACKAGES, *DISTRO_ENGINES)
# What `nvidia-ctk runtime configure --runtime=docker` adds under "runtimes".
NVIDIA_RUNTIME = {"args": [], "path": "nvidia-container-runtime"}


class DockerEngineError(ValueError):
    """The engine cannot be set up on this host as it is (unknown OS, unreadable daemon.json)."""


@dataclass(frozen=True)
class KeyDownload:
    url: str
    path: str


@dataclass(frozen=True)
class RepoFile:
    path: str
    content: str


@dataclass(frozen=True)
class DockerEnginePlan:
    """The changes that bring docker-ce, the toolkit (GPU hosts) and daemon.json to what the settings ask for."""

    prerequisites: tuple[str, ...] = ()
    keys: tuple[KeyDownload, ...] = ()
    repo_files: tuple[RepoFile, ...] = ()
    packages: tuple[str, ...] = ()
    configure_runtime: bool = False
    daemon_json: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.prerequisites or self.keys or self.repo_files or self.packages or self.configure_runtime
                    or self.daemon_json is not None)


def docker_repo(base: str, os_id: str) -> str:
    """Docker's repository layout: <base>/ubuntu or <base>/debian, with the key at /gpg.

    The base lands in apt source files, which have no quoting: it must be one word.
    """
    return f"{config_word(base, 'docker_ce_repo').rstrip('/')}/{os_id}"


def render_docker_sources(base: str, os_id: str, codename: str) -> str:
    """deb822 sources for docker-ce, as Docker's install guide writes docker.sources."""
    return (
        "Types: deb\n"
        f"URIs: {docker_repo(base, os_id)}\n"
        f"Suites: {codename}\n"
        "Components: stable\n"
        f"Signed-By: {DOCKER_KEY}\n"
    )


def render_nvidia_list(base: str) -> str:
    """NVIDIA's published one-line source (apt expands $(ARCH)), signed by our keyring."""
    base = config_word(base, "nvidia_container_repo").rstrip("/")
    return f"deb [signed-by={NVIDIA_KEY}] {base}/stable/deb/$(ARCH) /\n"


def merge_daemon_json(current: Mapping[str, Any], registry_mirrors: tuple[str, ...],
                      add_runtime: bool) -> dict[str, Any] | None:
    """daemon.json with our keys merged in, or None when the current file already has them.

    Every other key stays. A non-empty registry_mirrors replaces the list (so switching presets
    works); an empty one leaves the user's list alone.
    """
    merged = json.loads(json.dumps(dict(current)))
    changed = False
    if add_runtime:
        runtimes = merged.get("runtimes") if isinstance(merged.get("runtimes"), dict) else {}
        runtimes.setdefault("nvidia", dict(NVIDIA_RUNTIME))
        merged["runtimes"] = runtimes
        changed = True
    if registry_mirrors and merged.get("registry-mirrors") != list(registry_mirrors):
        merged["registry-mirrors"] = list(registry_mirrors)
        changed = True
    return merged if changed else None


def plan_docker_engine(*, docker_ce_repo: str | None, nvidia_container_repo: str | None,
                       registry_mirrors: tuple[str, ...], os_release: Any, packages: Mapping[str, Any],
                       files: Mapping[str, str | None], hashes: Mapping[str, str | None],
                       daemon: Any, gpus: bool) -> DockerEnginePlan:
    """Decide from the facts (dpkg, repo files, keyring hashes, daemon.json) what must change.

    `gpus`: the containers get NVIDIA GPUs (vllm_device cuda), so the toolkit and its runtime are
    needed; without, only the engine and the registry mirrors (nvidia_container_repo may be unset).
    """
    try:
        os_id, codename = distribution(os_release)
    except ValueError as error:
        raise DockerEngineError(f"vllm_runtime: docker: {error}") from None
    if docker_ce_repo is None or (gpus and nvidia_container_repo is None):
        missing = "docker_ce_repo" if docker_ce_repo is None else "nvidia_container_repo"
        raise DockerEngineError(f"{missing}: the mirror preset sets none; set it for the docker runtime")
    warnings: list[str] = []
    keys: list[KeyDownload] = []
    repo_files: list[RepoFile] = []
    wanted: list[str] = []
    distro_engine = next((name for name in DISTRO_ENGINES if installed(packages, name)), None)
    if distro_engine:
        warnings.append(f"{distro_engine} is installed: using it rather than installing docker-ce")
    else:
        if hashes.get(DOCKER_KEY) is None:
            keys.append(KeyDownload(f"{docker_repo(docker_ce_repo, os_id)}/gpg", DOCKER_KEY))
        content = render_docker_sources(docker_ce_repo, os_id, codename)
        if files.get(DOCKER_SOURCES) != content:
            repo_files.append(RepoFile(DOCKER_SOURCES, content))
        wanted += ENGINE_PACKAGES
    if gpus and nvidia_container_repo is not None:
        if hashes.get(NVIDIA_KEY) is None:
            keys.append(KeyDownload(f"{nvidia_container_repo.rstrip('/')}/gpgkey", NVIDIA_KEY))
        content = render_nvidia_list(nvidia_container_repo)
        if files.get(NVIDIA_SOURCES) != content:
            repo_files.append(RepoFile(NVIDIA_SOURCES, content))
        wanted += TOOLKIT_PACKAGES
    missing = missing_packages(packages, tuple(wanted))
    prerequisites = missing_packages(packages, PREREQUISITES) if keys else ()

    status = getattr(daemon, "status", "empty")
    if status == "invalid":
        raise DockerEngineError(f"{DAEMON_JSON} on the host is not valid JSON ({daemon.message}); docker refuses "
                                "to start with it: fix or remove it, then deploy again")
    current = dict(getattr(daemon, "data", {}) or {})
    configure = gpus and not getattr(daemon, "nvidia_runtime", False)
    merged = merge_daemon_json(current, tuple(registry_mirrors), add_runtime=configure)
    # nvidia-ctk writes the runtime itself; our file is needed only for what it does not write.
    needs_file = merged is not None and merge_daemon_json(current, tuple(registry_mirrors), add_runtime=False)
    daemon_json = json.dumps(merged, indent=4) + "\n" if merged is not None and needs_file else None
    return DockerEnginePlan(prerequisites=prerequisites, keys=tuple(keys), repo_files=tuple(repo_files),
                            packages=missing, configure_runtime=configure, daemon_json=daemon_json,
                            warnings=tuple(warnings))


def key_command(key: KeyDownload) -> str:
    """Download an (ASCII-armoured) apt key atomically: a failed download leaves no half key behind.

    Root runs it and the URL comes from a setting: every word is shell-quoted.
    """
    part = sh(f"{key.path}.part")
    return (f"install -d -m 0755 {sh(KEYRINGS_DIR)} && curl -fsSL --retry 3 -o {part} {sh(key.url)} && "
            f"chmod 0644 {part} && mv {part} {sh(key.path)}")
