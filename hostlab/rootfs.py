"""The Debian 12 root filesystem every test host boots from.

debootstrap takes about 90 s, so the cleaned tree is packed once per machine into a tar.zst
whose name carries a hash of the recipe (a changed recipe means a new file, never a stale
image) and re-extracted in a second or two per test session.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "VLLM_DEPLOY_HOSTLAB_CACHE"
DEFAULT_CACHE = Path("/var/cache/vllm-deploy-hostlab")
SUITE = "bookworm"
PACKAGES = (
    "openssh-server",
    "python3",
    "sudo",
    "curl",
    "ca-certificates",
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "libpam-systemd",
    "procps",
    "gnupg",
    "iputils-ping",
)
# Bump when the cleaning steps below change: it is part of the cache file name.
CLEAN_VERSION = 2
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
APT_SOURCES_LIST = Path("/etc/apt/sources.list")


class RootfsError(RuntimeError):
    """The root filesystem cannot be built or found; the message says what to fix."""


@dataclass(frozen=True)
class AptSource:
    """One `deb` entry of the controller's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def cache_dir() -> Path:
    """Where the packed root filesystem lives; `VLLM_DEPLOY_HOSTLAB_CACHE` overrides the default."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def recipe() -> dict[str, object]:
    """Everything that decides the image's content; its hash names the cache file."""
    return {"suite": SUITE, "variant": "minbase", "packages": sorted(PACKAGES), "clean": CLEAN_VERSION}


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def tarball_path(base: Path | None = None) -> Path:
    return (base or cache_dir()) / f"rootfs-{SUITE}-{recipe_hash()}.tar.zst"


def parse_apt_sources(sources_dir: Path = APT_SOURCES_DIR, sources_list: Path = APT_SOURCES_LIST) -> list[AptSource]:
    """Read `deb` entries from one-line `.list` files and deb822 `.sources` files, as apt does."""
    found: list[AptSource] = []
    files = [sources_list] if sources_list.is_file() else []
    if sources_dir.is_dir():
        files += sorted(p for p in sources_dir.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            found += _parse_deb822(text)
        else:
            found += _parse_one_line(text)
    return found


def _parse_one_line(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options such as [signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            out.append(AptSource(words[0], (words[1],), tuple(words[2:])))
    return out


def _parse_deb822(text: str) -> list[AptSource]:
    out: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            suites, components = fields.get("suites", "").split(), fields.get("components", "").split()
            out.append(AptSource(uri, tuple(suites), tuple(components)))
    return out


def find_mirror(suite: str = SUITE, sources: list[AptSource] | None = None) -> str:
    """The Debian mirror this machine's apt already uses for `suite` (never a built-in address)."""
    for src in sources if sources is not None else parse_apt_sources():
        if suite in src.suites and "main" in src.components:
            return src.uri
    raise RootfsError(
        f"no apt source for suite {suite!r} with component 'main' in {APT_SOURCES_DIR} or {APT_SOURCES_LIST}; "
        f"add the Debian archive this machine uses, or set {CACHE_ENV} to a cache holding {tarball_path().name}"
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builders across processes: two test sessions must not debootstrap at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean(root: Path) -> None:
    """Make the tree a blank, small image: no identity, no package caches, no stale host keys' owner."""
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()
    for pattern_dir, keep in (("var/lib/apt/lists", {"partial", "lock"}), ("var/cache/apt", {"archives"})):
        d = root / pattern_dir
        for entry in d.iterdir() if d.is_dir() else ():
            if entry.name in keep:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for log in (root / "var/log").rglob("*"):
        if log.is_file():
            log.write_bytes(b"")
    # The guest's hostname comes from each host's own /etc/hostname.
    (root / "etc/hostname").write_text("localhost\n")


def build(dest: Path | None = None, mirror: str | None = None, log: Path | None = None) -> Path:
    """debootstrap, clean and pack the image; returns the tar.zst path. Needs root and network to the mirror."""
    dest = dest or tarball_path()
    mirror = mirror or find_mirror()
    work = dest.parent / f".build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = log or dest.parent / "build.log"
    try:
        cmd = [
            "debootstrap",
            "--variant=minbase",
            "--components=main",
            "--include=" + ",".join(PACKAGES),
            SUITE,
            str(work / "root"),
            mirror,
        ]
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RootfsError(f"debootstrap failed (exit {proc.returncode}); full log in {log}:\n{tail}")
        _clean(work / "root")
        tmp = dest.with_name(dest.name + ".part")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "--acls", "-I", "zstd -T0 -6", "-C", str(work / "root"),
             "-cf", str(tmp), "."],
            check=True,
        )
        tmp.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def ensure_tarball(base: Path | None = None) -> tuple[Path, float]:
    """The cached image, built if missing. Returns (path, seconds spent building; 0 when cached)."""
    path = tarball_path(base)
    if path.is_file():
        return path, 0.0
    with _locked(path.parent / "rootfs.lock"):
        if path.is_file():  # another session built it while we waited
            return path, 0.0
        start = time.monotonic()
        build(path)
        for old in path.parent.glob(f"rootfs-{SUITE}-*.tar.zst"):
            if old != path:  # an image from an older recipe is never used again
                old.unlink(missing_ok=True)
        return path, time.monotonic() - start


def extract(tarball: Path, dest: Path) -> None:
    """Unpack the image into `dest`, the shared read-only lower layer of every host's overlay."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-I", "zstd -T0", "-C", str(dest),
         "-xpf", str(tarball)],
        check=True,
    )
