"""What bench.py sends to a host, per runtime and target, and the launcher's own options."""

from __future__ import annotations

import base64
import importlib.util
import shlex
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from bench.command import (
    LAUNCHER,
    BenchError,
    check_workdir,
    level_command,
    prepare_command,
    prompts_for,
    target_for,
    vllm_bench_args,
)
from plan.gateway import build_gateway_plan
from plan.settings import load_instances
from tests.deploy.fakeserver import host_plan_for

WORKDIR = "/var/tmp/vllm-bench.Zz09Yy87"
PROFILE = "h100-x1-ubuntu2404"


def _launcher():
    spec = importlib.util.spec_from_file_location("bench_serve", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_gateway(data: dict):
    plan = host_plan_for(PROFILE, data)
    settings = load_instances(data)
    gateway = build_gateway_plan(settings[0].settings, plan.host, [(plan.host, settings[0].settings, settings)])
    return replace(plan, gateway=gateway)


def _words(command: str, start: str) -> list[str]:
    """The words of the command's part that starts with `start` (up to the log redirect)."""
    return shlex.split(command[command.index(start):command.index(" > ")])


@pytest.mark.parametrize(("level", "prompts", "want"), [(1, 0, 16), (2, 0, 16), (4, 0, 32), (64, 0, 512), (4, 10, 10)])
def test_requests_per_level(level: int, prompts: int, want: int) -> None:
    assert prompts_for(level, prompts) == want


def test_docker_runtime_runs_the_planned_image_with_the_model_read_only() -> None:
    data = {"model": "Qwen/Qwen3-8B", "vllm_runtime": "docker", "vllm_gateway": True,
            "vllm_gateway_server_name": "llm.example.com"}
    plan = _with_gateway(data)
    assert plan.setup.runtime == "docker" and plan.setup.docker_image
    target = target_for(plan, "gateway")
    command = level_command(plan, target, WORKDIR, 8, vllm_bench_args(target, 8, 64, 128, 32, WORKDIR))
    words = _words(command, "docker run")
    assert words[:8] == ["docker", "run", "--rm", "--network", "host", "--entrypoint", "python3", "-v"]
    mounts = [words[i + 1] for i, w in enumerate(words) if w == "-v"]
    assert mounts == [f"{WORKDIR}:{WORKDIR}", "/srv/models/Qwen3-8B:/srv/models/Qwen3-8B:ro",
                      "/etc/vllm/gateway/vllm/tls.crt:/etc/vllm/gateway/vllm/tls.crt:ro"]
    env = [words[i + 1] for i, w in enumerate(words) if w == "-e"]
    assert "OPENAI_API_KEY" in env and "SSL_CERT_FILE=/etc/vllm/gateway/vllm/tls.crt" in env
    image = words.index(plan.setup.docker_image)
    assert words[image + 1:image + 5] == [f"{WORKDIR}/bench_serve.py", "--resolve", "llm.example.com:443:127.0.0.1",
                                          "--"]
    assert words[words.index("--base-url") + 1] == "https://llm.example.com:443"
    assert plan.api_key and plan.api_key not in command


def test_a_host_without_the_target_gets_none() -> None:
    plan = host_plan_for(PROFILE, {"model": "Qwen/Qwen3-8B"})
    assert target_for(plan, "gateway") is None and target_for(plan, "chat") is None
    assert target_for(plan, "vllm").url == "http://127.0.0.1:8000"


def test_no_key_file_means_no_key_in_the_environment() -> None:
    plan = host_plan_for(PROFILE, {"model": "Qwen/Qwen3-8B", "vllm_require_api_key": False})
    target = target_for(plan, "vllm")
    command = level_command(plan, target, WORKDIR, 1, vllm_bench_args(target, 1, 16, 8, 8, WORKDIR))
    assert "OPENAI_API_KEY" not in command and "api-key.header" not in command


def test_work_directories_other_than_mktemps_are_refused() -> None:
    assert check_workdir(WORKDIR) == WORKDIR
    for bad in ("/", "/var/tmp", "/var/tmp/vllm-bench.", "/var/tmp/vllm-bench.abc/../../etc", f"{WORKDIR} /etc"):
        with pytest.raises(BenchError):
            check_workdir(bad)


def test_prepare_ships_the_launcher_unchanged() -> None:
    payload = prepare_command().split("printf %s ", 1)[1].split(" ", 1)[0]
    assert base64.b64decode(payload) == LAUNCHER.read_bytes()


def test_launcher_splits_its_own_options_from_vllms() -> None:
    launcher = _launcher()
    rules, args = launcher.split_argv(["--resolve", "Gw.Example:443:127.0.0.1", "--", "--base-url", "x"])
    assert rules == {("gw.example", "443"): "127.0.0.1"} and args == ["--base-url", "x"]
    assert launcher.split_argv(["--base-url", "x"]) == ({}, ["--base-url", "x"])
    assert launcher.parse_resolve("h:8000:[::1]") == (("h", "8000"), "::1")
    with pytest.raises(ValueError):
        launcher.split_argv(["--insecure", "--", "x"])
    with pytest.raises(ValueError):
        launcher.parse_resolve("h:port:127.0.0.1")


def test_launcher_resolve_maps_only_that_name_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)  # restored after the test
    _launcher().install_resolve({("bench-target.invalid", "8443"): "127.0.0.1"})
    (family, _, _, _, address), *_ = socket.getaddrinfo("bench-target.invalid", 8443, type=socket.SOCK_STREAM)
    assert address[:2] == ("127.0.0.1", 8443)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("bench-target.invalid", 8444)


def test_launcher_is_plain_python_for_the_hosts_interpreter() -> None:
    """It runs with whatever Python the instance has: standard library and vLLM's own imports only."""
    source = Path(LAUNCHER).read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines()
               if line.strip().startswith(("import ", "from ")) and not line.strip().startswith("from __future__")}
    assert imports <= {"socket", "sys", "vllm", "aiohttp"}, imports
