"""The monitoring plan: Prometheus and Alertmanager on one host of a deployment, exporters on every host.

Pure data, computed from settings alone (like the gateway plan), so the monitoring host can list
every scrape target of its deployment without the other hosts' facts. Every configuration file is
built as Python data and dumped with `yaml_dump` (each string double-quoted) or `json.dumps`, never
templated, so an inventory name or a webhook URL cannot change the structure it lands in. Alert
rules are data too (`Rule`): a test can evaluate each rule's series alone, and `expressions()`
lists every PromQL expression of the rules and dashboards for a check against a live Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from plan.gateway import _inventory_address
from plan.quoting import config_word
from plan.service import PlanError
from plan.settings import InstanceSettings, Settings

Member = tuple[str, Settings, tuple[InstanceSettings, ...]]

# Debian 12's prometheus-node-exporter reads *.prom files from here (its unit's default
# --collector.textfile.directory); the GPU metrics script and the watchdog write into it.
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"

LOOPBACK = "127.0.0.1"
NODE_PORT = 9100
NGINX_EXPORTER_PORT = 9113
# nginx's stub_status, on loopback only, for the nginx exporter beside it (not a vLLM-ish port).
STUB_STATUS_PORT = 8079
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
GRAFANA_PORT = 3000

PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
RULES_FILE = "/etc/prometheus/vllm-alerts.yml"
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
STUB_STATUS_CONF = "/etc/nginx/conf.d/vllm-stub-status.conf"
GPU_METRICS_SCRIPT = "/usr/local/lib/vllm-deploy/gpu_metrics.py"
GPU_METRICS_UNIT = "vllm-gpu-metrics"
# The Debian packages read their command line from ARGS in these files (EnvironmentFile= of their units).
DEFAULTS = {
    "node": "/etc/default/prometheus-node-exporter",
    "nginx": "/etc/default/prometheus-nginx-exporter",
    "prometheus": "/etc/default/prometheus",
    "alertmanager": "/etc/default/prometheus-alertmanager",
}
GRAFANA_KEY = "/etc/apt/keyrings/grafana.asc"
GRAFANA_SOURCES = "/etc/apt/sources.list.d/grafana.list"
GRAFANA_DATASOURCE = "/etc/grafana/provisioning/datasources/vllm.yaml"
GRAFANA_PROVIDER = "/etc/grafana/provisioning/dashboards/vllm.yaml"
GRAFANA_DASHBOARDS = "/etc/grafana/dashboards/vllm"
GRAFANA_DROPIN = "/etc/systemd/system/grafana-server.service.d/vllm-listen.conf"
DATASOURCE_UID = "vllm-prometheus"
# The shortest interval the GPU metrics timer runs at: nvidia-smi itself takes a fraction of a second.
GPU_METRICS_MIN_INTERVAL = 5
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


# ---------------------------------------------------------------------------------------------- quoting


_YAML_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Words some YAML reader (1.1's booleans, Go's yaml.v2 among them) resolves to something other than a string.
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


class _QuotedDumper(yaml.SafeDumper):
    """Strings double-quoted unless they are a plain identifier: no YAML 1.1/1.2 reader (PyYAML, Go's
    yaml) can take a quoted one for a number, a boolean, null, an anchor or a comment, whatever an
    inventory name or URL holds; keys such as `scrape_configs` stay bare and readable."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a dict used twice is written out twice, not as an anchor and alias


def _quoted_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    bare = _YAML_BARE.match(value) and value.lower() not in _YAML_WORDS
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if bare else '"')


_QuotedDumper.add_representer(str, _quoted_str)


def yaml_dump(data: Any) -> str:
    """YAML for Prometheus, Alertmanager and Grafana: plain data, strings double-quoted, lines never folded."""
    return yaml.dump(data, Dumper=_QuotedDumper, sort_keys=False, default_flow_style=False, width=1 << 30,
                     allow_unicode=True)


def promql_string(value: str) -> str:
    """A PromQL string literal: JSON's escapes are Go's, and non-ASCII stays literal (PromQL refuses
    the surrogate pairs json.dumps would write for it)."""
    return json.dumps(str(value), ensure_ascii=False)


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# ------------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Rule:
    """One alert: fires when `series_expr op threshold` holds for `for_`.

    Kept apart so a test can evaluate `series_expr` alone and see the values the threshold meets.
    """

    name: str
    series_expr: str
    op: str
    threshold: float
    for_: str
    severity: str
    summary: str
    needs: str = ""  # what must run for the series to exist: "", "gpu", "watchdog", "nginx"

    @property
    def expr(self) -> str:
        return f"{self.series_expr} {self.op} {self.threshold:g}"

    def to_prometheus(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0s":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {"summary": self.summary}
        return rule


@dataclass(frozen=True)
class Expression:
    """A PromQL expression of a rule or dashboard panel, Grafana's variables substituted."""

    origin: str
    expr: str
    needs: str = ""


def _mount_chain(host: str, model_dir: str) -> str:
    """Free-space ratio of the filesystem that holds `model_dir` on `host`.

    The monitoring host does not know the other hosts' mounts, so each ancestor of the directory is
    tried, longest first: `or on(instance)` keeps a shorter one only where no longer one is a mount.
    """
    parts = [p for p in model_dir.split("/") if p]
    prefixes = ["/" + "/".join(parts[:n]) for n in range(len(parts), 0, -1)] + ["/"]
    terms = []
    for mount in prefixes:
        sel = f'{{job="node",host={promql_string(host)},mountpoint={promql_string(mount)}}}'
        terms.append(f"node_filesystem_avail_bytes{sel} / node_filesystem_size_bytes{sel}")
    return " or on(instance) ".join(f"({term})" for term in terms)


def build_rules(slo_ttft_ms: int, model_dirs: Iterable[tuple[str, str]]) -> tuple[Rule, ...]:
    """The deployment's alerts; `model_dirs`: (inventory name, model directory) of each host with exporters."""
    vllm = '{job="vllm"}'
    rules = [
        Rule("VLLMInstanceDown", f"up{vllm}", "==", 0, "1m", "critical",
             "vLLM instance {{ $labels.instance_name }} on {{ $labels.host }} does not answer /metrics"),
        Rule("VLLMEngineRestartedByWatchdog", "increase(vllm_watchdog_restarts_total[10m])", ">", 0, "0s", "warning",
             "the watchdog restarted {{ $labels.unit }} on {{ $labels.host }}: its engine stopped producing tokens",
             needs="watchdog"),
        Rule("VLLMEngineNotAnswering", "vllm_watchdog_consecutive_misses", ">=", 1, "1m", "critical",
             "{{ $labels.unit }} on {{ $labels.host }} missed {{ $value }} watchdog probes in a row", needs="watchdog"),
        Rule("VLLMKVCacheNearlyFull", f"vllm:kv_cache_usage_perc{vllm}", ">", 0.9, "5m", "warning",
             "KV cache of {{ $labels.instance_name }} on {{ $labels.host }} is over 90% used: requests queue "
             "or are preempted"),
        Rule("VLLMRequestsWaiting", f"vllm:num_requests_waiting{vllm}", ">", 0, "5m", "warning",
             "{{ $value }} requests wait for {{ $labels.instance_name }} on {{ $labels.host }} (at capacity)"),
        Rule("VLLMTimeToFirstTokenSLO",
             "histogram_quantile(0.95, sum by (le, host, instance_name, model_name) "
             f"(rate(vllm:time_to_first_token_seconds_bucket{vllm}[5m])))", ">", slo_ttft_ms / 1000, "5m",
             "warning", f"p95 time to first token of {{{{ $labels.model_name }}}} on {{{{ $labels.instance_name }}}} "
             f"({{{{ $labels.host }}}}) is above the {slo_ttft_ms} ms SLO"),
        Rule("GPUXidError", "increase(vllm_gpu_xid_errors_total[15m])", ">", 0, "0s", "critical",
             "the NVIDIA driver logged an Xid error on {{ $labels.host }} (journalctl -k -g 'NVRM: Xid')",
             needs="gpu"),
        Rule("GPUUncorrectedECCErrors", "vllm_gpu_ecc_errors_uncorrected", ">", 0, "0s", "critical",
             "GPU {{ $labels.gpu }} ({{ $labels.name }}) on {{ $labels.host }} has uncorrected ECC errors since "
             "the driver loaded", needs="gpu"),
        Rule("GPUMetricsFailing", "vllm_gpu_metrics_up", "==", 0, "5m", "warning",
             "nvidia-smi fails on {{ $labels.host }}: GPU metrics are stale (driver gone?)", needs="gpu"),
        Rule("ExporterDown", 'up{job!="vllm"}', "==", 0, "2m", "warning",
             "{{ $labels.job }} on {{ $labels.host }} does not answer its scrape"),
    ]
    chains = [_mount_chain(host, path) for host, path in dict.fromkeys(model_dirs)]
    if chains:
        rules.append(Rule("ModelDiskNearlyFull", "(" + " or ".join(chains) + ")", "<", 0.1, "5m", "warning",
                          "the filesystem holding the models on {{ $labels.host }} ({{ $labels.mountpoint }}) "
                          "has under 10% free"))
    return tuple(rules)


# ------------------------------------------------------------------------------------------- dashboards

_VARIABLES = {"host": "up{job=\"vllm\"}, host", "model": "vllm:num_requests_running, model_name",
              "instance_name": "vllm:num_requests_running{model_name=~\"$model\"}, instance_name"}
_SEL = 'job="vllm",host=~"$host",model_name=~"$model",instance_name=~"$instance_name"'
_QUANTILES = (0.5, 0.95, 0.99)


def _quantiles(metric: str, by: str = "model_name") -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{_SEL}}}[$__rate_interval])))",
             f"p{round(q * 100)} {{{{{by}}}}}") for q in _QUANTILES]


# (title, unit, [(expr, legend)], needs)
PANELS: tuple[tuple[str, str, list[tuple[str, str]], str], ...] = (
    ("Generation throughput", "tok/s", [
        (f"sum by (model_name) (rate(vllm:generation_tokens_total{{{_SEL}}}[$__rate_interval]))", "{{model_name}}"),
    ], ""),
    ("Prompt throughput", "tok/s", [
        (f"sum by (model_name) (rate(vllm:prompt_tokens_total{{{_SEL}}}[$__rate_interval]))", "{{model_name}}"),
    ], ""),
    ("Requests finished", "reqps", [
        (f"sum by (model_name, finished_reason) (rate(vllm:request_success_total{{{_SEL}}}[$__rate_interval]))",
         "{{model_name}} {{finished_reason}}"),
    ], ""),
    ("Time to first token", "s", _quantiles("vllm:time_to_first_token_seconds"), ""),
    ("Inter-token latency", "s", _quantiles("vllm:inter_token_latency_seconds"), ""),
    ("End-to-end request latency", "s", _quantiles("vllm:e2e_request_latency_seconds"), ""),
    ("Requests running and waiting", "short", [
        (f"sum by (host, instance_name) (vllm:num_requests_running{{{_SEL}}})", "running {{host}}/{{instance_name}}"),
        (f"sum by (host, instance_name) (vllm:num_requests_waiting{{{_SEL}}})", "waiting {{host}}/{{instance_name}}"),
    ], ""),
    ("KV cache used", "percentunit", [
        (f"max by (host, instance_name) (vllm:kv_cache_usage_perc{{{_SEL}}})", "{{host}}/{{instance_name}}"),
    ], ""),
    ("GPU memory used", "bytes", [
        ('vllm_gpu_memory_used_bytes{host=~"$host"}', "{{host}} GPU {{gpu}}"),
        ('vllm_gpu_memory_total_bytes{host=~"$host"}', "{{host}} GPU {{gpu}} total"),
    ], "gpu"),
    ("GPU utilization", "percentunit", [
        ('vllm_gpu_utilization_ratio{host=~"$host"}', "{{host}} GPU {{gpu}}"),
    ], "gpu"),
    ("GPU temperature", "celsius", [
        ('vllm_gpu_temperature_celsius{host=~"$host"}', "{{host}} GPU {{gpu}}"),
    ], "gpu"),
    ("Gateway requests", "reqps", [
        ('sum by (host) (rate(nginx_http_requests_total{job="nginx"}[$__rate_interval]))', "{{host}}"),
        ('sum by (host) (nginx_connections_active{job="nginx"})', "{{host}} active connections"),
    ], "nginx"),
)


def dashboard(deployment: str) -> dict[str, Any]:
    """The deployment's Grafana dashboard: per model and instance through the template variables."""
    source = {"type": "prometheus", "uid": DATASOURCE_UID}
    panels = []
    for index, (title, unit, targets, _needs) in enumerate(PANELS):
        panels.append({
            "id": index + 1, "type": "timeseries", "title": title, "datasource": source,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + n), "datasource": source, "expr": expr, "legendFormat": legend}
                        for n, (expr, legend) in enumerate(targets)],
        })
    variables = [{
        "name": name, "label": name, "type": "query", "datasource": source, "query": f"label_values({query})",
        "definition": f"label_values({query})", "refresh": 2, "includeAll": True, "multi": True,
        "allValue": ".+", "current": {"text": "All", "value": "$__all"}, "sort": 1,
    } for name, query in _VARIABLES.items()]
    return {
        "uid": f"vllm-{deployment}", "title": f"vLLM {deployment}", "tags": ["vllm"], "editable": True,
        "schemaVersion": 39, "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
        "templating": {"list": variables}, "panels": panels,
    }


def substitute(expr: str, rate_window: str) -> str:
    """A dashboard expression as Prometheus itself takes it: every variable at "All", the rate window fixed."""
    expr = expr.replace("$__rate_interval", rate_window)
    for name in sorted(_VARIABLES, key=len, reverse=True):
        expr = expr.replace(f"${name}", ".+")
    return expr


# ----------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Target:
    """One scrape target of the deployment's Prometheus."""

    job: str
    address: str
    labels: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        return f"{self.job} {'/'.join(v for _, v in self.labels)} {self.address}"


@dataclass(frozen=True)
class ExportersPlan:
    """What this host exports to the deployment's Prometheus (node exporter, nginx's, GPU textfile)."""

    node: bool
    nginx: bool
    gpu: bool
    listen: str = ""  # "" = every interface (another host scrapes it); LOOPBACK on the monitoring host
    gpu_interval: int = 15

    @property
    def node_args(self) -> str:
        return f"--web.listen-address={_hostport(self.listen, NODE_PORT)} --collector.textfile.directory={TEXTFILE_DIR}"

    @property
    def nginx_args(self) -> str:
        return (f"-nginx.scrape-uri=http://{LOOPBACK}:{STUB_STATUS_PORT}/stub_status "
                f"-web.listen-address={_hostport(self.listen, NGINX_EXPORTER_PORT)} -nginx.retries=10")

    @property
    def apt_packages(self) -> tuple[str, ...]:
        return (("prometheus-node-exporter",) + (("prometheus-nginx-exporter",) if self.nginx else ())
                + (("python3",) if self.gpu else ()))

    def summary(self) -> str:
        where = self.listen or "all interfaces"
        parts = [f"node :{NODE_PORT}"]
        if self.nginx:
            parts.append(f"nginx :{NGINX_EXPORTER_PORT} (stub_status {LOOPBACK}:{STUB_STATUS_PORT})")
        if self.gpu:
            parts.append(f"GPU metrics (nvidia-smi, Xid log) every {self.gpu_interval} s")
        return f"exporters on {where}: {', '.join(parts)}; textfile collector {TEXTFILE_DIR}"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "nginx": self.nginx, "gpu": self.gpu, "listen": self.listen or "*",
                "gpu_interval": self.gpu_interval, "textfile_dir": TEXTFILE_DIR}


@dataclass(frozen=True)
class GrafanaPlan:
    """Grafana from its own apt repository (or the preset's mirror), on loopback, dashboards provisioned."""

    repo: str

    @property
    def key_url(self) -> str:
        return f"{self.repo.rstrip('/')}/gpg.key"

    @property
    def sources(self) -> str:
        return f"deb [signed-by={GRAFANA_KEY}] {config_word(self.repo, 'grafana_apt_repo').rstrip('/')} stable main\n"


@dataclass(frozen=True)
class MonitoringPlan:
    """Prometheus, Alertmanager (and Grafana) of one deployment, on this host."""

    deployment: str
    host: str
    scrape_interval: int
    targets: tuple[Target, ...]
    rules: tuple[Rule, ...]
    webhook: str | None = field(default=None, repr=False)
    grafana: GrafanaPlan | None = None
    # vLLM's /metrics needs the deployment's key like every route but /health: Prometheus reads it from this
    # file (root:prometheus 0640, written like the other key files), never from its config.
    key_file: str | None = None

    @property
    def rate_window(self) -> str:
        """What Grafana's $__rate_interval comes to: four scrapes, at least a minute."""
        return f"{max(60, 4 * self.scrape_interval)}s"

    @property
    def apt_packages(self) -> tuple[str, ...]:
        return ("prometheus", "prometheus-alertmanager")

    @property
    def prometheus_args(self) -> str:
        return f"--web.listen-address={LOOPBACK}:{PROMETHEUS_PORT} --config.file={PROMETHEUS_CONFIG}"

    @property
    def alertmanager_args(self) -> str:
        # No cluster listener: it would listen on every interface (:9094) for peers this setup never has.
        return (f"--web.listen-address={LOOPBACK}:{ALERTMANAGER_PORT} --config.file={ALERTMANAGER_CONFIG} "
                "--cluster.listen-address=")

    def prometheus_config(self) -> dict[str, Any]:
        interval = f"{self.scrape_interval}s"
        jobs: dict[str, list[Target]] = {}
        for target in self.targets:
            jobs.setdefault(target.job, []).append(target)
        own = {"host": self.host}
        scrape = [{"job_name": "prometheus",
                   "static_configs": [{"targets": [f"{LOOPBACK}:{PROMETHEUS_PORT}"], "labels": own}]},
                  {"job_name": "alertmanager",
                   "static_configs": [{"targets": [f"{LOOPBACK}:{ALERTMANAGER_PORT}"], "labels": own}]}]
        for job, targets in jobs.items():
            scrape.append({"job_name": job, "metrics_path": "/metrics", "static_configs": [
                {"targets": [t.address], "labels": dict(t.labels)} for t in targets]})
            if job == "vllm" and self.key_file:
                scrape[-1]["authorization"] = {"type": "Bearer", "credentials_file": self.key_file}
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval,
                       "external_labels": {"deployment": self.deployment}},
            "rule_files": [RULES_FILE],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{LOOPBACK}:{ALERTMANAGER_PORT}"]}]}]},
            "scrape_configs": scrape,
        }

    def rules_config(self) -> dict[str, Any]:
        return {"groups": [{"name": f"vllm-{self.deployment}", "rules": [r.to_prometheus() for r in self.rules]}]}

    def alertmanager_config(self) -> dict[str, Any]:
        receiver: dict[str, Any] = {"name": "webhook" if self.webhook else "none"}
        if self.webhook:
            receiver["webhook_configs"] = [{"url": self.webhook, "send_resolved": True}]
        return {
            "route": {"receiver": receiver["name"], "group_by": ["alertname", "host", "instance_name"],
                      "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"},
            "receivers": [receiver],
        }

    def grafana_datasource(self) -> dict[str, Any]:
        return {"apiVersion": 1, "datasources": [{
            "name": f"Prometheus ({self.deployment})", "uid": DATASOURCE_UID, "type": "prometheus",
            "access": "proxy", "url": f"http://{LOOPBACK}:{PROMETHEUS_PORT}", "isDefault": True, "editable": False,
            "jsonData": {"timeInterval": f"{self.scrape_interval}s"}}]}

    def grafana_provider(self) -> dict[str, Any]:
        return {"apiVersion": 1, "providers": [{
            "name": "vllm", "folder": "vLLM", "type": "file", "disableDeletion": True, "allowUiUpdates": False,
            "updateIntervalSeconds": 60, "options": {"path": GRAFANA_DASHBOARDS}}]}

    def dashboards(self) -> dict[str, str]:
        """File name -> dashboard JSON."""
        return {f"vllm-{self.deployment}.json": json.dumps(dashboard(self.deployment), indent=2) + "\n"}

    def files(self) -> dict[str, str]:
        """Path -> content of every configuration file of the monitoring host."""
        files = {
            PROMETHEUS_CONFIG: yaml_dump(self.prometheus_config()),
            RULES_FILE: yaml_dump(self.rules_config()),
            ALERTMANAGER_CONFIG: yaml_dump(self.alertmanager_config()),
        }
        if self.grafana:
            files[GRAFANA_DATASOURCE] = yaml_dump(self.grafana_datasource())
            files[GRAFANA_PROVIDER] = yaml_dump(self.grafana_provider())
            files |= {f"{GRAFANA_DASHBOARDS}/{name}": text for name, text in self.dashboards().items()}
        return files

    def expressions(self) -> list[Expression]:
        """Every PromQL expression of the rules (their series alone) and the dashboard, as Prometheus takes it.

        `needs` says what must run for it to have a series: "gpu" (CUDA hosts), "watchdog", "nginx" (a gateway).
        """
        found = [Expression(f"rule {r.name}", r.series_expr, r.needs) for r in self.rules]
        for title, _unit, targets, needs in PANELS:
            found += [Expression(f"panel {title}", substitute(expr, self.rate_window), needs) for expr, _ in targets]
        for name, query in _VARIABLES.items():
            found.append(Expression(f"variable {name}", substitute(query.split(", ")[0], self.rate_window)))
        return found

    def _webhook_shown(self) -> str:
        if not self.webhook:
            return "no receiver: alerts show in Alertmanager only"
        parts = urlsplit(self.webhook)
        return f"webhook {parts.scheme}://{parts.hostname}/..."  # the path may hold a token

    def summary(self) -> str:
        lines = [f"monitoring {self.deployment} on {self.host}: Prometheus {LOOPBACK}:{PROMETHEUS_PORT} every "
                 f"{self.scrape_interval} s, Alertmanager {LOOPBACK}:{ALERTMANAGER_PORT} ({self._webhook_shown()})"
                 + (f", Grafana {LOOPBACK}:{GRAFANA_PORT} from {self.grafana.repo}" if self.grafana else "")]
        lines += [f"  scrape {t.describe()}" for t in self.targets]
        lines.append(f"  alerts {', '.join(r.name for r in self.rules)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment, "host": self.host, "scrape_interval": self.scrape_interval,
            "targets": [{"job": t.job, "address": t.address, "labels": dict(t.labels)} for t in self.targets],
            "alerts": [{"name": r.name, "expr": r.expr, "for": r.for_, "severity": r.severity} for r in self.rules],
            "alertmanager": self._webhook_shown(),
            "grafana": {"repo": self.grafana.repo} if self.grafana else None,
        }


# --------------------------------------------------------------------------------------------- builders


def _exports(settings: Settings, has_monitoring: bool) -> bool:
    return has_monitoring if settings.vllm_exporters == "auto" else bool(settings.vllm_exporters)


def _monitoring_host(settings: Settings, members: list[Member]) -> str | None:
    """The deployment's one monitoring host (None: none); more than one is refused."""
    hosts = [name for name, member, _ in members if member.vllm_monitoring]
    if len(hosts) > 1:
        raise PlanError(f"vllm_monitoring: deployment '{settings.vllm_deployment}' has monitoring hosts "
                        f"{', '.join(hosts)}; set vllm_monitoring = True on one of them only (one Prometheus "
                        "scrapes the whole deployment)")
    return hosts[0] if hosts else None


def _refuse_port(host: str, instances: tuple[InstanceSettings, ...], taken: dict[int, str],
                 gateway_port: int | None = None) -> None:
    """A port the monitoring stack uses on `host` that an instance or the gateway already listens on."""
    for instance in instances:
        port = instance.settings.vllm_port
        if port in taken:
            raise PlanError(f"vllm_port: instance '{instance.name}' on {host} listens on {port}, which is "
                            f"{taken[port]}'s port there; choose another port for the instance")
    if gateway_port in taken:
        raise PlanError(f"vllm_gateway_port: {gateway_port} is {taken[gateway_port]}'s port on {host}; "
                        "choose another gateway port")


def build_exporters_plan(settings: Settings, host: str, members: Iterable[Member], device: str,
                         gateway: bool) -> ExportersPlan | None:
    """The exporters of `host`, or None when it exports nothing.

    Node exporter when the deployment has a monitoring host (`vllm_exporters` 'auto') or when told
    (`True`); nginx's exporter beside the gateway; GPU metrics on CUDA hosts. On the monitoring host
    they listen on loopback only; elsewhere on every interface, for the monitoring host to reach.
    """
    members = list(members)
    monitor = _monitoring_host(settings, members)
    if not _exports(settings, monitor is not None):
        return None
    instances = next((i for name, _, i in members if name == host), ())
    taken = {NODE_PORT: "node exporter"}
    if gateway:
        taken |= {NGINX_EXPORTER_PORT: "nginx exporter", STUB_STATUS_PORT: "nginx stub_status"}
    _refuse_port(host, instances, taken, settings.vllm_gateway_port if gateway else None)
    return ExportersPlan(node=True, nginx=gateway, gpu=device != "cpu", listen=LOOPBACK if monitor == host else "",
                         gpu_interval=max(GPU_METRICS_MIN_INTERVAL, settings.vllm_scrape_interval))


def _reach(name: str, member: Settings, host: str) -> str:
    """How the monitoring host reaches another member: its advertised address, else its inventory name."""
    return member.vllm_advertise_address or _inventory_address(
        name, "vllm_advertise_address", f"how the monitoring host {host!r} reaches {name!r}")


def build_monitoring_plan(settings: Settings, host: str, members: Iterable[Member]) -> MonitoringPlan | None:
    """The monitoring stack of `host` over `members`, or None when the host does not run it.

    Instances of this host are scraped on loopback; those of other hosts at their advertised
    address (or inventory name), which needs them to listen beyond loopback: a gateway host's
    instances never do, so only the gateway host can monitor a deployment that has one.
    """
    members = list(members)
    if _monitoring_host(settings, members) is None or not settings.vllm_monitoring:
        return None
    for name in [name for name, member, instances in members if member.vllm_gateway and instances]:
        if name != host:
            raise PlanError(f"vllm_monitoring: the instances of the gateway host {name} listen on loopback only, so "
                            f"Prometheus on {host} cannot scrape them; set vllm_monitoring on the gateway host "
                            f"({name}) instead of {host}")
    targets: list[Target] = []
    model_dirs: list[tuple[str, str]] = []
    for name, member, instances in members:
        local = name == host
        for instance in instances:
            listen = instance.settings.vllm_host
            if local:
                address = LOOPBACK if member.vllm_gateway or listen in LOOPBACK_NAMES + ("0.0.0.0", "::") else listen
            elif listen in LOOPBACK_NAMES:
                raise PlanError(f"vllm_host: the instances of {name} listen on {listen} only, so Prometheus on "
                                f"{host} cannot scrape them; set vllm_host = '0.0.0.0' (or the address "
                                f"{host} reaches) on {name}, or run monitoring on {name}")
            else:
                address = _reach(name, member, host)
            targets.append(Target("vllm", _hostport(address, instance.settings.vllm_port),
                                  (("host", name), ("instance_name", instance.name))))
        if not _exports(member, True):
            continue
        address = LOOPBACK if local else _reach(name, member, host)
        targets.append(Target("node", _hostport(address, NODE_PORT), (("host", name),)))
        if member.vllm_gateway:
            targets.append(Target("nginx", _hostport(address, NGINX_EXPORTER_PORT), (("host", name),)))
        model_dirs += [(name, i.settings.model_dir) for i in instances]
    own = next((i for name, _, i in members if name == host), ())
    taken = {PROMETHEUS_PORT: "Prometheus", ALERTMANAGER_PORT: "Alertmanager"}
    if settings.vllm_grafana:
        taken[GRAFANA_PORT] = "Grafana"
    _refuse_port(host, own, taken, settings.vllm_gateway_port if settings.vllm_gateway else None)
    return MonitoringPlan(
        deployment=settings.vllm_deployment,
        host=host,
        scrape_interval=settings.vllm_scrape_interval,
        targets=tuple(sorted(targets, key=lambda t: ("vllm", "node", "nginx").index(t.job))),
        rules=build_rules(settings.vllm_slo_ttft_ms, model_dirs),
        webhook=settings.vllm_alert_webhook,
        grafana=GrafanaPlan(settings.grafana_apt_repo) if settings.vllm_grafana and settings.grafana_apt_repo else None,
        key_file=f"/etc/prometheus/vllm-{settings.vllm_deployment}.key" if settings.vllm_require_api_key else None,
    )
