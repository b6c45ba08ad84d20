"""What the monitoring host gets, read by Prometheus' own tools: `promtool check config/rules`,
`amtool check-config`, and `promtool test rules` (each alert fires on a bad series and stays
silent on a healthy one). The tools come from scripts/controller-tools.sh."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from plan.monitoring import RULES_FILE, MonitoringPlan, build_monitoring_plan, yaml_dump
from plan.settings import load_instances
from tests.plan.test_monitoring import GW, HOSTILE, OTHER

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH (scripts/controller-tools.sh "
                                    "unpacks it into /var/cache/vllm-deploy/tools/bin)")


def _plan(**extra) -> MonitoringPlan:
    others = [(name, {**OTHER, "vllm_advertise_address": f"10.0.1.{n}"}) for n, name in enumerate(HOSTILE)]
    hosts = [(n, load_instances(d)[0].settings, load_instances(d))
             for n, d in [("gw", {**GW, "vllm_grafana": True, **extra}), *others]]
    plan = build_monitoring_plan(hosts[0][1], "gw", hosts)
    assert plan is not None
    return plan


def _write(tmp: Path, plan: MonitoringPlan) -> tuple[Path, Path]:
    """prometheus.yml and the rules in `tmp`, the config pointing at the copy of the rules."""
    rules = tmp / "rules.yml"
    rules.write_text(plan.files()[RULES_FILE])
    key = tmp / "vllm.key"  # promtool checks that the scrape's credentials file exists
    key.write_text("sk-test\n")
    plan = replace(plan, key_file=str(key))
    config = plan.prometheus_config() | {"rule_files": [str(rules)]}
    (tmp / "prometheus.yml").write_text(yaml_dump(config))
    return tmp / "prometheus.yml", rules


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


@needs_promtool
def test_promtool_accepts_the_config_and_rules_with_hostile_names(tmp_path: Path) -> None:
    config, rules = _write(tmp_path, _plan())
    result = _run(PROMTOOL, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(PROMTOOL, "check", "rules", str(rules))
    assert result.returncode == 0 and "SUCCESS: 11 rules found" in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(AMTOOL is None, reason="amtool is not on PATH (scripts/controller-tools.sh)")
@pytest.mark.parametrize("webhook", [None, "https://hooks.example:8443/services/T0K3N/x?token=abc%20d"])
def test_amtool_accepts_alertmanagers_config(tmp_path: Path, webhook: str | None) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(_plan(vllm_alert_webhook=webhook).files()["/etc/prometheus/alertmanager.yml"])
    result = _run(AMTOOL, "check-config", str(path))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    if webhook:
        assert yaml.safe_load(path.read_text())["receivers"][0]["webhook_configs"][0]["url"] == webhook


V = 'job="vllm",host="gw",instance_name="a",model_name="tiny",engine="0"'
N = 'job="node",host="gw",instance="127.0.0.1:9100"'


def _ttft(le_counts: dict[str, int]) -> list[dict]:
    """A TTFT histogram growing each minute by `le_counts` (cumulative per bucket)."""
    return [{"series": f'vllm:time_to_first_token_seconds_bucket{{{V},le="{le}"}}', "values": f"0+{n}x20"}
            for le, n in le_counts.items()]


def _fs(mount: str, avail: float, size: float = 100) -> list[dict]:
    labels = f'{N},mountpoint="{mount}",fstype="ext4",device="/dev/sda1"'
    return [{"series": f"node_filesystem_avail_bytes{{{labels}}}", "values": f"{avail}x20"},
            {"series": f"node_filesystem_size_bytes{{{labels}}}", "values": f"{size}x20"}]


# alert -> (series that must make it fire at 15m, series of a healthy deployment, labels it fires with)
CASES: dict[str, tuple[list[dict], list[dict], dict[str, str]]] = {
    "VLLMInstanceDown": ([{"series": f'up{{{V}}}', "values": "0x20"}], [{"series": f'up{{{V}}}', "values": "1x20"}],
                         {"host": "gw", "instance_name": "a"}),
    "VLLMEngineRestartedByWatchdog": (
        [{"series": f'vllm_watchdog_restarts_total{{{N},unit="vllm-a"}}', "values": "0x12 1 1 1 1 1 1 1 1"}],
        [{"series": f'vllm_watchdog_restarts_total{{{N},unit="vllm-a"}}', "values": "3x20"}], {"unit": "vllm-a"}),
    "VLLMEngineNotAnswering": (
        [{"series": f'vllm_watchdog_consecutive_misses{{{N},unit="vllm-a"}}', "values": "0x10 1 2 2 2 2 2 2 2 2 2"}],
        [{"series": f'vllm_watchdog_consecutive_misses{{{N},unit="vllm-a"}}', "values": "0x20"}], {"unit": "vllm-a"}),
    "VLLMKVCacheNearlyFull": ([{"series": f"vllm:kv_cache_usage_perc{{{V}}}", "values": "0.95x20"}],
                              [{"series": f"vllm:kv_cache_usage_perc{{{V}}}", "values": "0.9x20"}],
                              {"instance_name": "a"}),
    "VLLMRequestsWaiting": ([{"series": f"vllm:num_requests_waiting{{{V}}}", "values": "3x20"}],
                            [{"series": f"vllm:num_requests_waiting{{{V}}}", "values": "0x20"}],
                            {"instance_name": "a"}),
    # SLO 2000 ms: all first tokens after 2.5 s (over) vs all within 0.5 s (within).
    "VLLMTimeToFirstTokenSLO": (_ttft({"0.5": 0, "2.5": 10, "+Inf": 10}), _ttft({"0.5": 10, "2.5": 10, "+Inf": 10}),
                                {"model_name": "tiny", "instance_name": "a"}),
    "GPUXidError": ([{"series": f"vllm_gpu_xid_errors_total{{{N}}}", "values": "0x12 1 1 1 1 1 1 1 1"}],
                    [{"series": f"vllm_gpu_xid_errors_total{{{N}}}", "values": "2x20"}], {"host": "gw"}),
    "GPUUncorrectedECCErrors": (
        [{"series": f'vllm_gpu_ecc_errors_uncorrected{{{N},gpu="1",name="A100"}}', "values": "0x10 2x10"}],
        [{"series": f'vllm_gpu_ecc_errors_uncorrected{{{N},gpu="1",name="A100"}}', "values": "0x20"}], {"gpu": "1"}),
    "GPUMetricsFailing": ([{"series": f"vllm_gpu_metrics_up{{{N}}}", "values": "0x20"}],
                          [{"series": f"vllm_gpu_metrics_up{{{N}}}", "values": "1x20"}], {"host": "gw"}),
    "ExporterDown": ([{"series": f"up{{{N}}}", "values": "0x20"}], [{"series": f"up{{{N}}}", "values": "1x20"}],
                     {"job": "node"}),
    # The model dir /srv/models/tiny lives on /srv (95% full); / has room. Healthy: /srv has room, / is full
    # (not the models' disk, so silent).
    "ModelDiskNearlyFull": (_fs("/srv", 5) + _fs("/", 50), _fs("/srv", 50) + _fs("/", 5), {"mountpoint": "/srv"}),
}


# The value an alert's summary shows at 15m where it shows one.
VALUES = {"VLLMEngineNotAnswering": "2", "VLLMRequestsWaiting": "3"}


def _unit_tests(rules: Path, case_input: dict[str, list[dict]], expected: dict[str, list[dict]]) -> dict:
    return {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": case_input[name],
         "alert_rule_test": [{"eval_time": "15m", "alertname": name, "exp_alerts": expected[name]}]}
        for name in case_input]}


@needs_promtool
def test_every_alert_fires_on_its_bad_series_and_stays_silent_when_healthy(tmp_path: Path) -> None:
    plan = _plan()
    _, rules = _write(tmp_path, plan)
    annotations = {r.name: r for r in plan.rules}
    assert set(CASES) == set(annotations), "every alert has a case here"
    firing, healthy, expected = {}, {}, {}
    for name, (bad, good, labels) in CASES.items():
        rule = annotations[name]
        firing[name], healthy[name] = bad, good
        expected[name] = labels
        # exp_labels must be complete: the series' labels (less __name__ where the expr drops it) + severity.
        series = bad[0]["series"]
        full = dict(part.split("=", 1) for part in series[series.index("{") + 1:-1].split(","))
        full = {k: v.strip('"') for k, v in full.items() if k != "le"}
        if name == "VLLMTimeToFirstTokenSLO":
            full = {k: full[k] for k in ("host", "instance_name", "model_name")}
        if name == "ModelDiskNearlyFull":
            full["mountpoint"] = "/srv"
        assert labels.items() <= full.items(), name
        # The summary as Prometheus renders it: the template's labels (and value) must exist on the alert.
        summary = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m, labels=full: labels[m.group(1)],
                         rule.summary)
        summary = summary.replace("{{ $value }}", VALUES.get(name, "?"))
        expected[name] = [{"exp_labels": {**full, "severity": rule.severity}, "exp_annotations": {"summary": summary}}]
    (tmp_path / "firing.yml").write_text(yaml_dump(_unit_tests(rules, firing, expected)))
    (tmp_path / "healthy.yml").write_text(yaml_dump(_unit_tests(rules, healthy, {n: [] for n in CASES})))
    for suite in ("firing.yml", "healthy.yml"):
        result = _run(PROMTOOL, "test", "rules", suite, cwd=tmp_path)
        assert result.returncode == 0 and "SUCCESS" in result.stdout, f"{suite}:\n{result.stdout}{result.stderr}"


@needs_promtool
def test_a_rule_that_never_fires_is_caught(tmp_path: Path) -> None:
    """The unit tests above are not vacuous: the same firing input against a threshold no series meets fails."""
    plan = _plan()
    broken = plan.rules_config()
    group = broken["groups"][0]
    group["rules"] = [dict(r, expr=r["expr"].replace("> 0.9", "> 2")) for r in group["rules"]]
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml_dump(broken))
    name = "VLLMKVCacheNearlyFull"
    bad, _, _ = CASES[name]
    suite = _unit_tests(rules, {name: bad}, {name: [{"exp_labels": {
        "job": "vllm", "host": "gw", "instance_name": "a", "model_name": "tiny", "engine": "0",
        "severity": "warning"}, "exp_annotations": {"summary": next(r.summary for r in plan.rules if r.name == name)
                                                    .replace("{{ $labels.instance_name }}", "a")
                                                    .replace("{{ $labels.host }}", "gw")}}]})
    (tmp_path / "broken.yml").write_text(yaml_dump(suite))
    result = _run(PROMTOOL, "test", "rules", "broken.yml", cwd=tmp_path)
    assert result.returncode != 0 and name in result.stdout + result.stderr
