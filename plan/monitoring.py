"""The monitoring plan: Prometheus and Alertmanager on one host of a deployment, exporters on every host.

Pure data, computed from settings alone (like the gateway plan), so the monitoring host can list
every scrape target of its deployment without the other hosts' facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from plan.settings import InstanceSettings, Settings

Member = tuple[str, Settings, tuple[InstanceSettings, ...]]

# Debian 12's prometheus-node-exporter reads *.prom files from here (its unit's default
# --collector.textfile.directory); the GPU metrics script and the watchdog write into it.
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


@dataclass(frozen=True)
class ExportersPlan:
    """What this host exports to the deployment's Prometheus."""

    node: bool
    nginx: bool
    gpu: bool

    def summary(self) -> str:
        return "exporters: node" + (", nginx" if self.nginx else "") + (", GPU" if self.gpu else "")

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "nginx": self.nginx, "gpu": self.gpu}


@dataclass(frozen=True)
class MonitoringPlan:
    """Prometheus, Alertmanager (and Grafana) of one deployment, on this host."""

    deployment: str
    host: str

    def summary(self) -> str:
        return f"monitoring {self.deployment} on {self.host}"

    def to_dict(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "host": self.host}


def build_exporters_plan(settings: Settings, host: str, members: Iterable[Member], device: str,
                         gateway: bool) -> ExportersPlan | None:
    """The exporters of `host`, or None when it exports nothing."""
    return None


def build_monitoring_plan(settings: Settings, host: str, members: Iterable[Member]) -> MonitoringPlan | None:
    """The monitoring stack of `host` over `members`, or None when the host does not run it."""
    return None
