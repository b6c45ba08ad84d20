"""Validated deployment settings, read from pyinfra host data (inventory + group_data).

Every value is checked against `plan.schema` (the one declaration of each setting: type, default,
validator, doc), before any fact is gathered or any change is made, so a bad inventory fails with
the field's name and the fix instead of half a deploy. Unknown names are refused with the closest
known one. Then the settings that depend on each other (the mirror preset's URLs, the model
directory, TLS files) are resolved here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plan.schema import BY_NAME, INSTANCE_KEYS, NAME, SETTINGS, defaults, unknown_instance_keys, unknown_names
from plan.validators import Invalid, parse_size

__all__ = ["InstanceSettings", "Settings", "SettingsError", "load_instances", "load_settings", "parse_size"]


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists each field and its fix."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"  {name}: {message}" for name, message in problems]
        super().__init__("invalid settings (nothing was changed on the host):\n" + "\n".join(lines))


@dataclass(frozen=True)
class Settings:
    """Typed settings of one host; field names match the group_data keys (defaults: `plan.schema`)."""

    model: str
    model_source: str
    model_local_path: str | None
    model_revision: str | None
    model_dir: str
    hf_endpoint: str | None
    modelscope_endpoint: str | None
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
    vllm_tool_calling: str | bool
    vllm_tool_call_parser: str | None
    vllm_reasoning_parser: str | bool | None
    vllm_extra_args: tuple[str, ...]
    vllm_env: dict[str, str]
    vllm_tensor_parallel_size: int | None
    vllm_pipeline_parallel_size: int | None
    vllm_dtype: str | None
    vllm_quantization: str | None
    vllm_kv_cache_dtype: str | None
    vllm_gpu_memory_utilization: float | None
    vllm_max_model_len: int | None
    vllm_max_num_seqs: int | None
    vllm_max_num_batched_tokens: int | None
    vllm_enforce_eager: bool | None
    vllm_cpu_kv_cache_memory: int
    vllm_verify_timeout: int
    vllm_verify_prompt: str
    vllm_shutdown_timeout: int
    vllm_deployment: str
    vllm_require_api_key: bool
    vllm_api_key: str | None = field(repr=False)
    vllm_api_key_file: str | None
    vllm_advertise_address: str | None
    vllm_backend_tls: bool
    vllm_gateway: bool
    vllm_gateway_port: int
    vllm_gateway_tls: bool
    vllm_gateway_tls_cert: str | None
    vllm_gateway_tls_key: str | None
    vllm_gateway_server_name: str | None
    vllm_gateway_max_body: str
    vllm_gateway_client_timeout: int
    vllm_gateway_key_concurrency: int
    vllm_monitoring: bool
    vllm_exporters: str | bool
    vllm_grafana: bool
    vllm_scrape_interval: int
    vllm_alert_webhook: str | None
    vllm_slo_ttft_ms: int
    vllm_slo_itl_ms: int
    vllm_watchdog: bool
    vllm_watchdog_interval: int
    vllm_watchdog_timeout: int
    vllm_watchdog_misses: int
    vllm_bench_concurrency: tuple[int, ...]
    vllm_bench_prompts: int
    vllm_bench_input_len: int
    vllm_bench_output_len: int
    vllm_bench_target: str
    vllm_bench_report_dir: str
    vllm_cluster: str | None
    vllm_cluster_head: bool
    vllm_cluster_master_port: int
    vllm_cluster_address: str | None
    vllm_cluster_interface: str | None
    vllm_allow_unsupported_os: bool
    nvidia_driver_manage: bool
    nvidia_driver_branch: str
    nvidia_driver_flavor: str
    nvidia_driver_reboot: bool
    nvidia_driver_reboot_delay: int
    nvidia_driver_reboot_timeout: int
    # Mirrors beyond pip/HF (resolved from the preset and the per-URL overrides) and the conda runtime.
    apt_mirror: str | None
    conda_installer_url: str | None
    conda_channels: tuple[str, ...] | None
    conda_default_channels: tuple[str, ...] | None
    docker_ce_repo: str | None
    nvidia_container_repo: str | None
    docker_registry_mirrors: tuple[str, ...]
    grafana_apt_repo: str | None
    conda_prefix: str
    conda_env_prefix: str
    conda_installer: str
    conda_installer_sha256: str
    conda_python: str


MIRROR_KEYS = ("pip_index_url", "hf_endpoint", "apt_mirror", "conda_installer_url", "conda_channels",
               "conda_default_channels", "docker_ce_repo", "nvidia_container_repo", "docker_registry_mirrors",
               "grafana_apt_repo")
# What each runtime downloads through the preset: with "custom" these must be set (pip is checked apart).
_CUSTOM_NEEDS = {
    "venv": ("apt_mirror",),
    "docker": ("apt_mirror", "docker_ce_repo", "nvidia_container_repo", "docker_registry_mirrors"),
    "conda": ("apt_mirror", "conda_installer_url", "conda_channels"),
}
# Computed from others rather than declared: not settings a user writes.
_NOT_FIELDS = ("vllm_instances", "mirror_presets")


def _merged(data: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults with the host's values for every known name laid over them."""
    merged = defaults()
    merged.update({k: v for k, v in dict(data).items() if k in BY_NAME})
    return merged


def load_settings(data: Mapping[str, Any], foreign: Iterable[str] = ()) -> Settings:
    """Validate host data against the schema into Settings, or raise SettingsError naming every problem.

    `foreign` lists names that belong to someone else (pyinfra's connector data such as `ssh_user`);
    names starting with `_` are pyinfra's global arguments or the user's own helpers.
    """
    problems = unknown_names(data, foreign)
    merged = _merged(data)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        try:
            values[setting.name] = setting.check(merged[setting.name])
        except Invalid as error:
            problems.append((setting.name, str(error)))
            values[setting.name] = None
    _resolve_model(values, problems)
    _resolve_mirrors(values, merged, problems)
    _resolve_paths_and_tls(values, problems)
    _check_cluster(values, merged, problems)
    if problems:
        raise SettingsError(problems)
    for name in _NOT_FIELDS:
        values.pop(name)
    return Settings(**values)


def _resolve_model(values: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    model, local_path = values["model"], values["model_local_path"]
    if values["model_source"] == "local":
        if local_path is None and not any(name == "model_local_path" for name, _ in problems):
            problems.append(("model_local_path", "required when model_source is 'local': the model directory "
                             "on the controller"))
        elif local_path is not None and not (Path(local_path).expanduser() / "config.json").is_file():
            problems.append(("model_local_path", f"{local_path!r} has no config.json; point it at a model "
                             "directory"))
    short = model.rstrip("/").split("/")[-1] if model else None
    if values["model_dir"] is None and short:
        values["model_dir"] = f"/srv/models/{short}"
    if values["vllm_served_model_name"] is None:
        values["vllm_served_model_name"] = short


def _resolve_mirrors(values: dict[str, Any], merged: Mapping[str, Any], problems: list[tuple[str, str]]) -> None:
    """Each mirror URL from the preset unless set; preset values pass the same validators as set ones.

    A half-filled "custom" preset or a mistyped URL stops the run before any host is touched, with
    the name of each missing or bad field.
    """
    name = values["mirror_preset"]
    presets = merged["mirror_presets"]
    preset: Mapping[str, Any] = {}
    if not isinstance(presets, Mapping) or not all(isinstance(p, Mapping) for p in presets.values()):
        problems.append(("mirror_presets", "must be a dict of preset name -> dict of mirror settings"))
    elif name is not None and name not in presets:
        problems.append(("mirror_preset", f"{name!r} is not one of {', '.join(presets)}"))
    elif name is not None:
        preset = presets[name]
        missing = [key for key in MIRROR_KEYS if key not in preset]
        if missing:
            problems.append(("mirror_presets", f"preset {name!r} lacks {', '.join(missing)} (use None for the "
                             "tool's default)"))
    for key in MIRROR_KEYS:
        if merged[key] is not None or preset.get(key) is None:
            continue
        try:
            values[key] = BY_NAME[key].check(preset[key])
        except Invalid as error:
            problems.append((f"mirror_presets[{name!r}].{key}", str(error)))
    if name == "custom":
        if values["pip_index_url"] is None:
            problems.append(("pip_index_url", "required with mirror_preset 'custom'"))
        runtime = values["vllm_runtime"]
        for key in _CUSTOM_NEEDS.get(runtime, ()):
            if key == "nvidia_container_repo" and values["vllm_device"] == "cpu":
                continue  # a CPU container gets no GPUs: no toolkit to install
            if values[key] is None:
                hint = " (\"host\" keeps the host's own apt sources)" if key == "apt_mirror" else ""
                problems.append((key, f"required with mirror_preset 'custom' and vllm_runtime {runtime!r}{hint}"))
    if values["apt_mirror"] == "host":
        values["apt_mirror"] = None
    for key in ("apt_mirror", "docker_ce_repo", "nvidia_container_repo"):
        if isinstance(values[key], str):
            values[key] = values[key].rstrip("/")
    values["docker_registry_mirrors"] = values["docker_registry_mirrors"] or ()
    if values["vllm_grafana"] and values["grafana_apt_repo"] is None:
        problems.append(("grafana_apt_repo", f"required for vllm_grafana with mirror_preset {name!r}: Grafana's apt "
                         "repository base such as 'https://apt.grafana.com'"))


def _resolve_paths_and_tls(values: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    prefix = values["vllm_prefix"] or "/opt/vllm"
    conda_prefix = (values["conda_prefix"] or f"{prefix.rstrip('/')}/miniconda3").rstrip("/")
    values["conda_prefix"] = conda_prefix
    values["conda_env_prefix"] = f"{conda_prefix}/envs/vllm"
    if values["vllm_grafana"] and not values["vllm_monitoring"]:
        problems.append(("vllm_grafana", "Grafana runs beside Prometheus: set vllm_monitoring = True on this host "
                         "too, or vllm_grafana = False"))
    if values["vllm_watchdog_timeout"] and values["vllm_watchdog_interval"] \
            and values["vllm_watchdog_timeout"] > values["vllm_watchdog_interval"] * 4:
        problems.append(("vllm_watchdog_timeout", "must be at most 4 x vllm_watchdog_interval (a probe outlasting "
                         "several intervals hides misses); raise the interval or lower the timeout"))
    if (values["vllm_gateway_tls_cert"] is None) != (values["vllm_gateway_tls_key"] is None):
        problems.append(("vllm_gateway_tls_cert", "set both vllm_gateway_tls_cert and vllm_gateway_tls_key, or "
                         "neither (a self-signed certificate is generated on the gateway)"))


def _check_cluster(values: dict[str, Any], merged: Mapping[str, Any], problems: list[tuple[str, str]]) -> None:
    """A cluster member serves one model with all its GPUs, so it cannot also split them into instances."""
    instances = merged.get("vllm_instances")
    if values["vllm_cluster"] and isinstance(instances, list | tuple) and len(instances) > 1:
        problems.append(("vllm_instances", f"a member of cluster {values['vllm_cluster']!r} runs exactly one "
                         "instance (every GPU of each member serves the one model); remove vllm_instances or "
                         "vllm_cluster"))
    if values["vllm_cluster_head"] and not values["vllm_cluster"]:
        problems.append(("vllm_cluster_head", "is only meaningful with vllm_cluster; set vllm_cluster = '<name>' "
                         "on every member, or vllm_cluster_head = False"))


def watchdog_restart_bound(interval: int, timeout: int, misses: int) -> int:
    """Seconds from an engine's hang to the watchdog's restart, at most: the probe after the last good one
    starts within an interval, then `misses` probes each end by their deadline, the next one starting no
    sooner than an interval after the previous (misses x interval + timeout when timeout <= interval).
    Here because the watchdog plan and the gateway's retry window both depend on it."""
    return interval + (misses - 1) * max(interval, timeout) + timeout


DEFAULT_INSTANCE = "vllm"


@dataclass(frozen=True)
class InstanceSettings:
    """One vLLM instance of a host: its name, unit, GPU set and fully merged settings."""

    name: str
    unit: str
    gpus: tuple[int, ...] | None
    settings: Settings


def load_instances(data: Mapping[str, Any], foreign: Iterable[str] = ()) -> tuple[InstanceSettings, ...]:
    """The host's instances (`vllm_instances`, or one named 'vllm'), each validated; all problems at once.

    An instance dict takes `name`, `gpus` and the per-instance settings by their names without
    `vllm_` (`port`, `gpu_memory_utilization`, `served_model_name`, `max_model_len`, `model`, ...).
    """
    foreign = tuple(foreign)
    host = load_settings(data, foreign)
    raw = _merged(data)["vllm_instances"]
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
        unknown = unknown_instance_keys(item)
        if unknown:
            problems += [(f"{where}.{key}", message) for key, message in unknown]
            continue
        name = item.get("name")
        if not isinstance(name, str) or not re.fullmatch(NAME, name):
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
        overrides = {INSTANCE_KEYS[k]: v for k, v in item.items() if k in INSTANCE_KEYS}
        try:
            settings = load_settings({**dict(data), **overrides}, foreign)
        except SettingsError as error:
            problems += [(_instance_field(where, field_name, item), message) for field_name, message in error.problems]
            continue
        instances.append(InstanceSettings(name, f"vllm-{name}", tuple(gpus) if gpus else None, settings))
    gateway_port = host.vllm_gateway_port if host.vllm_gateway else None
    if gateway_port in seen_ports:
        problems.append(("vllm_gateway_port", f"{gateway_port} is also the port of instance "
                         f"'{seen_ports[gateway_port]}'"))
    if problems:
        raise SettingsError(list(dict.fromkeys(problems)))
    return tuple(instances)


def _instance_field(where: str, field_name: str, item: Mapping[str, Any]) -> str:
    """Name a problem by the key the user wrote in the instance, or the host setting it came from."""
    setting = BY_NAME.get(field_name)
    if setting is not None and setting.instance and setting.instance_key in item:
        return f"{where}.{setting.instance_key}"
    return field_name
