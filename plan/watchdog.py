"""The watchdog plan: a probe per instance that restarts an engine which stops producing tokens.

vLLM can keep answering `/health` with 200 while its engine core is wedged and nothing decodes
(vllm#39863): the gateway and the unit's own checks then see a healthy server for hours. The
host-side script (remote/vllm_watchdog.py) asks each instance for one token with a deadline
instead, and restarts the unit after `misses` probes in a row got none. Pure data like the other
plans; the script reads `config_json()`, so what is printed is what runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from plan import quoting
from plan.monitoring import TEXTFILE_DIR
from plan.service import CONFIG_DIR, ServicePlan
from plan.settings import Settings, watchdog_restart_bound

UNIT = "vllm-watchdog"
UNIT_FILE = f"/etc/systemd/system/{UNIT}.service"
CONFIG_FILE = f"{CONFIG_DIR}/watchdog.json"
# Root-owned and outside the service account's prefix: the script runs as root, so no file the
# vllm user can write may be what it executes.
REMOTE_DIR = "/usr/local/lib/vllm-deploy"
# A failed unit (start limit hit) is started again after at least this many seconds, at most REVIVE_MAX apart.
REVIVE_MIN = 30
REVIVE_MAX = 1800
SCRIPT_NAME = "vllm_watchdog.py"
SCRIPT_SOURCE = Path(__file__).resolve().parent.parent / "remote" / SCRIPT_NAME
# systemd's StateDirectory= (under /var/lib): the restart counters survive a restart of the watchdog.
STATE_DIRECTORY = UNIT
STATE_DIR = f"/var/lib/{STATE_DIRECTORY}"
PROBE_PROMPT = "Hi"
# /health answers from the API server alone; it only tells the journal whether the hang was silent.
HEALTH_TIMEOUT = 3
METRICS_FILE = "vllm_watchdog.prom"
CONFIG_VERSION = 1


@dataclass(frozen=True)
class WatchedInstance:
    """One instance as the script sees it: where to probe, and how to restart its unit."""

    unit: str
    served_name: str
    completion_url: str
    health_url: str
    timeout: int
    health_timeout: int
    misses: int
    interval: int
    # How long a restart may take: systemctl restart returns once the unit's health wait passed.
    restart_timeout: int
    # The docker runtime's container (named like the unit): it lives outside the unit's cgroup.
    container: str | None = None

    @property
    def service(self) -> str:
        return f"{self.unit}.service"

    @property
    def state_command(self) -> tuple[str, ...]:
        """Prints the unit's ActiveState: only `active` units are probed (ours are `activating` until healthy)."""
        return ("systemctl", "show", "--property=ActiveState", "--value", self.service)

    @property
    def restart_commands(self) -> tuple[tuple[str, ...], ...]:
        """SIGKILL first: a wedged engine does not drain, and SIGKILL also ends a stopped (frozen) process;
        then a restart, which returns once the unit's ExecStartPost saw /health. A container is killed by
        docker (the unit's cgroup holds only the docker client; its ExecStop would wait out the drain)."""
        docker = (("docker", "kill", "--signal=KILL", self.container),) if self.container else ()
        return (*docker, ("systemctl", "kill", "--signal=SIGKILL", self.service),
                ("systemctl", "restart", self.service))

    @property
    def revive_commands(self) -> tuple[tuple[str, ...], ...]:
        """A unit systemd gave up on (start limit hit): forget its failed starts, then start it."""
        return (("systemctl", "reset-failed", self.service), ("systemctl", "start", self.service))

    @property
    def revive_after(self) -> int:
        """Seconds a unit stays failed before the watchdog starts it: as long as a hang is given (misses x
        interval), so a unit that keeps failing is started at most that often, the wait doubling each time."""
        return max(REVIVE_MIN, self.misses * self.interval)

    def to_config(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "model": self.served_name,
            "prompt": PROBE_PROMPT,
            "completion_url": self.completion_url,
            "health_url": self.health_url,
            "timeout": self.timeout,
            "health_timeout": self.health_timeout,
            "misses": self.misses,
            "interval": self.interval,
            "state_command": list(self.state_command),
            "restart_commands": [list(c) for c in self.restart_commands],
            "restart_timeout": self.restart_timeout,
            "revive_commands": [list(c) for c in self.revive_commands],
            "revive_after": self.revive_after,
            "revive_max": REVIVE_MAX,
        }


@dataclass(frozen=True)
class WatchdogPlan:
    """What the host's watchdog probes and when it restarts."""

    instances: tuple[WatchedInstance, ...]
    interval: int
    timeout: int
    misses: int
    key_header_file: str | None = None
    unit: str = UNIT
    unit_file: str = UNIT_FILE
    config_file: str = CONFIG_FILE
    remote_dir: str = REMOTE_DIR
    state_dir: str = STATE_DIR
    textfile_dir: str = TEXTFILE_DIR
    # The system python runs the script: on the docker runtime nothing else may have installed it.
    apt_packages: tuple[str, ...] = ("python3",)

    @property
    def service(self) -> str:
        return f"{self.unit}.service"

    @property
    def metrics_file(self) -> str:
        return f"{self.textfile_dir}/{METRICS_FILE}"

    @property
    def script(self) -> str:
        return f"{self.remote_dir}/{SCRIPT_NAME}"

    @property
    def script_source(self) -> str:
        return str(SCRIPT_SOURCE)

    @property
    def restart_bound(self) -> int:
        """Seconds from an engine's hang to its restart, at most."""
        return watchdog_restart_bound(self.interval, self.timeout, self.misses)

    @property
    def command_line(self) -> str:
        """ExecStart=: the system python (stdlib only, no venv to break), the config given by path."""
        return quoting.systemd_exec(["/usr/bin/python3", self.script, "--config", self.config_file])

    @property
    def state_directory(self) -> str:
        return quoting.systemd_value(STATE_DIRECTORY)

    @property
    def read_write_paths(self) -> str:
        """The textfile directory; `-`: a missing one (no exporter yet) must not stop the probes."""
        return "-" + quoting.systemd_path(self.textfile_dir)

    @property
    def description(self) -> str:
        units = ", ".join(i.unit for i in self.instances)
        return quoting.systemd_value(quoting.comment_text(f"vLLM engine watchdog ({units})"))

    def config(self) -> dict[str, Any]:
        """What the script reads: every value it needs, none it has to derive."""
        return {
            "version": CONFIG_VERSION,
            "key_header_file": self.key_header_file,
            "state_dir": self.state_dir,
            "metrics_file": self.metrics_file,
            "instances": [i.to_config() for i in self.instances],
        }

    def config_json(self) -> str:
        return json.dumps(self.config(), indent=2, sort_keys=True) + "\n"

    def summary(self) -> str:
        units = ", ".join(i.unit for i in self.instances)
        return (f"watchdog {units}: one-token completion every {self.interval} s (deadline {self.timeout} s); "
                f"restart after {self.misses} misses in a row, within {self.restart_bound} s of a hang")

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "interval": self.interval,
            "timeout": self.timeout,
            "misses": self.misses,
            "restart_bound": self.restart_bound,
            "key_header_file": self.key_header_file,
            "config_file": self.config_file,
            "script": self.script,
            "state_dir": self.state_dir,
            "metrics_file": self.metrics_file,
            "instances": [asdict(i) for i in self.instances],
        }


def build_watchdog_plan(settings: Settings, instances: tuple[ServicePlan, ...],
                        key_header_file: str | None) -> WatchdogPlan | None:
    """The watchdog of a host's instances, or None when it is off.

    `key_header_file` is the 0600 root file holding `Authorization: Bearer <key>` when the instances
    require a key; the script reads it itself, so the key is in no argv, config or log.
    """
    if not settings.vllm_watchdog or not instances:
        return None
    interval, timeout, misses = (settings.vllm_watchdog_interval, settings.vllm_watchdog_timeout,
                                 settings.vllm_watchdog_misses)
    watched = tuple(
        WatchedInstance(
            unit=i.unit,
            served_name=i.served_name,
            completion_url=f"{i.probe_url}/v1/completions",
            health_url=f"{i.probe_url}/health",
            timeout=timeout,
            health_timeout=min(HEALTH_TIMEOUT, timeout),
            misses=misses,
            interval=interval,
            restart_timeout=i.stop_timeout + i.start_timeout,
            container=i.unit if i.runtime == "docker" else None,
        )
        for i in instances
    )
    return WatchdogPlan(instances=watched, interval=interval, timeout=timeout, misses=misses,
                        key_header_file=key_header_file)
