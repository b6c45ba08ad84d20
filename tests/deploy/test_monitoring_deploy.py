"""The monitoring stage in a whole deploy (real pyinfra CLI, @fake H100 host that runs the gateway,
Prometheus, Alertmanager and Grafana): the files it uploads and the order of its checks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.fakeserver import host_plan_for, run_fake_deploy, serving_responses

PROFILE = "h100-x1-ubuntu2404"
DATA = {"model": "Qwen/Qwen3-8B", "vllm_max_model_len": 8192, "vllm_gateway": True,
        "vllm_gateway_server_name": "gw.example", "vllm_monitoring": True, "vllm_grafana": True,
        "mirror_preset": "tuna", "vllm_alert_webhook": "https://hooks.example/services/T0KEN"}


def _deploy(tmp_path: Path) -> tuple[str, Path, str]:
    plan = host_plan_for(PROFILE, DATA)
    served = serving_responses(plan.first)
    port = plan.first.port
    data = {**DATA, "fake_responses": {
        "http_code}' --cacert": "401", "gw.example:443/v1/models": served[f"127.0.0.1:{port}/v1/models"],
        "gw.example:443/v1/completions": served[f"127.0.0.1:{port}/v1/completions"], **served}}
    proc, out = run_fake_deploy(tmp_path, PROFILE, data, None, "converged")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output, out / "files", (out / "commands.txt").read_text()


def test_monitoring_host_gets_checked_configs_loopback_services_and_grafana(tmp_path: Path) -> None:
    output, files, commands = _deploy(tmp_path)
    # The plan is printed before any change, without the webhook's token.
    assert "monitoring vllm on @fake/gpu: Prometheus 127.0.0.1:9090 every 15 s" in output
    assert "exporters on 127.0.0.1: node :9100, nginx :9113" in output and "T0KEN" not in output
    config = yaml.safe_load((files / "etc/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert jobs["vllm"] == [{"targets": ["127.0.0.1:8000"], "labels": {"host": "@fake/gpu", "instance_name": "vllm"}}]
    # vLLM's /metrics needs the key: read from a file Prometheus' group may read, never written into its config.
    vllm_job = next(job for job in config["scrape_configs"] if job["job_name"] == "vllm")
    assert vllm_job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/vllm-vllm.key"}
    key = (files / "etc/vllm/api-key.env").read_text().removeprefix("VLLM_API_KEY=")
    assert (files / "etc/prometheus/vllm-vllm.key").read_text() == key
    assert key.strip() not in (files / "etc/prometheus/prometheus.yml").read_text()
    assert "vllm-deploy-secret /etc/prometheus/vllm-vllm.key root prometheus 640" in commands
    assert jobs["node"][0]["targets"] == ["127.0.0.1:9100"] and jobs["nginx"][0]["targets"] == ["127.0.0.1:9113"]
    assert config["rule_files"] == ["/etc/prometheus/vllm-alerts.yml"]
    rules = yaml.safe_load((files / "etc/prometheus/vllm-alerts.yml").read_text())["groups"][0]["rules"]
    assert "VLLMKVCacheNearlyFull" in [r["alert"] for r in rules]
    disk = next(r for r in rules if r["alert"] == "ModelDiskNearlyFull")["expr"]
    assert 'mountpoint="/srv/models/Qwen3-8B"' in disk
    hook = yaml.safe_load((files / "etc/prometheus/alertmanager.yml").read_text())["receivers"][0]
    assert hook["webhook_configs"][0]["url"] == DATA["vllm_alert_webhook"]
    # Everything on loopback; alertmanager without its cluster listener.
    assert (files / "etc/default/prometheus").read_text().endswith(
        'ARGS="--web.listen-address=127.0.0.1:9090 --config.file=/etc/prometheus/prometheus.yml"\n')
    assert "--web.listen-address=127.0.0.1:9093" in (files / "etc/default/prometheus-alertmanager").read_text()
    assert '--cluster.listen-address="\n' in (files / "etc/default/prometheus-alertmanager").read_text()
    assert "--web.listen-address=127.0.0.1:9100 --collector.textfile.directory=/var/lib/prometheus/node-exporter" in \
        (files / "etc/default/prometheus-node-exporter").read_text()
    stub = (files / "etc/nginx/conf.d/vllm-stub-status.conf").read_text()
    assert "listen 127.0.0.1:8079;" in stub and "allow 127.0.0.1;\n    deny all;" in stub
    # Checked on the host before the reload, and packages without recommends.
    # (The recorded host runs no Prometheus yet: its restart is a start.)
    assert commands.index("promtool check config /etc/prometheus/prometheus.yml") < commands.index(
        "systemctl start prometheus.service")
    assert "chown root:prometheus /etc/prometheus\n" not in commands, "the package's directory keeps its owner"
    assert "chown root:grafana /etc/grafana/dashboards/vllm\n" in commands
    assert "chown root:root /etc/grafana/dashboards/vllm\n" not in commands, "one owner per directory"
    assert "amtool check-config /etc/prometheus/alertmanager.yml" in commands
    assert commands.index("nginx -t 2>&1") < commands.rindex("systemctl start nginx.service")
    assert "install --no-install-recommends prometheus prometheus-alertmanager" in commands
    assert "install --no-install-recommends prometheus-node-exporter prometheus-nginx-exporter python3" in commands
    # GPU metrics: the script and a timer every scrape interval.
    assert (files / "usr/local/lib/vllm-deploy/gpu_metrics.py").read_text().startswith("#!/usr/bin/env python3")
    timer = (files / "etc/systemd/system/vllm-gpu-metrics.timer").read_text()
    assert "OnUnitActiveSec=15s" in timer
    service = (files / "etc/systemd/system/vllm-gpu-metrics.service").read_text()
    assert ("ExecStart=/usr/bin/python3 /usr/local/lib/vllm-deploy/gpu_metrics.py /var/lib/prometheus/node-exporter"
            in service)
    # Grafana: the preset's repository signed by its own key, provisioning and the dashboard.
    assert (files / "etc/apt/sources.list.d/grafana.list").read_text() == (
        "deb [signed-by=/etc/apt/keyrings/grafana.asc] https://mirrors.tuna.tsinghua.edu.cn/grafana/apt stable main\n")
    assert "https://mirrors.tuna.tsinghua.edu.cn/grafana/apt/gpg.key" in commands
    assert commands.index("/etc/apt/keyrings/grafana.asc") < commands.index("install --no-install-recommends grafana")
    source = yaml.safe_load((files / "etc/grafana/provisioning/datasources/vllm.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://127.0.0.1:9090"
    board = json.loads((files / "etc/grafana/dashboards/vllm/vllm-vllm.json").read_text())
    assert {v["name"] for v in board["templating"]["list"]} == {"host", "model", "instance_name"}
    assert "GF_SERVER_HTTP_ADDR=127.0.0.1" in (
        files / "etc/systemd/system/grafana-server.service.d/vllm-listen.conf").read_text()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not on PATH (scripts/controller-tools.sh)")
def test_the_uploaded_rules_pass_promtool(tmp_path: Path) -> None:
    _, files, _ = _deploy(tmp_path)
    result = subprocess.run(["promtool", "check", "rules", str(files / "etc/prometheus/vllm-alerts.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
