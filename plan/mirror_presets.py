"""Mirror presets: what one switch (`mirror_preset`) points apt, pip, conda, docker and the model hub at.

Data only; the `mirror_presets` setting defaults to this dict, so a site can add its own preset.
"upstream" is every tool's own default (apt: the host's sources are left untouched; conda:
conda-forge, because Anaconda's `defaults` channels refuse unattended use until their Terms of
Service are accepted).
"""

from __future__ import annotations

from typing import Any

MIRROR_PRESETS: dict[str, dict[str, Any]] = {
    "upstream": {
        "pip_index_url": None,
        "hf_endpoint": None,
        "apt_mirror": None,
        "conda_installer_url": "https://repo.anaconda.com/miniconda/",
        "conda_channels": ["conda-forge"],
        "conda_default_channels": None,
        "docker_ce_repo": "https://download.docker.com/linux",
        "nvidia_container_repo": "https://nvidia.github.io/libnvidia-container",
        "docker_registry_mirrors": [],
        "grafana_apt_repo": "https://apt.grafana.com",
    },
    # Tsinghua TUNA. conda: seed 001's `conda config --add channels` (main, free, conda-forge: the last added
    # comes first, and conda keeps `defaults` last), with `defaults` itself pointed at TUNA as TUNA's help
    # page does. TUNA's libnvidia-container path has been reported answering 404, so the toolkit comes
    # from USTC's mirror of it.
    "tuna": {
        "pip_index_url": "https://pypi.tuna.tsinghua.edu.cn/simple/",
        "hf_endpoint": "https://hf-mirror.com",
        "apt_mirror": "https://mirrors.tuna.tsinghua.edu.cn",
        "conda_installer_url": "https://mirrors.tuna.tsinghua.edu.cn/anaconda/miniconda/",
        "conda_channels": [
            "https://mirrors.tuna.tsinghua.edu.cn/anaconda/cloud/conda-forge/",
            "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/free/",
            "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main/",
            "defaults",
        ],
        "conda_default_channels": [
            "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main",
            "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/r",
            "https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/msys2",
        ],
        "docker_ce_repo": "https://mirrors.tuna.tsinghua.edu.cn/docker-ce/linux",
        "nvidia_container_repo": "https://mirrors.ustc.edu.cn/libnvidia-container",
        "docker_registry_mirrors": [],
        "grafana_apt_repo": "https://mirrors.tuna.tsinghua.edu.cn/grafana/apt",
    },
    # Aliyun. Its Docker Hub accelerator is per account (https://<id>.mirror.aliyuncs.com, from the
    # Container Registry console): put yours in docker_registry_mirrors.
    "aliyun": {
        "pip_index_url": "https://mirrors.aliyun.com/pypi/simple/",
        "hf_endpoint": "https://hf-mirror.com",
        "apt_mirror": "https://mirrors.aliyun.com",
        "conda_installer_url": "https://mirrors.aliyun.com/anaconda/miniconda/",
        "conda_channels": [
            "https://mirrors.aliyun.com/anaconda/cloud/conda-forge/",
            "https://mirrors.aliyun.com/anaconda/pkgs/main/",
        ],
        "conda_default_channels": None,
        "docker_ce_repo": "https://mirrors.aliyun.com/docker-ce/linux",
        "nvidia_container_repo": "https://mirrors.aliyun.com/libnvidia-container",
        "docker_registry_mirrors": [],
        "grafana_apt_repo": "https://apt.grafana.com",  # no Grafana mirror known there: Grafana's own repository
    },
    # USTC mirrors conda-forge (not Anaconda's own channels); its former Docker Hub mirror
    # (docker.mirrors.ustc.edu.cn) no longer resolves.
    "ustc": {
        "pip_index_url": "https://mirrors.ustc.edu.cn/pypi/simple",
        "hf_endpoint": "https://hf-mirror.com",
        "apt_mirror": "https://mirrors.ustc.edu.cn",
        "conda_installer_url": "https://mirrors.ustc.edu.cn/anaconda/miniconda/",
        "conda_channels": ["https://mirrors.ustc.edu.cn/anaconda/cloud/conda-forge/"],
        "conda_default_channels": None,
        "docker_ce_repo": "https://mirrors.ustc.edu.cn/docker-ce/linux",
        "nvidia_container_repo": "https://mirrors.ustc.edu.cn/libnvidia-container",
        "docker_registry_mirrors": [],
        "grafana_apt_repo": "https://apt.grafana.com",  # no Grafana mirror known there: Grafana's own repository
    },
    # Every URL from the per-URL settings above; validation names each one the host's runtime needs.
    "custom": {
        "pip_index_url": None,
        "hf_endpoint": None,
        "apt_mirror": None,
        "conda_installer_url": None,
        "conda_channels": None,
        "conda_default_channels": None,
        "docker_ce_repo": None,
        "nvidia_container_repo": None,
        "docker_registry_mirrors": None,
        "grafana_apt_repo": None,
    },
}
