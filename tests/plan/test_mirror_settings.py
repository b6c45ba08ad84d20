"""Mirror presets and conda settings: one switch for every download, per-URL overrides, each bad value named."""

from __future__ import annotations

import pytest

from plan.mirror_presets import MIRROR_PRESETS
from plan.settings import MIRROR_KEYS, SettingsError, load_settings


def _problems(data: dict) -> dict[str, str]:
    with pytest.raises(SettingsError) as info:
        load_settings(data)
    return dict(info.value.problems)


def test_every_preset_sets_every_key() -> None:
    presets = MIRROR_PRESETS
    assert set(presets) == {"upstream", "tuna", "aliyun", "ustc", "custom"}
    for name, preset in presets.items():
        assert set(preset) == set(MIRROR_KEYS), name
    assert all(value is None for value in presets["custom"].values())


def test_upstream_leaves_apt_and_pip_to_the_host_and_tools() -> None:
    settings = load_settings({})
    assert settings.mirror_preset == "upstream"
    assert settings.apt_mirror is None and settings.pip_index_url is None and settings.hf_endpoint is None
    assert settings.docker_ce_repo == "https://download.docker.com/linux"
    assert settings.nvidia_container_repo == "https://nvidia.github.io/libnvidia-container"
    assert settings.conda_channels == ("conda-forge",) and settings.docker_registry_mirrors == ()


def test_tuna_points_everything_at_tsinghua_as_seed_001_does() -> None:
    tuna = load_settings({"mirror_preset": "tuna"})
    assert tuna.pip_index_url == "https://pypi.tuna.tsinghua.edu.cn/simple/"
    assert tuna.apt_mirror == "https://mirrors.tuna.tsinghua.edu.cn"
    assert tuna.conda_installer_url == "https://mirrors.tuna.tsinghua.edu.cn/anaconda/miniconda/"
    assert tuna.conda_channels[:3] == ("https://mirrors.tuna.tsinghua.edu.cn/anaconda/cloud/conda-forge/",
                                       "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/free/",
                                       "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main/")
    assert tuna.docker_ce_repo == "https://mirrors.tuna.tsinghua.edu.cn/docker-ce/linux"


@pytest.mark.parametrize("preset", ["tuna", "aliyun", "ustc"])
def test_china_presets_use_mirrors_for_every_download(preset: str) -> None:
    settings = load_settings({"mirror_preset": preset})
    urls = [settings.pip_index_url, settings.apt_mirror, settings.conda_installer_url, settings.docker_ce_repo,
            settings.nvidia_container_repo, *settings.conda_channels]
    assert all(url.startswith("https://mirrors.") or url.startswith("https://pypi.tuna") or url == "defaults"
               for url in urls), urls


def test_a_single_url_can_be_overridden() -> None:
    settings = load_settings({"mirror_preset": "tuna", "docker_ce_repo": "https://repo.example.internal/linux/",
                              "apt_mirror": "host", "docker_registry_mirrors": ["https://hub.example.internal"]})
    assert settings.docker_ce_repo == "https://repo.example.internal/linux"
    assert settings.apt_mirror is None, "'host' keeps the host's own sources"
    assert settings.docker_registry_mirrors == ("https://hub.example.internal",)
    assert settings.nvidia_container_repo == "https://mirrors.ustc.edu.cn/libnvidia-container"


@pytest.mark.parametrize(
    ("runtime", "missing"),
    [
        ("venv", {"pip_index_url", "apt_mirror"}),
        ("docker", {"pip_index_url", "apt_mirror", "docker_ce_repo", "nvidia_container_repo",
                    "docker_registry_mirrors"}),
        ("conda", {"pip_index_url", "apt_mirror", "conda_installer_url", "conda_channels"}),
    ],
)
def test_custom_names_every_url_the_runtime_needs(runtime: str, missing: set[str]) -> None:
    problems = _problems({"mirror_preset": "custom", "vllm_runtime": runtime})
    assert set(problems) == missing
    assert all("custom" in message for message in problems.values())


def test_custom_docker_on_cpu_needs_no_toolkit_repository() -> None:
    problems = _problems({"mirror_preset": "custom", "vllm_runtime": "docker", "vllm_device": "cpu"})
    assert set(problems) == {"pip_index_url", "apt_mirror", "docker_ce_repo", "docker_registry_mirrors"}


def test_custom_with_every_url_set_is_valid() -> None:
    settings = load_settings({
        "mirror_preset": "custom", "vllm_runtime": "conda", "pip_index_url": "https://pip.example.internal/simple",
        "apt_mirror": "https://apt.example.internal", "conda_installer_url": "https://conda.example.internal/",
        "conda_channels": ["https://conda.example.internal/conda-forge"],
    })
    assert settings.conda_channels == ("https://conda.example.internal/conda-forge",)
    assert settings.conda_env_prefix == "/opt/vllm/miniconda3/envs/vllm"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("apt_mirror", "mirrors.tuna.tsinghua.edu.cn", "http(s)://"),
        ("docker_ce_repo", "ftp://mirror/docker-ce", "http(s)://"),
        ("nvidia_container_repo", 42, "http(s)://"),
        ("conda_installer_url", "file:///srv/conda", "http(s)://"),
        ("conda_channels", "conda-forge", "must be a list"),
        ("conda_channels", ["conda forge"], "channel names"),
        ("conda_default_channels", ["pkgs/main"], "http(s)://"),
        ("docker_registry_mirrors", ["registry.example"], "http(s)://"),
        ("conda_installer", "Miniconda3-latest-MacOSX-arm64.sh", "Linux installer"),
        ("conda_installer_sha256", "B6597785", "64 lower-case hex"),
        ("conda_python", "3", "minor version"),
        ("conda_prefix", "opt/conda", "absolute path"),
        ("vllm_runtime", "podman", "venv, docker, conda"),
    ],
)
def test_each_bad_value_is_named(field: str, value: object, fragment: str) -> None:
    problems = _problems({field: value})
    assert field in problems, problems
    assert fragment in problems[field]


def test_a_preset_missing_a_key_is_named() -> None:
    presets = MIRROR_PRESETS
    broken = {**presets, "mine": {"pip_index_url": None}}
    problems = _problems({"mirror_presets": broken, "mirror_preset": "mine"})
    assert "docker_ce_repo" in problems["mirror_presets"]


def test_conda_prefix_follows_vllm_prefix() -> None:
    settings = load_settings({"vllm_prefix": "/srv/vllm", "vllm_runtime": "conda"})
    assert settings.conda_prefix == "/srv/vllm/miniconda3"
    assert settings.conda_env_prefix == "/srv/vllm/miniconda3/envs/vllm"

