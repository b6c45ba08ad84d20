"""The conda runtime: Miniconda, its channels and pip index, and the vLLM environment, as pure decisions.

What seed 001 does by hand (download Miniconda, `conda config --add channels` the mirror, create
an environment with Python 3.12, `pip config set global.index-url`, `pip install vllm modelscope`)
done unattended and verified: the installer is checked against a pinned SHA-256 before it runs,
and every step is decided from the host's state so that a second run changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from facts.parsers import normalize_dist
from plan.packages import PREREQUISITES, missing_packages
from plan.quoting import config_word, sh, sh_join

HUB_PACKAGE = "modelscope"


@dataclass(frozen=True)
class CondaPlan:
    """Where conda and the environment live, what their config files hold, and which steps must run."""

    prefix: str
    env: str
    python: str
    installer_url: str
    installer_sha256: str
    condarc: str
    pip_conf: str | None
    install_miniconda: bool = False
    write_condarc: bool = False
    pip_conf_action: Literal["write", "remove"] | None = None
    create_env: bool = False
    recreate_env: bool = False
    pip_install: tuple[str, ...] = ()
    pip_remove: tuple[str, ...] = ()
    # apt packages the installer's download needs, missing on the host (only when Miniconda is installed).
    prerequisites: tuple[str, ...] = ()

    @property
    def condarc_path(self) -> str:
        return condarc_path(self.prefix)

    @property
    def pip_conf_path(self) -> str:
        return pip_conf_path(self.env)

    @property
    def changes(self) -> bool:
        return bool(self.install_miniconda or self.write_condarc or self.pip_conf_action or self.create_env
                    or self.recreate_env or self.pip_install or self.pip_remove)


def condarc_path(prefix: str) -> str:
    """conda reads $CONDA_ROOT/.condarc for every user, the service account included."""
    return f"{prefix}/.condarc"


def pip_conf_path(env: str) -> str:
    """pip's site configuration file: sys.prefix/pip.conf of the environment."""
    return f"{env}/pip.conf"


_YAML_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@+~=-]*(?<!:)\Z")


def _yaml_scalar(value: str) -> str:
    """A YAML string: bare when plain (names, URLs: what conda itself writes), else JSON-quoted."""
    return value if _YAML_PLAIN.match(value) else json.dumps(value)


def render_condarc(channels: Iterable[str] | None, default_channels: Iterable[str] | None) -> str:
    """.condarc as `conda config --add channels` leaves it (highest priority first), plus default_channels.

    A channel that is not a plain YAML word is written as a JSON string (which YAML reads as
    the same string), so `#`, `: ` or a line break in it cannot add keys or items.
    """
    lines = ["# Written by vllm-deploy from the mirror preset."]
    if channels:
        lines.append("channels:")
        lines += [f"  - {_yaml_scalar(channel)}" for channel in channels]
    if default_channels:
        lines.append("default_channels:")
        lines += [f"  - {_yaml_scalar(channel)}" for channel in default_channels]
    return "\n".join(lines) + "\n"


def render_pip_conf(index_url: str | None) -> str | None:
    """What `pip config set global.index-url URL` writes; None leaves pip's own default.

    pip.conf is an ini file without quoting: the URL must be one word on its one line.
    """
    if not index_url:
        return None
    return f"[global]\nindex-url = {config_word(index_url, 'pip_index_url')}\n"


_REQ_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([^\s,;]+))?")


def satisfied(requirement: str, installed: Mapping[str, str]) -> bool:
    """'name==version' needs that version; any other requirement needs the distribution to be present."""
    match = _REQ_RE.match(requirement.strip())
    if not match:
        return False
    version = installed.get(normalize_dist(match.group(1)))
    if version is None:
        return False
    exact = match.group(2) if "==" in requirement and not re.search(r"[<>!~,]", requirement) else None
    return exact is None or version == exact


def plan_conda(settings: Any, install: Any, state: Any, files: Mapping[str, str | None],
               packages: Mapping[str, Any] | None = None) -> CondaPlan:
    """Decide the conda steps from the settings, the install plan (packages) and the host's state.

    `packages` is dpkg's view of the download tools (none known installed when not given).
    """
    prefix, env = settings.conda_prefix, settings.conda_env_prefix
    base = (settings.conda_installer_url or "").rstrip("/")
    plan = CondaPlan(
        prefix=prefix,
        env=env,
        python=settings.conda_python,
        installer_url=f"{base}/{settings.conda_installer}",
        installer_sha256=settings.conda_installer_sha256,
        condarc=render_condarc(settings.conda_channels, settings.conda_default_channels),
        pip_conf=render_pip_conf(settings.pip_index_url),
    )
    has_conda = getattr(state, "conda_version", None) is not None
    python_minor = getattr(state, "python_minor", None)
    installed: Mapping[str, str] = getattr(state, "packages", None) or {}
    create = python_minor is None
    recreate = python_minor is not None and python_minor != plan.python
    wanted = list(dict.fromkeys([install.package, HUB_PACKAGE, *install.extra_packages]))
    if create or recreate:
        pip_install = tuple(wanted)
        installed = {}
    else:
        pip_install = tuple(req for req in wanted if not satisfied(req, installed))
    remove = tuple(name for name in install.remove_packages if pip_install or satisfied(name, installed))
    pip_action: Literal["write", "remove"] | None = None
    current_pip_conf = files.get(plan.pip_conf_path)
    if plan.pip_conf is not None and (create or recreate or current_pip_conf != plan.pip_conf):
        pip_action = "write"
    elif plan.pip_conf is None and current_pip_conf is not None and not (create or recreate):
        pip_action = "remove"
    return CondaPlan(
        **{**plan.__dict__,
           "install_miniconda": not has_conda,
           "write_condarc": not has_conda or files.get(plan.condarc_path) != plan.condarc,
           "pip_conf_action": pip_action,
           "create_env": create,
           "recreate_env": recreate,
           "pip_install": pip_install,
           "pip_remove": remove,
           "prerequisites": missing_packages(packages or {}, PREREQUISITES) if not has_conda else ()},
    )


def installer_command(plan: CondaPlan) -> str:
    """Download the installer, refuse it unless its SHA-256 is the pinned one, run it unattended.

    `-b` is batch mode (no licence prompt, no shell changes), `-p` the fixed prefix; the download
    lives in a temporary directory that is removed whatever happens.
    """
    name = plan.installer_url.rsplit("/", 1)[-1]
    path = f'"$d"/{sh(name)}'  # the temporary directory expands, the installer's name stays literal
    refused = f"{name}: SHA-256 differs from conda_installer_sha256 {plan.installer_sha256}; not installing"
    return (
        "set -eu; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; "
        f"curl -fsSL --retry 3 -o {path} {sh(plan.installer_url)}; "
        f"printf '%s  %s\\n' {sh(plan.installer_sha256)} {path} | sha256sum -c --quiet - || "
        f"{{ echo {sh(refused)} >&2; exit 1; }}; "
        f"bash {path} -b -p {sh(plan.prefix)}"
    )


def create_env_command(plan: CondaPlan) -> str:
    """A fresh environment with the pinned Python and pip, from the .condarc channels."""
    remove = f"rm -rf {sh(plan.env)} && " if plan.recreate_env else ""
    return (f"{remove}{sh(plan.prefix + '/bin/conda')} create -y -q -p {sh(plan.env)} "
            f"{sh('python=' + plan.python)} pip")


def pip_command(plan: CondaPlan, extra_args: str) -> str:
    """`pip install` into the environment (index from pip.conf, or the wheelhouse / preset arguments)."""
    args = f" {extra_args}" if extra_args else ""
    return (f"{sh(plan.env + '/bin/python')} -m pip install --disable-pip-version-check{args} "
            + sh_join(plan.pip_install))


def pip_remove_command(plan: CondaPlan) -> str:
    """`pip uninstall` of the packages that break this build, each name quoted for the root shell."""
    return f"{sh(plan.env + '/bin/python')} -m pip uninstall -y {sh_join(plan.pip_remove)}"
