"""The host's apt sources pointed at the preset's mirror, keeping what the user had: pure decisions.

The mirror goes into a file of our own (MANAGED_FILE, deb822); the distribution's own source files
are moved, never deleted, into BACKUP_DIR (GNU mv --backup=numbered keeps any earlier backup), so
apt does not fetch every index twice and the user's files can be restored. A preset without an apt
mirror ("upstream", or "host") removes our file and moves the originals back. Each decision reads
the files as they are, so a second run with the same preset changes nothing.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plan.quoting import config_word

MANAGED_FILE = "/etc/apt/sources.list.d/vllm-deploy-mirror.sources"
BACKUP_DIR = "/etc/apt/vllm-deploy-backup"
# The distribution's own source files: one-line sources.list (Ubuntu 22.04, Debian 12) and the
# deb822 file of newer releases and cloud images (Ubuntu 24.04's ubuntu.sources).
ORIGINALS = {
    "ubuntu": ("/etc/apt/sources.list", "/etc/apt/sources.list.d/ubuntu.sources"),
    "debian": ("/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"),
}
_KEYRINGS = {
    "ubuntu": "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
    "debian": "/usr/share/keyrings/debian-archive-keyring.gpg",
}


class AptMirrorError(ValueError):
    """The mirror cannot be applied to this host (unknown distribution or release)."""


@dataclass(frozen=True)
class AptMirrorPlan:
    """What to change in /etc/apt: write our sources file, move originals aside or back, remove ours."""

    content: str | None = None
    move_aside: tuple[str, ...] = ()
    restore: tuple[str, ...] = ()
    remove_managed: bool = False

    @property
    def changes(self) -> bool:
        return bool(self.content is not None or self.move_aside or self.restore or self.remove_managed)


def backup_path(path: str) -> str:
    return f"{BACKUP_DIR}/{posixpath.basename(path)}"


def distribution(os_release: Any) -> tuple[str, str]:
    """(ubuntu|debian, codename) from the os-release fact, or AptMirrorError naming what is missing."""
    os_id = getattr(os_release, "id", None)
    codename = getattr(os_release, "codename", None)
    if os_id not in ORIGINALS:
        raise AptMirrorError(f"the host runs {os_id or 'an unknown system'}; apt mirrors cover Ubuntu and "
                             "Debian (set apt_mirror = 'host' to keep the host's sources)")
    if not codename or not re.fullmatch(r"[a-z]+", codename):
        raise AptMirrorError(f"/etc/os-release names no release codename ({codename!r}); cannot write sources")
    return os_id, codename


def watched_paths(os_id: str) -> tuple[str, ...]:
    """Every file the decision reads: the originals, their backups and our own file."""
    originals = ORIGINALS.get(os_id, ())
    return (*originals, *(backup_path(p) for p in originals), MANAGED_FILE)


def every_watched_path() -> tuple[str, ...]:
    """watched_paths of every distribution: what to ask a host whose os-release is not known yet."""
    return tuple(dict.fromkeys(path for os_id in ORIGINALS for path in watched_paths(os_id)))


def render_sources(os_id: str, codename: str, mirror: str) -> str:
    """deb822 sources of the release, updates and security suites from the mirror.

    deb822 has no quoting: the mirror must be one word, or it would add URIs or fields.
    """
    base = config_word(mirror, "apt_mirror").rstrip("/")
    keyring = _KEYRINGS[os_id]
    head = "# Written by vllm-deploy (mirror_preset); the host's own sources are in " + BACKUP_DIR + "/.\n"
    if os_id == "ubuntu":
        return head + (
            "Types: deb\n"
            f"URIs: {base}/ubuntu/\n"
            f"Suites: {codename} {codename}-updates {codename}-backports {codename}-security\n"
            "Components: main restricted universe multiverse\n"
            f"Signed-By: {keyring}\n"
        )
    components = "main contrib non-free non-free-firmware"
    return head + (
        "Types: deb\n"
        f"URIs: {base}/debian/\n"
        f"Suites: {codename} {codename}-updates\n"
        f"Components: {components}\n"
        f"Signed-By: {keyring}\n"
        "\n"
        "Types: deb\n"
        f"URIs: {base}/debian-security/\n"
        f"Suites: {codename}-security\n"
        f"Components: {components}\n"
        f"Signed-By: {keyring}\n"
    )


def is_active(content: str | None) -> bool:
    """Whether apt reads any source from this file (comment-only files, like 24.04's sources.list, do not)."""
    if not content:
        return False
    lines = [line.strip() for line in content.splitlines() if line.strip() and not line.strip().startswith("#")]
    if any(re.match(r"deb(-src)?\s", line) for line in lines):
        return True
    stanzas = [s for s in re.split(r"\n\s*\n", content) if re.search(r"^\s*Types:", s, re.MULTILINE)]
    return any(not re.search(r"^\s*Enabled:\s*no\s*$", s, re.MULTILINE | re.IGNORECASE) for s in stanzas)


def plan_apt_mirror(mirror: str | None, os_release: Any, files: Mapping[str, str | None]) -> AptMirrorPlan:
    """Decide the changes from the mirror setting and the current files (path -> content, None = absent)."""
    if mirror is None:
        if files.get(MANAGED_FILE) is None:
            return AptMirrorPlan()
        os_id = getattr(os_release, "id", None)
        restore = tuple(p for p in ORIGINALS.get(os_id, ())
                        if files.get(p) is None and files.get(backup_path(p)) is not None)
        return AptMirrorPlan(restore=restore, remove_managed=True)
    os_id, codename = distribution(os_release)
    desired = render_sources(os_id, codename, mirror)
    move = tuple(p for p in ORIGINALS[os_id] if is_active(files.get(p)))
    return AptMirrorPlan(content=desired if files.get(MANAGED_FILE) != desired else None, move_aside=move)


def move_commands(plan: AptMirrorPlan) -> list[str]:
    """Shell commands for the moves; the sources file itself is uploaded by the task."""
    commands = []
    for path in plan.move_aside:
        commands.append(f"install -d -m 0755 {BACKUP_DIR} && mv --backup=numbered {shlex.quote(path)} "
                        f"{shlex.quote(backup_path(path))}")
    for path in plan.restore:
        commands.append(f"mv -n {shlex.quote(backup_path(path))} {shlex.quote(path)}")
    if plan.remove_managed:
        commands.append(f"rm -f {MANAGED_FILE}")
    return commands
