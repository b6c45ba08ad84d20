"""Monitoring stage: exporters on every host, Prometheus and Alertmanager (and Grafana) on the monitoring host.

Thin: every file comes from the plan (plan.monitoring). Debian's packages are used as they are;
their command lines go in /etc/default/<package> (ARGS), written before the install so a first
start already listens where the plan says. Prometheus' and Alertmanager's files are checked on the
host by the packages' own promtool/amtool before the service reloads; a failure fails the host
with the checker's message.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from jinja2 import Template
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from plan.host import HostPlan
from plan.monitoring import (
    ALERTMANAGER_CONFIG,
    DEFAULTS,
    GPU_METRICS_SCRIPT,
    GPU_METRICS_UNIT,
    GRAFANA_DROPIN,
    GRAFANA_KEY,
    GRAFANA_PORT,
    GRAFANA_SOURCES,
    LOOPBACK,
    PROMETHEUS_CONFIG,
    RULES_FILE,
    STUB_STATUS_CONF,
    STUB_STATUS_PORT,
    TEXTFILE_DIR,
    ExportersPlan,
    MonitoringPlan,
)
from plan.quoting import sh
from tasks.apt_lists import refreshed, update_once
from tasks.secret_files import secret_file

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "monitoring"


def _render(template: str, **values: object) -> StringIO:
    return StringIO(Template((TEMPLATES / template).read_text(), keep_trailing_newline=True).render(**values))


def _defaults(service: str, args: str) -> OperationMeta:
    """/etc/default/<package>: the ARGS its unit passes (values are the plan's addresses and paths only)."""
    return files.put(name=f"{service} command line", src=_render("defaults.j2", service=service, args=args),
                     dest=DEFAULTS[service], user="root", group="root", mode="644")


def _service(unit: str, restart: list[OperationMeta], reload: list[OperationMeta] | None = None) -> None:
    """Enabled and running; restarted when its command line changed, else reloaded when its config did."""
    systemd.service(name=f"{unit} enabled and running", service=unit, running=True, enabled=True)
    systemd.service(name=f"{unit} restarted (command line changed)", service=unit, running=True, restarted=True,
                    _if=any_changed(*restart))
    if reload:
        changed, restarted = any_changed(*reload), any_changed(*restart)
        systemd.service(name=f"{unit} reloaded (configuration changed)", service=unit, running=True, reloaded=True,
                        _if=lambda: changed() and not restarted())


def exporters(e: ExportersPlan) -> None:
    """Node exporter (+ nginx's on the gateway, + the GPU metrics timer on CUDA hosts)."""
    node_args = _defaults("node", e.node_args)
    nginx_args = _defaults("nginx", e.nginx_args) if e.nginx else None
    apt.packages(name="Prometheus exporters", packages=list(e.apt_packages), no_recommends=True, **update_once())
    _service("prometheus-node-exporter.service", [node_args])
    if e.nginx and nginx_args is not None:
        stub = files.put(name="nginx stub_status on loopback", src=_render("stub_status.conf.j2", loopback=LOOPBACK,
                                                                        port=STUB_STATUS_PORT),
                         dest=STUB_STATUS_CONF, user="root", group="root", mode="644")
        server.shell(name="nginx -t (stub_status)", commands=["nginx -t 2>&1"], _if=stub.did_change)
        systemd.service(name="nginx reloaded (stub_status)", service="nginx.service", running=True, reloaded=True,
                        _if=stub.did_change)
        _service("prometheus-nginx-exporter.service", [nginx_args, stub])
    if e.gpu:
        files.directory(name="vllm-deploy host scripts", path=str(Path(GPU_METRICS_SCRIPT).parent), user="root",
                        group="root", mode="755")
        ops = [
            files.put(name="GPU metrics script", src=str(ROOT / "remote" / "gpu_metrics.py"), dest=GPU_METRICS_SCRIPT,
                      user="root", group="root", mode="755"),
            files.put(name=f"{GPU_METRICS_UNIT}.service", src=_render(f"{GPU_METRICS_UNIT}.service.j2",
                                                                      script=GPU_METRICS_SCRIPT,
                                                                      textfile_dir=TEXTFILE_DIR),
                      dest=f"/etc/systemd/system/{GPU_METRICS_UNIT}.service", user="root", group="root", mode="644"),
            files.put(name=f"{GPU_METRICS_UNIT}.timer", src=_render(f"{GPU_METRICS_UNIT}.timer.j2",
                                                                    interval=e.gpu_interval),
                      dest=f"/etc/systemd/system/{GPU_METRICS_UNIT}.timer", user="root", group="root", mode="644"),
        ]
        systemd.daemon_reload(name="systemd daemon-reload (GPU metrics units)", _if=any_changed(*ops[1:]))
        _service(f"{GPU_METRICS_UNIT}.timer", ops)


def _check(name: str, command: str, changed: list[OperationMeta]) -> OperationMeta:
    """Run the package's own checker when a file it reads changed; its output is the host's error."""
    return server.shell(name=name, commands=[f"{command} 2>&1"], _if=any_changed(*changed))


def grafana(m: MonitoringPlan) -> None:
    """Grafana from its apt repository (signed-by its own key), on loopback, provisioned from the plan."""
    assert m.grafana is not None
    apt.packages(name="Tools to fetch Grafana's apt key", packages=["ca-certificates", "curl"], no_recommends=True,
                 **update_once())
    files.directory(name="apt keyrings", path=str(Path(GRAFANA_KEY).parent), user="root", group="root", mode="755")
    key = files.download(name="Grafana apt key", src=m.grafana.key_url, dest=GRAFANA_KEY, user="root", group="root",
                         mode="644")
    sources = files.put(name="Grafana apt repository", src=StringIO(m.grafana.sources), dest=GRAFANA_SOURCES,
                        user="root", group="root", mode="644")
    apt.update(name="apt update (Grafana repository added)", _if=any_changed(key, sources))
    # Its own refresh: lists read before the repository was added know nothing of it.
    apt.packages(name="Grafana", packages=["grafana"], update=True, cache_time=24 * 3600, no_recommends=True)
    refreshed()
    dropin = [
        files.directory(name="grafana-server drop-in directory", path=str(Path(GRAFANA_DROPIN).parent),
                        user="root", group="root", mode="755"),
        files.put(name="Grafana on loopback", src=_render("grafana-listen.conf.j2", loopback=LOOPBACK,
                                                          port=GRAFANA_PORT),
                  dest=GRAFANA_DROPIN, user="root", group="root", mode="644"),
    ]
    systemd.daemon_reload(name="systemd daemon-reload (Grafana drop-in)", _if=any_changed(*dropin))
    grafana_files = {path: text for path, text in m.files().items() if path.startswith("/etc/grafana/")}
    for directory in sorted({str(Path(path).parent) for path in grafana_files}):
        files.directory(name=f"Grafana {directory}", path=directory, user="root", group="grafana", mode="755")
    # create_remote_dir=False: the directories are the ones above, owned as above (no second owner).
    provisioned = [files.put(name=f"Grafana {path}", src=StringIO(text), dest=path, user="root", group="grafana",
                             mode="644", create_remote_dir=False)
                   for path, text in grafana_files.items()]
    _service("grafana-server.service", [*dropin, *provisioned])


def prometheus(m: MonitoringPlan, api_key: str | None) -> None:
    """Prometheus and Alertmanager on loopback, their configs checked on the host before the reload."""
    args = [_defaults("prometheus", m.prometheus_args), _defaults("alertmanager", m.alertmanager_args)]
    apt.packages(name="Prometheus and Alertmanager", packages=list(m.apt_packages), no_recommends=True,
                 **update_once())
    if m.key_file and api_key:
        # Read at each scrape: a new key needs no reload. The package made the prometheus group above.
        secret_file(name="API key for Prometheus' scrapes of vLLM (0640 root:prometheus)", dest=m.key_file,
                    content=api_key, group="prometheus", mode="640")
    content = m.files()
    # /etc/prometheus is the package's: its owner stays (create_remote_dir=False).
    written = {path: files.put(name=f"Prometheus {Path(path).name}", src=StringIO(content[path]), dest=path,
                               user="root", group="prometheus", mode="640", create_remote_dir=False)
               for path in (PROMETHEUS_CONFIG, RULES_FILE, ALERTMANAGER_CONFIG)}
    prom = [written[PROMETHEUS_CONFIG], written[RULES_FILE]]
    _check("promtool check config (and its rules)", f"promtool check config {sh(PROMETHEUS_CONFIG)}", prom)
    _check("amtool check-config", f"amtool check-config {sh(ALERTMANAGER_CONFIG)}", [written[ALERTMANAGER_CONFIG]])
    _service("prometheus.service", [args[0]], prom)
    _service("prometheus-alertmanager.service", [args[1]], [written[ALERTMANAGER_CONFIG]])


@deploy("Monitoring")
def monitoring(plan: HostPlan) -> None:
    """Install and configure what `plan.exporters` and `plan.monitoring` say."""
    if plan.exporters is not None:
        exporters(plan.exporters)
    if plan.monitoring is not None:
        prometheus(plan.monitoring, plan.api_key)
        if plan.monitoring.grafana is not None:
            grafana(plan.monitoring)
