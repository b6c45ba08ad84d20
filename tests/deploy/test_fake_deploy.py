"""Whole deploys on the seeds' GPU servers (recorded outputs, pyinfra's @fake connector).

Each case plans in-process, then runs the real pyinfra CLI with deploy.py and
checks the operations it ran and the files it rendered against that plan.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from plan.service import AUTH_SOURCE, PlanError
from tests.deploy.fakeserver import plan_for, run_fake_deploy

SEED_000 = {
    "model": "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B",
    "vllm_served_model_name": "coder",
    "vllm_tensor_parallel_size": 4,
    "vllm_dtype": "float16",
    "vllm_gpu_memory_utilization": 0.93,
    "vllm_max_model_len": 65536,
    "vllm_max_num_batched_tokens": 8192,
    "vllm_enforce_eager": True,
    "vllm_trust_remote_code": True,
    "vllm_chat_template": "qwen3-programming",
}


def _flag(argv: tuple[str, ...], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _deploy(tmp_path: Path, profile: str, data: dict, plan) -> tuple[str, Path]:
    proc, out = run_fake_deploy(tmp_path, profile, data, plan)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr, out


def test_seed_000_four_2080ti_renders_the_articles_service(tmp_path: Path) -> None:
    plan = plan_for("2080ti-x4-ubuntu2404", SEED_000)
    argv = plan.argv
    assert (_flag(argv, "--tensor-parallel-size"), _flag(argv, "--dtype")) == ("4", "float16")
    assert (_flag(argv, "--max-model-len"), _flag(argv, "--gpu-memory-utilization")) == ("65536", "0.93")
    assert "--enforce-eager" in argv and "--trust-remote-code" in argv
    assert "--disable-custom-all-reduce" in argv, "no NVLink between these cards"
    assert plan.env["NCCL_P2P_DISABLE"] == "1"
    assert not {"--swap-space", "--disable-log-requests"} & set(argv), "flags 0.32 rejects"
    assert plan.sizing["kv_cache_tokens"] >= 65536, "one full-length request must fit"

    output, out = _deploy(tmp_path, "2080ti-x4-ubuntu2404", SEED_000, plan)
    unit = (out / "files/etc/systemd/system/vllm.service").read_text()
    assert f"ExecStart={plan.command_line}" in unit
    assert "User=vllm" in unit and "After=network-online.target" in unit
    # vLLM exits 0 when its engine core dies: only Restart=always brings it back.
    assert "\nRestart=always\n" in unit and "Restart=on-failure" not in unit
    # Every route but /health needs the key: the deploy's own middleware, importable from its directory only.
    assert argv[argv.index("--middleware") + 1] == "vllm_auth.RequireApiKey"
    assert (out / "files/usr/local/lib/vllm-deploy/asgi/vllm_auth.py").read_text() == AUTH_SOURCE.read_text()
    # A CUDA host's sandbox: only the NVIDIA devices (no PrivateDevices, which would hide them).
    assert "DevicePolicy=closed\nDeviceAllow=char-nvidia* rw\n" in unit and "PrivateDevices" not in unit
    assert "CapabilityBoundingSet=\n" in unit and "SystemCallFilter=@system-service\n" in unit
    assert f"MemoryMax={plan.memory_max}\n" in unit and f"TasksMax={plan.tasks_max}\n" in unit
    assert "TimeoutStartSec=infinity" not in unit
    env = (out / "files/etc/vllm/vllm.env").read_text()
    assert "NCCL_P2P_DISABLE=1\n" in env and "HF_HUB_OFFLINE=1\n" in env
    assert "PYTHONPATH=/usr/local/lib/vllm-deploy/asgi\n" in env
    template = out / "files/etc/vllm/chat-template-qwen3-programming.jinja"
    assert "<|im_start|>" in template.read_text()
    assert _flag(argv, "--chat-template") == "/etc/vllm/chat-template-qwen3-programming.jinja"
    commands = (out / "commands.txt").read_text()
    assert "pip install vllm==0.32.0" in commands
    assert "vLLM serving 'coder'" in output
    assert "vLLM plan for" in output and "why" in output


def test_4090_pair_refuses_qwq_fp16_before_any_change(tmp_path: Path) -> None:
    data = {"model": "Qwen/QwQ-32B", "vllm_dtype": "float16", "vllm_tensor_parallel_size": 2}
    with pytest.raises(PlanError, match="does not fit"):
        plan_for("4090-x2-ubuntu2204", data)
    proc, out = run_fake_deploy(tmp_path, "4090-x2-ubuntu2204", data, None)
    assert proc.returncode != 0
    assert "does not fit" in proc.stdout + proc.stderr and "way out" in proc.stdout + proc.stderr
    commands = (out / "commands.txt").read_text()
    assert "useradd" not in commands and "apt-get" not in commands and "pip install" not in commands
    assert not (out / "files").exists()


def test_4090_pair_serves_the_70b_awq_at_5200_not_16384(tmp_path: Path) -> None:
    model = "Valdemardi/DeepSeek-R1-Distill-Llama-70B-AWQ"
    with pytest.raises(PlanError, match="does not fit"):
        plan_for("4090-x2-ubuntu2204", {"model": model, "vllm_max_model_len": 16384})
    data = {"model": model, "vllm_max_model_len": 5200, "vllm_tensor_parallel_size": 2}
    plan = plan_for("4090-x2-ubuntu2204", data)
    assert _flag(plan.argv, "--quantization") in (None, "awq", "awq_marlin")
    assert "--disable-custom-all-reduce" in plan.argv
    _, out = _deploy(tmp_path, "4090-x2-ubuntu2204", data, plan)
    assert "--max-model-len 5200" in (out / "files/etc/systemd/system/vllm.service").read_text()


def test_t4_gets_float16_and_a_chosen_context(tmp_path: Path) -> None:
    data = {"model": "Qwen/Qwen2.5-3B-Instruct"}
    plan = plan_for("t4-x1-ubuntu2204", data)
    assert _flag(plan.argv, "--dtype") == "float16"
    assert any("bfloat16" in reason for reason in plan.sizing["reasons"])
    assert 1024 <= plan.max_model_len <= 32768
    _, out = _deploy(tmp_path, "t4-x1-ubuntu2204", data, plan)
    assert "--dtype float16" in (out / "files/etc/systemd/system/vllm.service").read_text()


def test_a100_nvlink_keeps_custom_all_reduce(tmp_path: Path) -> None:
    data = {"model": "Qwen/Qwen3-235B-A22B"}
    plan = plan_for("a100sxm-x8-ubuntu2204", data)
    assert int(_flag(plan.argv, "--tensor-parallel-size")) * int(
        _flag(plan.argv, "--pipeline-parallel-size") or 1) <= 8
    assert "--disable-custom-all-reduce" not in plan.argv
    assert "NCCL_P2P_DISABLE" not in plan.env
    assert _flag(plan.argv, "--dtype") == "bfloat16"
    _deploy(tmp_path, "a100sxm-x8-ubuntu2204", data, plan)


def test_h100_docker_runtime_renders_foreground_container_and_script(tmp_path: Path) -> None:
    data = {"model": "Qwen/Qwen3-8B", "vllm_runtime": "docker"}
    plan = plan_for("h100-x1-ubuntu2404", data)
    argv = plan.argv
    assert argv[:4] == ("/usr/bin/docker", "run", "--rm", "--name")
    assert "vllm/vllm-openai:v0.32.0" in argv and "--restart" not in argv
    assert f"{plan.model.host_dir}:/models:ro" in argv
    assert "--ipc=host" not in argv and _flag(argv, "--shm-size") == "1g", "own /dev/shm, sized per rank"
    assert _flag(argv, "--cap-drop") == "ALL" and _flag(argv, "--security-opt") == "no-new-privileges"
    assert _flag(argv, "--memory") == str(plan.memory_max) and _flag(argv, "--pids-limit") == str(plan.tasks_max)
    assert _flag(argv, "--dtype") == "bfloat16"
    _, out = _deploy(tmp_path, "h100-x1-ubuntu2404", data, plan)
    unit = (out / "files/etc/systemd/system/vllm.service").read_text()
    assert "ExecStop=/usr/bin/docker stop" in unit and "Requires=docker.service" in unit
    # A stop during the start (no ExecStop then) must not leave the container running outside the unit.
    assert "\nExecStopPost=-/usr/bin/docker rm -f vllm\n" in unit
    script = (out / "files/opt/vllm/docker-run.sh").read_text()
    assert shlex.join(argv) in script
    assert "docker image pull vllm/vllm-openai:v0.32.0" in (out / "commands.txt").read_text()


CPU_DOCKER = {"model": "Qwen/Qwen3-0.6B", "vllm_device": "cpu", "vllm_runtime": "docker",
              "vllm_docker_image": "registry.example.internal/vllm-cpu:v0.32.0"}


def test_cpu_docker_runtime_asks_for_no_gpus_and_keeps_the_sandbox() -> None:
    plan = plan_for("debian12-cpu", CPU_DOCKER)
    argv = plan.argv
    assert argv[:5] == ("/usr/bin/docker", "run", "--rm", "--name", "vllm")
    assert "--gpus" not in argv and "memlock=-1" not in argv, "no NVIDIA runtime, docker's memlock limit kept"
    assert _flag(argv, "--ulimit") == "stack=67108864"
    assert _flag(argv, "--cap-drop") == "ALL" and _flag(argv, "--security-opt") == "no-new-privileges"
    assert _flag(argv, "--shm-size") == "1g"
    assert _flag(argv, "--memory") == str(plan.memory_max) and _flag(argv, "--pids-limit") == str(plan.tasks_max)
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--env-file"] == [plan.env_file,
                                                                                   "/etc/vllm/api-key.env"]
    assert _flag(argv, "-p") == "0.0.0.0:8000:8000"
    mounts = [argv[i + 1] for i, word in enumerate(argv) if word == "-v"]
    assert mounts == [f"{plan.model.host_dir}:/models:ro", f"{plan.state_dir}:{plan.state_dir}",
                      "/usr/local/lib/vllm-deploy/asgi:/usr/local/lib/vllm-deploy/asgi:ro"]
    assert argv[argv.index(CPU_DOCKER["vllm_docker_image"]) + 1:][:2] == ("--model", "/models")
    # The CPU build's environment reaches the container through the env file docker reads.
    assert {"TORCHDYNAMO_DISABLE=1", "VLLM_ENABLE_V1_MULTIPROCESSING=0"} <= set(plan.env_file_lines)


def test_cuda_docker_runtime_keeps_gpus_and_memlock() -> None:
    argv = plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B", "vllm_runtime": "docker"}).argv
    assert _flag(argv, "--gpus") == "all"
    assert [argv[i + 1] for i, word in enumerate(argv) if word == "--ulimit"] == ["memlock=-1", "stack=67108864"]


def test_cpu_docker_runtime_without_an_image_names_the_setting() -> None:
    with pytest.raises(PlanError, match=r"^vllm_docker_image: the default image vllm/vllm-openai:v0\.31\.0 is built "
                                        r"for CUDA; .*set vllm_docker_image to a CPU build"):
        plan_for("debian12-cpu", {**CPU_DOCKER, "vllm_docker_image": None, "vllm_version": "0.31.0"})


@pytest.mark.parametrize("profile", ["4090-x2-ubuntu2204", "h100-x1-ubuntu2404"])
def test_host_without_driver_is_refused_with_the_reason(profile: str) -> None:
    with pytest.raises(PlanError, match="no working NVIDIA driver"):
        plan_for(profile, {"model": "Qwen/Qwen3-8B", "nvidia_driver_manage": False}, state="nodriver")


def test_removed_flag_in_extra_args_names_the_replacement() -> None:
    with pytest.raises(PlanError, match="--swap-space"):
        plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B", "vllm_extra_args": ["--swap-space", "32"]})


def test_cpu_host_under_auto_device_is_refused() -> None:
    with pytest.raises(PlanError, match="vllm_device = 'cpu'"):
        plan_for("debian12-cpu", {"model": "Qwen/Qwen3-8B"})


@pytest.mark.parametrize(
    ("source", "preset", "expected"),
    [
        ("modelscope", "upstream", "modelscope download Qwen/Qwen3-8B --local-dir /srv/models/Qwen3-8B"),
        ("huggingface", "tuna", "hf download Qwen/Qwen3-8B --local-dir /srv/models/Qwen3-8B"),
    ],
)
def test_hub_download_runs_once_in_a_oneshot_unit(tmp_path: Path, source: str, preset: str, expected: str) -> None:
    data = {"model": "Qwen/Qwen3-8B", "model_source": source, "mirror_preset": preset,
            "vllm_tensor_parallel_size": 1, "modelscope_endpoint": "http://ms-mirror.lan:8080"}
    plan = plan_for("h100-x1-ubuntu2404", data)
    proc, out = run_fake_deploy(tmp_path, "h100-x1-ubuntu2404", data, plan, model_present=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    unit = (out / "files/etc/systemd/system/vllm-model-download.service").read_text()
    assert f"ExecStart=/opt/vllm/hub-venv/bin/{expected}" in unit
    assert "Type=oneshot" in unit and "TimeoutStartSec=infinity" in unit
    assert "Environment=HF_HUB_DISABLE_UPDATE_CHECK=1" in unit  # `hf` asks PyPI for a newer version otherwise
    assert ("Environment=HF_ENDPOINT=https://hf-mirror.com" in unit) == (preset == "tuna")
    assert ("Environment=MODELSCOPE_ENDPOINT=http://ms-mirror.lan:8080" in unit) == (source == "modelscope")
    commands = (out / "commands.txt").read_text()
    assert commands.count("systemctl start --no-block vllm-model-download.service") == 1
    assert "pypi.tuna.tsinghua.edu.cn" in commands if preset == "tuna" else "--index-url" not in commands
    gib = plan.model.weight_bytes / 2**30  # the fake unit's directory holds the whole checkpoint
    assert f"downloading Qwen/Qwen3-8B: {gib:.2f}/{gib:.2f} GiB (100%)" in proc.stdout + proc.stderr


def test_pending_reboot_is_named_and_secure_boot_warned() -> None:
    with pytest.raises(PlanError, match="reboot the host"):
        plan_for("2080ti-x4-ubuntu2404", {"model": "Qwen/Qwen3-8B", "nvidia_driver_manage": False},
                 state="rebootpending")
    signed = plan_for("4090-x2-ubuntu2204", {"model": "Qwen/Qwen3-8B"})
    assert any("Secure Boot" in warning for warning in signed.warnings)
    assert not plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B"}).warnings
