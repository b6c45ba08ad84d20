"""Watchdog stage: one host-side probe service over every instance of the host.

Thin: the plan (plan/watchdog.py) decides what is probed and how; this puts the script, its
config and its unit on the host and keeps the service running, restarted when any of them
changed. Turned off, the unit is stopped and disabled and its metrics file removed (an alert on
a stopped watchdog must not fire for one switched off on purpose); a host that never had it
sees no change.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, systemd

from plan.host import HostPlan
from plan.monitoring import TEXTFILE_DIR
from plan.watchdog import METRICS_FILE, UNIT, UNIT_FILE
from tasks.apt_lists import update_once

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@deploy("Watchdog")
def watchdog(plan: HostPlan) -> None:
    """Install the probe, its configuration and its unit, as `plan.watchdog` says."""
    w = plan.watchdog
    if w is None:
        _remove()
        return
    # The host's dpkg facts (gathered for the plan) say whether python3 is there: no apt run when it is.
    installed = plan.facts.package_version
    missing = [name for name in w.apt_packages if not installed(name)]
    if missing:
        apt.packages(name="python3 for the watchdog", packages=missing, no_recommends=True, **update_once())
    files.directory(name="Watchdog script directory (root only writes)", path=w.remote_dir, user="root",
                    group="root", mode="755")
    # Owner and mode left to whoever else manages it (the node exporter's package); only made when missing.
    files.directory(name="Node exporter textfile directory", path=w.textfile_dir)
    script = files.put(name="Watchdog script", src=w.script_source, dest=w.script, user="root", group="root",
                       mode="755")
    config = files.put(name="Watchdog config (0600: names the key file)", src=StringIO(w.config_json()),
                       dest=w.config_file, user="root", group="root", mode="600")
    unit = files.template(name="Watchdog unit", src=str(TEMPLATES / "vllm-watchdog.service.j2"), dest=w.unit_file,
                          user="root", group="root", mode="644", w=w)
    systemd.daemon_reload(name=f"{w.service}: systemd daemon-reload (unit changed)", _if=unit.did_change)
    systemd.service(name=f"{w.service} restarted (its script, config or unit changed)", service=w.service,
                    running=True, restarted=True,
                    _if=lambda: any(op.did_change() for op in (script, config, unit)))
    systemd.service(name=f"{w.service} running and enabled at boot", service=w.service, running=True,
                    enabled=True)


WHY_OFF = "vllm_watchdog off, or no instance with an API here"


def _remove() -> None:
    """vllm_watchdog = False: stop and disable a watchdog an earlier deploy installed, drop its metrics."""
    if host.get_fact(File, path=UNIT_FILE):
        systemd.service(name=f"{UNIT}.service stopped and disabled ({WHY_OFF})",
                        service=f"{UNIT}.service", running=False, enabled=False)
    files.file(name=f"Watchdog metrics file removed ({WHY_OFF})", path=f"{TEXTFILE_DIR}/{METRICS_FILE}",
               present=False)
