"""Watchdog stage: one host-side probe service over every instance of the host."""

from __future__ import annotations

from pyinfra.api import deploy

from plan.host import HostPlan


@deploy("Watchdog")
def watchdog(plan: HostPlan) -> None:
    """Install the probe, its configuration and its unit, as `plan.watchdog` says."""
    if plan.watchdog is None:
        return
