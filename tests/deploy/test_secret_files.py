"""The API key files through the real pyinfra CLI (@fake connector), with every output pyinfra has turned on.

pyinfra's `files.put` would print the key with --diff; the lab's end-to-end test shows the rest
(no /tmp, no argv, through a real sudo user). This one fails in seconds, without a host.
"""

from __future__ import annotations

from pathlib import Path

from tests.deploy.fakeserver import host_plan_for, run_fake_deploy, serving_responses

DATA = {"model": "Qwen/Qwen3-8B", "vllm_max_model_len": 8192, "_sudo": True}


def test_key_files_are_written_without_the_key_in_diff_verbose_or_debug_output(tmp_path: Path) -> None:
    plan = host_plan_for("h100-x1-ubuntu2404", DATA)
    data = {**DATA, "fake_responses": serving_responses(plan.first)}
    proc, out = run_fake_deploy(tmp_path, "h100-x1-ubuntu2404", data, None, "converged", "--diff", "-vvv", "--debug")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    key = (tmp_path / "api-keys" / "test.key").read_text().strip()  # where run_fake_deploy keeps it
    assert key.startswith("sk-vllm-")
    assert ">>> " in output and "[fake] simulating command on" in output, "-vvv and --debug were on"
    assert key not in output
    assert "Will create /etc/vllm/api-key.env (secret: content not shown)" in output, "--diff was on"
    assert key not in (out / "commands.txt").read_text()
    assert (out / "files/etc/vllm/api-key.env").read_text() == f"VLLM_API_KEY={key}\n"
    assert (out / "files/etc/vllm/api-key.header").read_text() == f"Authorization: Bearer {key}\n"


def test_the_gateways_tls_key_from_the_controller_is_a_secret_file_too(tmp_path: Path) -> None:
    cert, tls_key = tmp_path / "gw.crt", tmp_path / "gw.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot-checked-here\n-----END CERTIFICATE-----\n")
    tls_key.write_text("-----BEGIN PRIVATE KEY-----\nprivate-key-material-0123456789\n-----END PRIVATE KEY-----\n")
    data = {**DATA, "vllm_gateway": True, "vllm_gateway_server_name": "gw.example", "vllm_gateway_tls_cert": str(cert),
            "vllm_gateway_tls_key": str(tls_key)}
    plan = host_plan_for("h100-x1-ubuntu2404", data)
    served = serving_responses(plan.first)
    models = served[f"127.0.0.1:{plan.first.port}/v1/models"]
    # The gateway's own checks: without the key 401 (matched first), with it the instance's answers.
    data["fake_responses"] = {"http_code}' --cacert": "401", "gw.example:443/v1/models": models,
                              "gw.example:443/v1/completions": served[f"127.0.0.1:{plan.first.port}/v1/completions"],
                              **served}
    proc, out = run_fake_deploy(tmp_path, "h100-x1-ubuntu2404", data, None, "converged", "--diff", "-vvv")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "private-key-material" not in output
    assert (out / "files/etc/vllm/gateway/vllm/tls.key").read_text() == tls_key.read_text()
    assert "Will create /etc/vllm/gateway/vllm/tls.key (secret: content not shown)" in output, output[-3000:]
    assert "not-checked-here" in output, "the certificate is no secret: --diff shows it"
