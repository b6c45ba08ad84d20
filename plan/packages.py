"""apt packages as dpkg shows them: what a runtime install still needs, as pure decisions.

Shared by the runtimes that download over HTTPS before their own packages exist (the docker
engine's apt keys, the conda installer), so neither runtime's module imports the other's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# What a download with curl over HTTPS needs on a bare host.
PREREQUISITES = ("ca-certificates", "curl")


def installed(packages: Mapping[str, Any], name: str) -> bool:
    """Whether dpkg (the DebPackageVersions fact) shows `name` as installed."""
    package = packages.get(name)
    return bool(package is not None and getattr(package, "installed", False))


def missing_packages(packages: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `names` that dpkg (the DebPackageVersions fact) does not show as installed."""
    return tuple(name for name in names if not installed(packages, name))
