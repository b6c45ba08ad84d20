"""Prometheus on a real lab host scraping the real vLLM build, the exporters, and evaluating what we ship.

Every PromQL expression of the dashboards and of the alert rules (each rule's series part, without
its threshold) is evaluated against the live Prometheus after traffic went through the gateway, and
each must return a series: no panel or alert names a metric the deployed vLLM lacks. GPU panels read
the GPU exporter's output, fed here by a recorded nvidia-smi (no GPU in a lab host).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from hostlab import TestHost
from plan.monitoring import TEXTFILE_DIR, MonitoringPlan, build_monitoring_plan
from plan.settings import load_instances
from tasks.planning import pyinfra_data_keys
from tests.e2e.gatewaylab import Story
from tests.e2e.operate.conftest import FAST
from tests.facts.test_gpu_metrics import SMI, XID

pytestmark = pytest.mark.hosts

ROOT = Path(__file__).resolve().parents[3]

# Runs on the monitoring host: evaluates each expression read from stdin (a JSON list) at Prometheus'
# query API on loopback and prints {expression: number of series or the error}.
QUERY = r"""
import json, sys, urllib.parse, urllib.request
out = {}
for expr in json.load(sys.stdin):
    url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = json.load(urllib.request.urlopen(url, timeout=10))
        out[expr] = len(body["data"]["result"]) if body.get("status") == "success" else body.get("error")
    except Exception as error:
        out[expr] = repr(error)
print(json.dumps(out))
"""


def query(host: TestHost, expressions: list[str]) -> dict[str, object]:
    """{expression: number of series, or Prometheus' error} from the monitoring host's Prometheus."""
    _write(host, "/root/promquery.py", QUERY)
    proc = subprocess.run(host.ssh_argv("python3 /root/promquery.py", timeout=120), input=json.dumps(expressions),
                          text=True, capture_output=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _traffic(story: Story, count: int = 12) -> None:
    for _ in range(count):
        status, body, _ = story.request("POST", "/v1/completions", {"model": "tiny", "prompt": "def f(",
                                                                    "max_tokens": 8})
        assert status == 200, body[:300]


def _monitoring_plan(story: Story) -> MonitoringPlan:
    """The plan of host A, from the same inventory the deploy ran with."""
    members = []
    for name, data in story.inventory():
        instances = load_instances(data, pyinfra_data_keys())
        members.append((name, instances[0].settings, instances))
    plan = build_monitoring_plan(members[0][1], members[0][0], members)
    assert plan is not None
    return plan


def _write(host: TestHost, path: str, text: str, mode: str = "644") -> None:
    subprocess.run(host.ssh_argv(f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}"),
                   input=text, text=True, check=True, timeout=60)


def _feed_recorded_gpu_metrics(host: TestHost) -> None:
    """No GPU in a lab host: run the GPU exporter script once with a recorded nvidia-smi and Xid log."""
    _write(host, "/root/gpu-shim/gpu_metrics.py", (ROOT / "remote" / "gpu_metrics.py").read_text())
    for name, text in (("nvidia-smi", SMI), ("journalctl", XID)):
        _write(host, f"/root/gpu-shim/{name}.out", text)
        _write(host, f"/root/gpu-shim/{name}", f"#!/bin/sh\ncat /root/gpu-shim/{name}.out\n", "755")
    host.run(f"NVIDIA_SMI=/root/gpu-shim/nvidia-smi JOURNALCTL=/root/gpu-shim/journalctl "
             f"python3 /root/gpu-shim/gpu_metrics.py {TEXTFILE_DIR}")


def test_prometheus_scrapes_every_instance_and_exporter(operated: Story) -> None:
    _traffic(operated)
    deadline = time.monotonic() + 120
    while True:
        targets = query(operated.a, ['up{job="vllm"} == 1', 'up{job="node"} == 1', 'up{job="nginx"} == 1'])
        if list(targets.values()) == [3, 2, 1] or time.monotonic() > deadline:
            break
        time.sleep(FAST["vllm_scrape_interval"])
    assert list(targets.values()) == [3, 2, 1], targets


def test_every_dashboard_and_alert_expression_returns_a_series(operated: Story) -> None:
    plan = _monitoring_plan(operated)
    _feed_recorded_gpu_metrics(operated.a)
    _traffic(operated)
    expressions = plan.expressions()
    assert len(expressions) > 20 and {e.needs for e in expressions} >= {"", "gpu", "watchdog", "nginx"}
    # Rates and quantiles need two scrapes of the traffic in their window.
    deadline = time.monotonic() + 180
    while True:
        results = query(operated.a, [e.expr for e in expressions])
        empty = {f"{e.origin}: {e.expr}": results[e.expr] for e in expressions if results[e.expr] in (0, None)
                 or not isinstance(results[e.expr], int)}
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(FAST["vllm_scrape_interval"] * 2)
    assert not empty, "expressions without a series (or failing):\n" + "\n".join(f"{k} -> {v}"
                                                                                  for k, v in empty.items())
    print(f"monitoring: {len(expressions)} expressions of the dashboards and rules each returned a series")


def test_prometheus_hands_alerts_to_alertmanager_and_the_stack_rerun_changes_nothing(operated: Story) -> None:
    status = query(operated.a, ['prometheus_notifications_alertmanagers_discovered == 1'])
    assert list(status.values()) == [1], status
    rules = operated.a.run("curl -s http://127.0.0.1:9090/api/v1/rules").stdout
    names = {rule["name"] for group in json.loads(rules)["data"]["groups"] for rule in group["rules"]}
    assert names == {rule.name for rule in _monitoring_plan(operated).rules}, names
    again = operated.deploy()
    assert again.returncode == 0, again.failure(5000)
    assert again.changed == 0, again.output[-6000:]
