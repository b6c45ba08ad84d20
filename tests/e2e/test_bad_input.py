"""Bad input is refused with the field and the fix before ANY change on the host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import lab_host, run_pyinfra

pytestmark = pytest.mark.hosts

CASES = {
    "unknown model": ({"model": "no-such-org/no-such-model", "model_source": "modelscope",
                       "model_local_path": None}, "model:"),
    "tp not dividing heads": ({"vllm_tensor_parallel_size": 3}, "vllm_tensor_parallel_size"),
    "max-model-len above the model": ({"vllm_max_model_len": 4096}, "vllm_max_model_len"),
    "gpu-memory-utilization above 1": ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization"),
    "gpu-memory-utilization zero": ({"vllm_gpu_memory_utilization": 0}, "vllm_gpu_memory_utilization"),
    "removed flag": ({"vllm_extra_args": ["--disable-log-requests"]}, "--disable-log-requests"),
    "typo in a setting's name": ({"vllm_gpu_memory_utilisation": 0.5}, "did you mean vllm_gpu_memory_utilization?"),
}

# The audit's inputs: each would have run a command as root, added a unit line or an nginx directive.
PWNED = "/tmp/pwned"
HOSTILE = {
    "pip_index_url": f"https://mirror.example/simple; touch {PWNED};",
    "model_dir": f"/srv/models/x; touch {PWNED}",
    "hf_endpoint": f"https://hf.example\nExecStartPre=/usr/bin/touch {PWNED}",
    "vllm_host": f"0.0.0.0'; touch {PWNED}; '",
    "vllm_gateway_server_name": "gw; location / { return 200; }",
    "vllm_advertise_address": "10.0.0.1:80 backup; server evil.example",
    "vllm_env": {"HOME_X": f"1\nExecStartPre=/usr/bin/touch {PWNED}"},
    "vllm_served_model_name": "tiny\n[Service]",
    "vllm_deployment": "vllm\n",
}


@pytest.fixture(scope="module")
def pristine(hostlab: Lab) -> Iterator[TestHost]:
    host = hostlab.add_host("e2e-bad")
    try:
        yield host
    finally:
        host.kill()


def assert_untouched(host: TestHost) -> None:
    ti = host.testinfra()
    assert not ti.user("vllm").exists
    for path in ("/opt/vllm", "/etc/vllm", "/srv/models", "/etc/systemd/system/vllm.service"):
        assert not ti.file(path).exists, path
    assert not ti.package("python3-venv").is_installed


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_before_any_change(pristine: TestHost, case: str) -> None:
    overrides, field = CASES[case]
    result = run_pyinfra([lab_host(pristine, **overrides)])
    assert result.returncode != 0, result.output[-3000:]
    assert field in result.output, result.output[-3000:]
    assert "Traceback" not in result.output
    assert_untouched(pristine)


def test_hostile_values_are_all_named_at_once_and_nothing_runs(pristine: TestHost) -> None:
    result = run_pyinfra([lab_host(pristine, **HOSTILE)])
    assert result.returncode != 0, result.output[-3000:]
    for field in HOSTILE:
        assert f"{field}: " in result.output, (field, result.output[-3000:])
    assert "Traceback" not in result.output
    assert pristine.run(f"test ! -e {PWNED}", check=False).returncode == 0, "a hostile value ran a command"
    assert_untouched(pristine)


def test_port_in_use_is_refused_before_any_change(pristine: TestHost) -> None:
    pristine.run("systemd-run --unit squatter python3 -m http.server 8000 && sleep 1")
    try:
        result = run_pyinfra([lab_host(pristine)])
    finally:
        pristine.run("systemctl stop squatter")
    assert result.returncode != 0
    assert "vllm_port: 8000 is already in use" in result.output, result.output[-3000:]
    assert_untouched(pristine)
