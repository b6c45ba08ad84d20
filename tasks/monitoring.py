"""Monitoring stage: exporters on every host, Prometheus and Alertmanager (and Grafana) on the monitoring host."""

from __future__ import annotations

from pyinfra.api import deploy

from plan.host import HostPlan


@deploy("Monitoring")
def monitoring(plan: HostPlan) -> None:
    """Install and configure what `plan.exporters` and `plan.monitoring` say."""
    if plan.exporters is None and plan.monitoring is None:
        return
