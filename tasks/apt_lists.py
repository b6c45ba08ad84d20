"""apt's package lists: refreshed once per host and run, not once per stage that installs packages.

pyinfra reads the facts an operation depends on when the deploy file calls it, before anything runs, so
every `apt.packages(update=True, cache_time=...)` of a run sees the lists as they were before the run: on a
fresh host each stage that installs packages (the runtime's, the hub CLI's, nginx, the exporters) ran its own
`apt-get update`, tens of seconds each behind a slow mirror. `update_once()` gives the first of them on a host
the refresh (skipped, as before, when the lists are younger than a day) and the later ones none.

An operation that adds a repository (the NVIDIA, Docker and Grafana ones) keeps its own `update=True`, since
lists read before the repository existed know nothing of it, and calls `refreshed()` after it, as does the
mirror preset's refresh.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host

CACHE_SECONDS = 24 * 3600
# Hosts whose lists an earlier operation of this run refreshes (or finds fresh).
_REFRESHED: set[str] = set()


def update_once() -> dict[str, Any]:
    """`apt.packages` keyword arguments: a refresh for the first package operation of the host in this run."""
    if host.name in _REFRESHED:
        return {"update": False}
    _REFRESHED.add(host.name)
    return {"update": True, "cache_time": CACHE_SECONDS}


def refreshed() -> None:
    """An operation just added refreshes this host's lists: the later package operations need none."""
    _REFRESHED.add(host.name)
