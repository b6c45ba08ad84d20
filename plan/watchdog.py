"""The watchdog plan: a probe per instance that restarts an engine which stops producing tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plan.service import ServicePlan
from plan.settings import Settings


@dataclass(frozen=True)
class WatchdogPlan:
    """What the host's watchdog probes and when it restarts."""

    interval: int

    def summary(self) -> str:
        return f"watchdog every {self.interval} s"

    def to_dict(self) -> dict[str, Any]:
        return {"interval": self.interval}


def build_watchdog_plan(settings: Settings, instances: tuple[ServicePlan, ...],
                        key_header_file: str | None) -> WatchdogPlan | None:
    """The watchdog of a host's instances, or None when it is off."""
    return None
