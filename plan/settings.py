"""Validated deployment settings, read from pyinfra host data (inventory + group_data).

Every value is checked here, before any fact is gathered or any change is made,
so a bad inventory fails with the field's name and the fix instead of half a
deploy. Defaults live in one place: ``group_data/all.py``.
"""

from __future__ import annotations

import re
import runpy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = ROOT / "group_data" / "all.py"

MODEL_SOURCES = ("modelscope", "huggingface", "local")
RUNTIMES = ("venv", "docker", "conda")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "float16", "bfloat16", "float32", "half")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists each field and its fix."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"  {name}: {message}" for name, message in problems]
        super().__init__("invalid settings (nothing was changed on the host):\n" + "\n".join(lines))


def load_defaults() -> dict[str, Any]:
    """The documented defaults, read from group_data/all.py (the single source)."""
    values = runpy.run_path(str(DEFAULTS_FILE))
    return {k: v for k, v in values.items() if not k.startswith("__")}


def parse_size(value: Any) -> int:
    """Bytes from an int or a string such as "64M" or "1.5G" (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(value)
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


@dataclass(frozen=True)
class Settings:
    """Typed settings of one host; field names match the group_data keys."""

    model: str
    model_source: str
    model_local_path: str | None
    model_revision: str | None
    model_dir: str
    hf_endpoint: str | None
    vllm_runtime: str
    vllm_version: str
    vllm_package: str | None
    vllm_device: str
    vllm_user: str
    vllm_prefix: str
    vllm_pip_extra_packages: tuple[str, ...]
    vllm_pip_remove_packages: tuple[str, ...] | None
    vllm_wheelhouse: str | None
    vllm_docker_image: str | None
    mirror_preset: str
    pip_index_url: str | None
    vllm_host: str
    vllm_port: int
    vllm_served_model_name: str
    vllm_chat_template: str | None
    vllm_trust_remote_code: bool
    vllm_extra_args: tuple[str, ...]
    vllm_env: dict[str, str] = field(default_factory=dict)
    vllm_tensor_parallel_size: int | None = None
    vllm_pipeline_parallel_size: int | None = None
    vllm_dtype: str | None = None
    vllm_quantization: str | None = None
    vllm_kv_cache_dtype: str | None = None
    vllm_gpu_memory_utilization: float | None = None
    vllm_max_model_len: int | None = None
    vllm_max_num_seqs: int | None = None
    vllm_max_num_batched_tokens: int | None = None
    vllm_enforce_eager: bool | None = None
    vllm_cpu_kv_cache_memory: int = 1 << 30
    vllm_verify_timeout: int = 900
    vllm_verify_prompt: str = "Hello"
    vllm_shutdown_timeout: int = 30
    vllm_deployment: str = "vllm"
    vllm_require_api_key: bool = True
    vllm_api_key: str | None = field(default=None, repr=False)
    vllm_api_key_file: str | None = None
    vllm_advertise_address: str | None = None
    vllm_gateway: bool = False
    vllm_gateway_port: int = 443
    vllm_gateway_tls: bool = True
    vllm_gateway_tls_cert: str | None = None
    vllm_gateway_tls_key: str | None = None
    vllm_gateway_server_name: str | None = None
    vllm_allow_unsupported_os: bool = False
    nvidia_driver_manage: bool = True
    nvidia_driver_branch: str = "570"
    nvidia_driver_flavor: str = "auto"
    nvidia_driver_reboot: bool = True
    nvidia_driver_reboot_delay: int = 10
    nvidia_driver_reboot_timeout: int = 900
    # Mirrors beyond pip/HF (resolved from the preset and the per-URL overrides) and the conda runtime.
    apt_mirror: str | None = None
    conda_installer_url: str | None = None
    conda_channels: tuple[str, ...] | None = None
    conda_default_channels: tuple[str, ...] | None = None
    docker_ce_repo: str | None = None
    nvidia_container_repo: str | None = None
    docker_registry_mirrors: tuple[str, ...] = ()
    conda_prefix: str = "/opt/vllm/miniconda3"
    conda_env_prefix: str = "/opt/vllm/miniconda3/envs/vllm"
    conda_installer: str = ""
    conda_installer_sha256: str = ""
    conda_python: str = "3.12"


class _Checker:
    """Collects problems so the user sees all of them at once."""

    def __init__(self, data: Mapping[str, Any]):
        self.data = data
        self.problems: list[tuple[str, str]] = []

    def fail(self, name: str, message: str) -> None:
        self.problems.append((name, message))

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.data.get(name)
        if value not in choices:
            self.fail(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def text(self, name: str, optional: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(name, f"{value!r} must be a non-empty string")
            return None
        return value

    def integer(self, name: str, low: int, high: int | None = None, optional: bool = False) -> int | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"{value!r} must be an integer")
            return None
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            self.fail(name, f"{value} is out of range; use {span}")
            return None
        return value

    def flag(self, name: str, optional: bool = False) -> bool | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            self.fail(name, f"{value!r} must be True or False")
            return None
        return value

    def strings(self, name: str, optional: bool = False) -> tuple[str, ...] | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if isinstance(value, str) or not isinstance(value, list | tuple):
            self.fail(name, f"{value!r} must be a list of strings, e.g. [\"--seed\", \"0\"]")
            return ()
        if not all(isinstance(item, str) for item in value):
            self.fail(name, f"{value!r} must contain only strings")
            return ()
        return tuple(value)


def load_settings(data: Mapping[str, Any]) -> Settings:
    """Validate host data (merged over the defaults) into Settings, or raise SettingsError."""
    merged: dict[str, Any] = load_defaults()
    merged.update({k: v for k, v in dict(data).items() if k in merged})
    c = _Checker(merged)

    model = c.text("model")
    source = c.choice("model_source", MODEL_SOURCES)
    local_path = c.text("model_local_path", optional=True)
    if source == "local":
        if local_path is None:
            c.fail("model_local_path", "required when model_source is 'local': the model directory "
                   "on the controller")
        elif not (Path(local_path) / "config.json").is_file():
            c.fail("model_local_path", f"{local_path!r} has no config.json; point it at a model directory")
    model_dir = c.text("model_dir", optional=True)
    if model_dir is None and model:
        model_dir = f"/srv/models/{model.rstrip('/').split('/')[-1]}"
    if model_dir and not model_dir.startswith("/"):
        c.fail("model_dir", f"{model_dir!r} must be an absolute path on the host")

    preset_name = merged.get("mirror_preset")
    presets = merged.get("mirror_presets") or {}
    if preset_name not in presets:
        c.fail("mirror_preset", f"{preset_name!r} is not one of {', '.join(presets)}")
        preset: dict[str, Any] = {}
    else:
        preset = presets[preset_name]
    pip_index_url = c.text("pip_index_url", optional=True) or preset.get("pip_index_url")
    hf_endpoint = c.text("hf_endpoint", optional=True) or preset.get("hf_endpoint")
    if preset_name == "custom" and pip_index_url is None:
        c.fail("pip_index_url", "required with mirror_preset 'custom'")
    for name, url in (("pip_index_url", pip_index_url), ("hf_endpoint", hf_endpoint)):
        if url is not None and not re.match(r"^(https?|file)://", url):
            c.fail(name, f"{url!r} must be an http(s):// or file:// URL")

    version = c.text("vllm_version")
    if version and not re.match(r"^\d+\.\d+(\.\d+)?([.+-]?\w+)*$", version):
        c.fail("vllm_version", f"{version!r} is not a version such as '0.32.0'")
    user = c.text("vllm_user")
    if user and not _NAME_RE.match(user):
        c.fail("vllm_user", f"{user!r} is not a valid user name (lower case, digits, '-', '_')")
    prefix = c.text("vllm_prefix")
    if prefix and not prefix.startswith("/"):
        c.fail("vllm_prefix", f"{prefix!r} must be an absolute path")
    wheelhouse = c.text("vllm_wheelhouse", optional=True)
    if wheelhouse and not Path(wheelhouse).is_dir():
        c.fail("vllm_wheelhouse", f"{wheelhouse!r} is not a directory on the controller")

    served = c.text("vllm_served_model_name", optional=True)
    if served is None and model:
        served = model.rstrip("/").split("/")[-1]

    env = merged.get("vllm_env")
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        c.fail("vllm_env", f"{env!r} must be a dict of NAME: value")
        env = {}
    util = merged.get("vllm_gpu_memory_utilization")
    if util is not None and (isinstance(util, bool) or not isinstance(util, int | float) or not 0 < util <= 1):
        c.fail("vllm_gpu_memory_utilization", f"{util!r} must be a fraction in (0, 1], e.g. 0.9")
        util = None
    dtype = merged.get("vllm_dtype")
    if dtype is not None and dtype not in DTYPES:
        c.fail("vllm_dtype", f"{dtype!r} is not one of {', '.join(DTYPES)}")
    try:
        cpu_kv = parse_size(merged.get("vllm_cpu_kv_cache_memory"))
    except ValueError:
        c.fail("vllm_cpu_kv_cache_memory", f"{merged.get('vllm_cpu_kv_cache_memory')!r} is not a size "
               "such as '64M' or '2G'")
        cpu_kv = 0

    settings = dict(
        model=model,
        model_source=source,
        model_local_path=local_path,
        model_revision=c.text("model_revision", optional=True),
        model_dir=model_dir,
        hf_endpoint=hf_endpoint,
        vllm_runtime=c.choice("vllm_runtime", RUNTIMES),
        vllm_version=version,
        vllm_package=c.text("vllm_package", optional=True),
        vllm_device=c.choice("vllm_device", DEVICES),
        vllm_user=user,
        vllm_prefix=prefix,
        vllm_pip_extra_packages=c.strings("vllm_pip_extra_packages"),
        vllm_pip_remove_packages=c.strings("vllm_pip_remove_packages", optional=True),
        vllm_wheelhouse=wheelhouse,
        vllm_docker_image=c.text("vllm_docker_image", optional=True),
        mirror_preset=preset_name,
        pip_index_url=pip_index_url,
        vllm_host=c.text("vllm_host"),
        vllm_port=c.integer("vllm_port", 1, 65535),
        vllm_served_model_name=served,
        vllm_chat_template=c.text("vllm_chat_template", optional=True),
        vllm_trust_remote_code=c.flag("vllm_trust_remote_code"),
        vllm_extra_args=c.strings("vllm_extra_args"),
        vllm_env={k: str(v) for k, v in env.items()},
        vllm_tensor_parallel_size=c.integer("vllm_tensor_parallel_size", 1, 64, optional=True),
        vllm_pipeline_parallel_size=c.integer("vllm_pipeline_parallel_size", 1, 64, optional=True),
        vllm_dtype=dtype,
        vllm_quantization=c.text("vllm_quantization", optional=True),
        vllm_kv_cache_dtype=c.text("vllm_kv_cache_dtype", optional=True),
        vllm_gpu_memory_utilization=float(util) if util is not None else None,
        vllm_max_model_len=c.integer("vllm_max_model_len", 16, optional=True),
        vllm_max_num_seqs=c.integer("vllm_max_num_seqs", 1, optional=True),
        vllm_max_num_batched_tokens=c.integer("vllm_max_num_batched_tokens", 16, optional=True),
        vllm_enforce_eager=c.flag("vllm_enforce_eager", optional=True),
        vllm_cpu_kv_cache_memory=cpu_kv,
        vllm_verify_timeout=c.integer("vllm_verify_timeout", 10),
        vllm_verify_prompt=c.text("vllm_verify_prompt"),
    )
    settings.update(_serving_settings(c, merged))
    settings.update(_driver_settings(c))
    settings.update(_mirror_settings(c, merged))
    if c.problems:
        raise SettingsError(c.problems)
    return Settings(**settings)


_KEY_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")


def _serving_settings(c: _Checker, merged: Mapping[str, Any]) -> dict[str, Any]:
    """The deployment's keys and gateway: checked like the rest, before anything is touched."""
    deployment = c.text("vllm_deployment")
    if deployment and not _NAME_RE.match(deployment):
        c.fail("vllm_deployment", f"{deployment!r} must be lower case letters, digits, '-' or '_' (it names "
               "files and nginx upstreams)")
    key = merged.get("vllm_api_key")
    if key is not None and (not isinstance(key, str) or not _KEY_RE.match(key)):
        c.fail("vllm_api_key", "must be 16-256 characters of letters, digits and ._~+/=- (it travels in an "
               "HTTP header); leave it None to have one generated")
    key_file = c.text("vllm_api_key_file", optional=True)
    if key_file and not Path(key_file).expanduser().is_absolute():
        c.fail("vllm_api_key_file", f"{key_file!r} must be an absolute path on the controller")
    cert = c.text("vllm_gateway_tls_cert", optional=True)
    cert_key = c.text("vllm_gateway_tls_key", optional=True)
    if (cert is None) != (cert_key is None):
        c.fail("vllm_gateway_tls_cert", "set both vllm_gateway_tls_cert and vllm_gateway_tls_key, or neither "
               "(a self-signed certificate is generated on the gateway)")
    for name, path in (("vllm_gateway_tls_cert", cert), ("vllm_gateway_tls_key", cert_key)):
        if path and not Path(path).is_file():
            c.fail(name, f"{path!r} is not a file on the controller")
    return dict(
        vllm_shutdown_timeout=c.integer("vllm_shutdown_timeout", 0, 3600),
        vllm_deployment=deployment,
        vllm_require_api_key=c.flag("vllm_require_api_key"),
        vllm_api_key=key,
        vllm_api_key_file=key_file,
        vllm_advertise_address=c.text("vllm_advertise_address", optional=True),
        vllm_gateway=c.flag("vllm_gateway"),
        vllm_gateway_port=c.integer("vllm_gateway_port", 1, 65535),
        vllm_gateway_tls=c.flag("vllm_gateway_tls"),
        vllm_gateway_tls_cert=cert,
        vllm_gateway_tls_key=cert_key,
        vllm_gateway_server_name=c.text("vllm_gateway_server_name", optional=True),
    )


DRIVER_FLAVORS = ("auto", "open", "proprietary")


def _driver_settings(c: _Checker) -> dict[str, Any]:
    """Preflight and NVIDIA driver stage: checked with the rest so a typo stops the run before the first host."""
    branch = c.data.get("nvidia_driver_branch")
    if isinstance(branch, int) and not isinstance(branch, bool):
        branch = str(branch)
    if not isinstance(branch, str) or not re.fullmatch(r"\d{3}", branch):
        c.fail("nvidia_driver_branch", f"{branch!r} is not a driver branch; write its three digits as a "
               "string, e.g. \"570\" (nvidia-smi's 570.153.02 is branch 570)")
        branch = None
    return dict(
        vllm_allow_unsupported_os=c.flag("vllm_allow_unsupported_os"),
        nvidia_driver_manage=c.flag("nvidia_driver_manage"),
        nvidia_driver_branch=branch,
        nvidia_driver_flavor=c.choice("nvidia_driver_flavor", DRIVER_FLAVORS),
        nvidia_driver_reboot=c.flag("nvidia_driver_reboot"),
        nvidia_driver_reboot_delay=c.integer("nvidia_driver_reboot_delay", 1, 3600),
        nvidia_driver_reboot_timeout=c.integer("nvidia_driver_reboot_timeout", 60, 7200),
    )


MIRROR_KEYS = ("pip_index_url", "hf_endpoint", "apt_mirror", "conda_installer_url", "conda_channels",
               "conda_default_channels", "docker_ce_repo", "nvidia_container_repo", "docker_registry_mirrors")
# What each runtime downloads through the preset: with "custom" these must be set (pip is checked above).
_CUSTOM_NEEDS = {
    "venv": ("apt_mirror",),
    "docker": ("apt_mirror", "docker_ce_repo", "nvidia_container_repo", "docker_registry_mirrors"),
    "conda": ("apt_mirror", "conda_installer_url", "conda_channels"),
}
_URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_INSTALLER_RE = re.compile(r"^Miniconda3-[A-Za-z0-9._-]+-Linux-(x86_64|aarch64)\.sh$")


def _mirror_settings(c: _Checker, merged: Mapping[str, Any]) -> dict[str, Any]:
    """apt/conda/docker mirrors from the preset unless overridden, and the conda runtime's pins.

    Checked here like every other setting, so a half-filled "custom" preset or a mistyped URL stops
    the run before any host is touched, with the name of each missing or bad field.
    """
    name = merged.get("mirror_preset")
    presets = merged.get("mirror_presets") or {}
    preset = presets.get(name) if isinstance(presets, Mapping) else None
    if isinstance(preset, Mapping):
        missing = [key for key in MIRROR_KEYS if key not in preset]
        if missing:
            c.fail("mirror_presets", f"preset {name!r} lacks {', '.join(missing)} (use None for the tool's default)")
    else:
        preset = {}
    values: dict[str, Any] = {}
    for key in MIRROR_KEYS[2:]:
        own = merged.get(key)
        values[key] = own if own is not None else preset.get(key)
    if name == "custom":
        runtime = merged.get("vllm_runtime")
        for key in _CUSTOM_NEEDS.get(runtime, ()):
            if values[key] is None:
                hint = " (\"host\" keeps the host's own apt sources)" if key == "apt_mirror" else ""
                c.fail(key, f"required with mirror_preset 'custom' and vllm_runtime {runtime!r}{hint}")
    apt = values["apt_mirror"]
    if apt == "host":
        apt = None
    for key in ("conda_installer_url", "docker_ce_repo", "nvidia_container_repo"):
        if values[key] is not None and (not isinstance(values[key], str) or not _URL_RE.match(values[key])):
            c.fail(key, f"{values[key]!r} must be an http(s):// URL")
    if apt is not None and (not isinstance(apt, str) or not _URL_RE.match(apt)):
        c.fail("apt_mirror", f"{apt!r} must be an http(s):// URL such as 'https://mirrors.tuna.tsinghua.edu.cn', "
               "or 'host'")
    channels = _url_list(c, "conda_channels", values["conda_channels"], names=True)
    default_channels = _url_list(c, "conda_default_channels", values["conda_default_channels"], names=False)
    registry = _url_list(c, "docker_registry_mirrors", values["docker_registry_mirrors"], names=False)

    prefix = merged.get("vllm_prefix") if isinstance(merged.get("vllm_prefix"), str) else "/opt/vllm"
    conda_prefix = c.text("conda_prefix", optional=True) or f"{prefix.rstrip('/')}/miniconda3"
    if not conda_prefix.startswith("/") or " " in conda_prefix:
        c.fail("conda_prefix", f"{conda_prefix!r} must be an absolute path without spaces")
    installer = c.text("conda_installer") or ""
    if installer and not _INSTALLER_RE.match(installer):
        c.fail("conda_installer", f"{installer!r} is not a Miniconda Linux installer name such as "
               "'Miniconda3-py312_24.4.0-0-Linux-x86_64.sh'")
    digest = c.text("conda_installer_sha256") or ""
    if digest and not re.fullmatch(r"[0-9a-f]{64}", digest):
        c.fail("conda_installer_sha256", f"{digest!r} must be the installer's SHA-256: 64 lower-case hex digits")
    python = c.text("conda_python") or ""
    if python and not re.fullmatch(r"3\.\d{1,2}", python):
        c.fail("conda_python", f"{python!r} must be a Python 3 minor version such as '3.12'")
    return dict(
        apt_mirror=apt.rstrip("/") if apt else None,
        conda_installer_url=values["conda_installer_url"],
        conda_channels=channels,
        conda_default_channels=default_channels,
        docker_ce_repo=values["docker_ce_repo"].rstrip("/") if isinstance(values["docker_ce_repo"], str) else None,
        nvidia_container_repo=(values["nvidia_container_repo"].rstrip("/")
                               if isinstance(values["nvidia_container_repo"], str) else None),
        docker_registry_mirrors=registry or (),
        conda_prefix=conda_prefix.rstrip("/"),
        conda_env_prefix=f"{conda_prefix.rstrip('/')}/envs/vllm",
        conda_installer=installer,
        conda_installer_sha256=digest,
        conda_python=python,
    )


def _url_list(c: _Checker, name: str, value: Any, names: bool) -> tuple[str, ...] | None:
    """A list of http(s) URLs (and, for conda channels, channel names such as 'conda-forge')."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        c.fail(name, f"{value!r} must be a list, e.g. [\"https://mirror.example/...\"]")
        return None
    bad = [item for item in value if not isinstance(item, str)
           or not (_URL_RE.match(item) or (names and _CHANNEL_NAME_RE.match(item)))]
    if bad:
        kind = "http(s):// URLs or channel names" if names else "http(s):// URLs"
        c.fail(name, f"{bad[0]!r} is not allowed; use {kind}")
        return None
    return tuple(value)


# Settings an instance may set for itself; everything else (runtime, version, user, prefix) is the host's.
INSTANCE_OVERRIDES = (
    "model", "model_source", "model_local_path", "model_revision", "model_dir", "hf_endpoint",
    "vllm_served_model_name", "vllm_chat_template", "vllm_trust_remote_code", "vllm_extra_args", "vllm_env",
    "vllm_tensor_parallel_size", "vllm_pipeline_parallel_size", "vllm_dtype", "vllm_quantization",
    "vllm_kv_cache_dtype", "vllm_gpu_memory_utilization", "vllm_max_model_len", "vllm_max_num_seqs",
    "vllm_max_num_batched_tokens", "vllm_enforce_eager", "vllm_cpu_kv_cache_memory", "vllm_verify_prompt",
)
INSTANCE_KEYS = ("name", "port", "gpus", "gpu_memory_utilization")
DEFAULT_INSTANCE = "vllm"


@dataclass(frozen=True)
class InstanceSettings:
    """One vLLM instance of a host: its name, unit, GPU set and fully merged settings."""

    name: str
    unit: str
    gpus: tuple[int, ...] | None
    settings: Settings


def load_instances(data: Mapping[str, Any]) -> tuple[InstanceSettings, ...]:
    """The host's instances (`vllm_instances`, or one named 'vllm'), each validated; all problems at once."""
    host = load_settings(data)
    merged: dict[str, Any] = load_defaults()
    merged.update({k: v for k, v in dict(data).items() if k in merged})
    raw = merged.get("vllm_instances")
    if raw is None:
        return (InstanceSettings(DEFAULT_INSTANCE, DEFAULT_INSTANCE, None, host),)
    if not isinstance(raw, list | tuple) or not raw or not all(isinstance(i, Mapping) for i in raw):
        raise SettingsError([("vllm_instances", "must be a non-empty list of dicts such as "
                              "{'name': 'a', 'port': 8001, 'gpus': [0]}, or None for one instance")])
    problems: list[tuple[str, str]] = []
    instances: list[InstanceSettings] = []
    seen_names: dict[str, int] = {}
    seen_ports: dict[int, str] = {}
    for index, item in enumerate(raw):
        where = f"vllm_instances[{index}]"
        unknown = sorted(set(item) - set(INSTANCE_KEYS) - set(INSTANCE_OVERRIDES))
        if unknown:
            allowed = f"{', '.join(INSTANCE_KEYS)} or a model/sizing setting ({', '.join(INSTANCE_OVERRIDES[:5])}, ...)"
            problems.append((f"{where}.{unknown[0]}", f"is not an instance setting; use one of {allowed}; "
                             "runtime, version, user and prefix are the host's"))
            continue
        name = item.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            problems.append((f"{where}.name", f"{name!r} must be lower case letters, digits, '-' or '_'; it "
                             "names the unit vllm-<name>.service"))
            continue
        where = f"vllm_instances[{index}] ({name})"
        if name in seen_names:
            problems.append((f"{where}.name", f"repeats instance {seen_names[name]}; names must be unique"))
        seen_names.setdefault(name, index)
        port = item.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append((f"{where}.port", f"{port!r} must be a TCP port, 1..65535"))
            continue
        if port in seen_ports:
            problems.append((f"{where}.port", f"{port} is already the port of instance '{seen_ports[port]}'; "
                             "give every instance its own port"))
        seen_ports.setdefault(port, name)
        gpus = item.get("gpus")
        if gpus is not None and (isinstance(gpus, str) or not isinstance(gpus, list | tuple) or not gpus
                                 or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus)
                                 or len(set(gpus)) != len(gpus)):
            problems.append((f"{where}.gpus", f"{gpus!r} must be a list of distinct GPU indices such as [0, 1] "
                             "(nvidia-smi's numbering), or left out for all GPUs"))
            gpus = None
        overrides = {k: v for k, v in item.items() if k in INSTANCE_OVERRIDES}
        overrides["vllm_port"] = port
        if "gpu_memory_utilization" in item:
            overrides["vllm_gpu_memory_utilization"] = item["gpu_memory_utilization"]
        try:
            settings = load_settings({**dict(data), **overrides})
        except SettingsError as error:
            problems += [(_instance_field(where, field_name, item), message) for field_name, message in error.problems]
            continue
        instances.append(InstanceSettings(name, f"vllm-{name}", tuple(gpus) if gpus else None, settings))
    gateway_port = host.vllm_gateway_port if host.vllm_gateway else None
    if gateway_port in seen_ports:
        problems.append(("vllm_gateway_port", f"{gateway_port} is also the port of instance "
                         f"'{seen_ports[gateway_port]}'"))
    if problems:
        raise SettingsError(problems)
    return tuple(instances)


def _instance_field(where: str, field_name: str, item: Mapping[str, Any]) -> str:
    """Name a problem by the key the user wrote in the instance, or the host setting it came from."""
    aliases = {"vllm_port": "port", "vllm_gpu_memory_utilization": "gpu_memory_utilization"}
    if field_name in item:
        return f"{where}.{field_name}"
    if aliases.get(field_name) in item:
        return f"{where}.{aliases[field_name]}"
    return field_name
