"""Throwaway Debian 12 servers for end-to-end tests: systemd as PID 1, real SSH, one private subnet.

Each host is a systemd-nspawn container booted on a copy-on-write overlay of the cached root
filesystem, in its own network namespace wired to one bridge on the controller, its own cgroup
directories (nspawn with --keep-unit otherwise collides in the shared root cgroup) and its own
time namespace (so /proc/uptime restarts on a guest reboot, which pyinfra's reboot detection needs).

Everything a lab creates carries its id (`vdh` + 3 characters): interfaces, network namespaces,
machine names, cgroup directories, work and state directories. A lab whose owner process died
(SIGKILL, a crashed run) is cleaned by the next lab that starts, by that id.
"""

from __future__ import annotations

import atexit
import configparser
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rootfs
from .proxy import ForwardingProxy

ID_PREFIX = "vdh"
STATE_ROOT = Path("/run/vllm-deploy-hostlab")
WORK_ROOT = Path("/var/tmp/vllm-deploy-hostlab")
NETNS_DIR = Path("/run/netns")
NSPAWN_RUN_DIR = Path("/run/systemd/nspawn")
PROPAGATE_DIR = NSPAWN_RUN_DIR / "propagate"
UNIX_EXPORT_DIR = NSPAWN_RUN_DIR / "unix-export"
SUBNET_BASE = "10.213.0.0/16"  # rarely used; every candidate /24 is still checked against the controller
NSPAWN_REBOOT_EXIT = 133
PIP_PATH_KEYS = ("find-links", "extra-index-url", "index-url", "constraint", "requirement")
HOST_INDEX_OFFSET = 10  # host n gets .10+n; .1 is the bridge
# A non-root login with passwordless sudo, as providers hand out: deploys through it take pyinfra's
# `_sudo` paths (uploads staged as that user, commands wrapped in sudo), which root logins never do.
SUDO_USER = "deployer"
SUDO_UID = 1500


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message names the cause and the fix."""


def _run(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        raise LabError(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}): {detail}")
    return proc


# --------------------------------------------------------------------------- controller facts


def cgroup_hierarchies() -> list[Path]:
    """The hierarchies systemd-nspawn places itself in: v1 `name=systemd` and/or the v2 (unified) mount."""
    found: list[Path] = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fstype, opts, *_ = line.split()
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
            found.append(Path(mnt))
    return found


def _cgroup2(hierarchies: list[Path]) -> Path | None:
    mounts = {Path(m.split()[1]): m.split()[2] for m in Path("/proc/mounts").read_text().splitlines()}
    return next((h for h in hierarchies if mounts.get(h) == "cgroup2"), None)


def is_mountpoint(path: Path) -> bool:
    """True when something is mounted on `path` (os.path.ismount misses same-filesystem bind mounts)."""
    target = os.path.realpath(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].encode().decode("unicode_escape") == target:
            return True
    return False


def _proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(owner_file: Path) -> bool:
    try:
        pid_s, start = owner_file.read_text().split()
    except (OSError, ValueError):
        return False
    return _proc_start_time(int(pid_s)) == start


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets: list[ipaddress.IPv4Network] = []
    for line in _run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        words = line.split()
        if "inet" in words:
            nets.append(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit", "multicast"):
            dest = line.split()[1] if dest != "default" else ""
        with contextlib.suppress(ValueError):
            if dest:
                nets.append(ipaddress.ip_network(dest, strict=False))
    return nets


def pick_subnet(seed: str) -> ipaddress.IPv4Network:
    """A /24 under SUBNET_BASE that overlaps nothing on the controller (addresses and routes)."""
    used = _used_networks()
    base = ipaddress.ip_network(SUBNET_BASE)
    candidates = list(base.subnets(new_prefix=24))
    start = int.from_bytes(seed.encode(), "big") % len(candidates)
    for net in candidates[start:] + candidates[:start]:
        if not any(net.overlaps(u) for u in used):
            return net
    raise LabError(f"every /24 in {SUBNET_BASE} overlaps an address or route on this machine; free one")


def pip_settings() -> tuple[list[Path], dict[str, str], list[Path]]:
    """The controller's pip configuration: (config files, PIP_* variables, local dirs/files it points at).

    Guests get the same files, variables and (read-only) directories so pip inside a guest sees
    the same local wheels and indexes as on the controller, without network.
    """
    home = Path.home()
    files = [Path("/etc/pip.conf")]
    files += [Path(d) / "pip/pip.conf" for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d]
    files += [home / ".config/pip/pip.conf", home / ".pip/pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    files = [f for f in files if f.is_file()]
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    values: list[str] = []
    for f in files:
        cp = configparser.RawConfigParser()
        with contextlib.suppress(configparser.Error):
            cp.read(f)
        for section in cp.sections():
            values += [cp.get(section, k) for k in PIP_PATH_KEYS if cp.has_option(section, k)]
    values += [v for k, v in env.items() if k.removeprefix("PIP_").lower().replace("_", "-") in PIP_PATH_KEYS]
    paths: list[Path] = []
    for value in values:
        for item in value.split():
            p = Path(item.removeprefix("file://")) if item.startswith(("file://", "/")) else None
            if p is None or not p.exists():
                continue
            if p.is_dir() and p.name == "simple":  # an index's pages link to ../../files: share the whole tree
                p = p.parent
            if p not in paths:
                paths.append(p)
    return files, env, paths


# --------------------------------------------------------------------------- hosts


@dataclass
class TestHost:
    """One running guest. Drive it over SSH; `stop()`/`kill()` remove it and everything it used."""

    __test__ = False  # not a pytest test class

    name: str
    ip: str
    ssh_key: Path
    lab: Lab = field(repr=False)
    machine: str = field(repr=False)
    netns: str = field(repr=False)
    veth: str = field(repr=False)
    root: Path = field(repr=False)
    log: Path = field(repr=False)
    pidfile: Path = field(repr=False)
    cgroups: list[Path] = field(repr=False, default_factory=list)
    docker: bool = False
    binds_ro: tuple[Path, ...] = ()
    boots: int = 0
    exit_code: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _supervisor: threading.Thread | None = field(default=None, repr=False)
    _stopping: bool = field(default=False, repr=False)
    _removed: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- access
    def ssh_argv(self, cmd: str, timeout: int = 10) -> list[str]:
        return [
            "ssh", "-i", str(self.ssh_key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
            f"root@{self.ip}", cmd,
        ]

    def run(self, cmd: str, check: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root in the guest (a login-less SSH session, /etc/environment applies)."""
        proc = subprocess.run(self.ssh_argv(cmd), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise LabError(f"{self.name}: `{cmd}` exited {proc.returncode}\n"
                           f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
        return proc

    def pyinfra_data(self, sudo_user: bool = False) -> dict[str, Any]:
        """Host data for a pyinfra inventory entry named by `self.ip`: root, or the sudo user with `_sudo`."""
        data: dict[str, Any] = {
            "ssh_user": SUDO_USER if sudo_user else "root",
            "ssh_key": str(self.ssh_key),
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "no",
        }
        if sudo_user:
            data["_sudo"] = True
        return data

    def testinfra(self) -> Any:
        import testinfra

        return testinfra.get_host(
            f"paramiko://root@{self.ip}", ssh_identity_file=str(self.ssh_key), ssh_config=str(self.lab.ssh_config)
        )

    def journal(self, unit: str, lines: int = 50) -> str:
        cmd = f"journalctl --no-pager -o short-monotonic -n {int(lines)} -u {shlex.quote(unit)}"
        return self.run(cmd, check=False).stdout

    def boot_id(self) -> str:
        return self.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()

    def wait_ssh(self, timeout: float = 60, not_boot_id: str | None = None) -> None:
        """Block until SSH answers (and, after a reboot, answers from a new boot)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._supervisor is not None and not self._supervisor.is_alive():
                raise LabError(f"{self.name}: systemd-nspawn exited {self.exit_code} before SSH answered; "
                               f"console log: {self.log}")
            try:
                with socket.create_connection((self.ip, 22), timeout=1):
                    pass
            except OSError as exc:
                last = str(exc)
                time.sleep(0.1)
                continue
            proc = subprocess.run(self.ssh_argv("cat /proc/sys/kernel/random/boot_id", timeout=3),
                                  capture_output=True, text=True)
            if proc.returncode == 0 and proc.stdout.strip() != (not_boot_id or ""):
                return
            last = proc.stderr.strip() or f"same boot id {proc.stdout.strip()}"
            time.sleep(0.2)
        raise LabError(f"{self.name}: no SSH on {self.ip} within {timeout:.0f}s ({last}); console log: {self.log}")

    # -- lifecycle
    def reboot(self, timeout: float = 60) -> None:
        """Reboot from inside the guest and wait for SSH from the new boot (nspawn exits 133; we relaunch)."""
        before = self.boot_id()
        self.run("systemctl reboot", check=False, timeout=15)
        self.wait_ssh(timeout, not_boot_id=before)

    def stop(self, timeout: float = 30) -> None:
        """Clean poweroff (SIGTERM to nspawn), then remove the host's network, cgroups and overlay."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._release()

    def kill(self) -> None:
        """Hard stop: SIGKILL nspawn and every process of the guest, then remove the host's resources."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._release()

    def _release(self) -> None:
        with self._lock:
            if self._removed:
                return
            _kill_cgroups(self.cgroups)
            if self._supervisor is not None and self._supervisor is not threading.current_thread():
                self._supervisor.join(timeout=10)
            _remove_host_resources(self.machine, self.netns, self.veth, self.root.parent, self.cgroups)
            if self.docker:
                _remove_v1_cgroups(docker_cgroup_parent(self.machine))
            self.pidfile.unlink(missing_ok=True)
            self._removed = True
        self.lab._forget(self)

    # -- boot
    def _launch_argv(self) -> list[str]:
        boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
        monotonic = time.clock_gettime(time.CLOCK_MONOTONIC)
        nspawn = [
            "systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", "--console=read-only",
            f"--network-namespace-path={NETNS_DIR / self.netns}", "--resolv-conf=off", "--timezone=off",
            "--link-journal=no", f"--machine={self.machine}", "-D", str(self.root),
        ]
        nspawn += [f"--bind-ro={p}" for p in (*self.lab.pip_binds, *self.binds_ro)]
        if self.docker:
            nspawn += docker_nspawn_options(self.root.parent)
        # Guest clocks start near zero: uptime drops on each relaunch, as after a real reboot.
        timens = ["unshare", "--time", f"--boottime={-int(boottime) + 1}", f"--monotonic={-int(monotonic) + 1}"]
        procs = [str(cg / "cgroup.procs") for cg in self.cgroups]
        # A tiny launcher: join this host's own cgroups, then exec nspawn in a fresh time namespace.
        script = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'
        return ["sh", "-c", script, "hostlab-launch", *procs, "--", *timens, *nspawn]

    def _supervise(self) -> None:
        """Run nspawn; on exit 133 (guest reboot) clear the old cgroup children and boot again."""
        while True:
            with open(self.log, "ab") as log:
                proc = subprocess.Popen(self._launch_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                self._proc = proc
                self.pidfile.write_text(f"{proc.pid} {_proc_start_time(proc.pid)}\n")
                self.boots += 1
                rc = proc.wait()
            if rc == NSPAWN_REBOOT_EXIT and not self._stopping:
                _kill_cgroups(self.cgroups, keep_top=True)
                continue
            self.exit_code = rc
            return


def _kill_cgroups(cgroups: list[Path], keep_top: bool = False) -> None:
    """Kill every process left in these cgroups (a SIGKILLed nspawn leaves its guest running) and
    remove their sub-directories deepest first (and the directories themselves unless keep_top)."""
    for cg in cgroups:
        kill_file = cg / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
    for cg in cgroups:
        if not cg.is_dir():
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = _cgroup_pids(cg)
            if not pids:
                break
            for pid in pids:  # v1-only machines have no cgroup.kill
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for dirpath, dirnames, _ in sorted(os.walk(cg, topdown=False), key=lambda t: -t[0].count("/")):
            del dirnames
            if keep_top and Path(dirpath) == cg:
                continue
            for _ in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def _cgroup_pids(cg: Path) -> list[int]:
    pids: list[int] = []
    for dirpath, _, files in os.walk(cg):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                pids += [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
    return pids


def _nspawn_lock_file(root: Path) -> Path | None:
    """nspawn locks the image directory with /run/systemd/nspawn/locks/inode-DEV:INO and leaves the file."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return NSPAWN_RUN_DIR / "locks" / f"inode-{st.st_dev}:{st.st_ino}"


def _unmount_root(merged: Path) -> None:
    lock = _nspawn_lock_file(merged) if is_mountpoint(merged) else None
    if lock is not None:
        lock.unlink(missing_ok=True)
        if _run("umount", str(merged), check=False).returncode != 0:
            _run("umount", "-l", str(merged), check=False)


def _remove_host_resources(machine: str, netns: str, veth: str, workdir: Path, cgroups: list[Path]) -> None:
    _unmount_root(workdir / "merged")
    for d in (PROPAGATE_DIR / machine, UNIX_EXPORT_DIR / machine):
        shutil.rmtree(d, ignore_errors=True)
    if Path("/sys/class/net", veth).exists():
        _run("ip", "link", "del", veth, check=False)
    if (NETNS_DIR / netns).exists():
        _run("ip", "netns", "del", netns, check=False)
    _kill_cgroups(cgroups)
    shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- docker hosts
# A real docker engine in a guest needs more than the other hosts get (each shown necessary by leaving it out):
DOCKER_NSPAWN_OPTIONS = (
    # Containers' network sandboxes (netns, veth, the NAT chain in the guest's own netns); without it runc fails
    # "failed to create default sandbox: operation not permitted".
    "--capability=CAP_NET_ADMIN",
    # runc gives each container a session keyring; nspawn's seccomp filter refuses keyctl ("unable to join
    # session keyring").
    "--system-call-filter=@keyring",
)
# nspawn mounts the v1 controllers read-only and offers no option to change it ("mkdir /sys/fs/cgroup/cpuset/docker:
# read-only file system"); binding them is refused at boot. A bind remount inside the guest, before docker starts.
CGROUP_RW_UNIT = "hostlab-cgroup-rw.service"
CGROUP_RW_UNIT_TEXT = """[Unit]
Description=hostlab: writable v1 cgroup controllers for docker
DefaultDependencies=no
After=local-fs.target
Before=containerd.service docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in /sys/fs/cgroup/*/; do case $$c in */systemd/|*/unified/) continue;; esac; \
mount -o remount,bind,rw $$c; done'

[Install]
WantedBy=multi-user.target
"""
# dockerd reads the guest's proxy variables (systemd's DefaultEnvironment): a missing image would be looked for on
# Docker Hub through the lab's proxy. Unset for docker and containerd, it finds only what the lab serves.
DOCKER_NO_PROXY_DROPIN = ("[Service]\nUnsetEnvironment=http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY "
                          "NO_PROXY\n")


def docker_nspawn_options(workdir: Path) -> list[str]:
    """nspawn options of a docker host; /var/lib/docker lies on the controller's own file system, where overlay2
    works (it cannot stack on the guest's overlay root: "failed to mount overlay: invalid argument")."""
    return [*DOCKER_NSPAWN_OPTIONS, f"--bind={workdir / 'docker'}:/var/lib/docker"]


def docker_cgroup_parent(machine: str) -> str:
    """The guest's dockerd `cgroup-parent`: the v1 controllers have no cgroup namespace, so its containers' cgroups
    land where nspawn runs on the controller, named after this host (two docker hosts must not share /docker)."""
    return f"{machine}-docker"


def _v1_controller_mounts() -> list[Path]:
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fstype, opts, *_ = line.split()
        if fstype == "cgroup" and "name=systemd" not in opts.split(","):
            found.append(Path(mnt))
    return found


def _remove_v1_cgroups(prefix: str, depth: int = 4) -> None:
    """Remove the v1 controller directories a guest's dockerd made (named `prefix`...), at most `depth` levels down
    (the guest's view of a controller starts at nspawn's own cgroup in it, not always the root)."""
    for mount in _v1_controller_mounts():
        for dirpath, dirnames, _ in os.walk(mount):
            hits = [d for d in dirnames if d.startswith(prefix)]
            _kill_cgroups([Path(dirpath) / d for d in hits])
            level = len(Path(dirpath).relative_to(mount).parts)
            dirnames[:] = [d for d in dirnames if d not in hits] if level < depth else []


# --------------------------------------------------------------------------- the lab


class Lab:
    """A set of test hosts on one private bridge, with one SSH key and one egress proxy.

    Use as a context manager; teardown (also at interpreter exit or SIGTERM) removes every
    process, mount, interface, network namespace and cgroup directory the lab created.
    """

    def __init__(self, tarball: Path | None = None, lower: Path | None = None) -> None:
        self.tarball = tarball
        self.id = ID_PREFIX + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3))
        self.state = STATE_ROOT / self.id
        self.work = WORK_ROOT / self.id
        self.lower = lower or self.work / "lower"
        self._own_lower = lower is None
        self.bridge = f"{self.id}br"
        self.hosts: dict[str, TestHost] = {}
        self.timings: dict[str, float] = {}
        self.hierarchies = cgroup_hierarchies()
        self.proxy: ForwardingProxy | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.pip_files, self.pip_env, self.pip_binds = pip_settings()
        self._next_index = 0
        self._closed = False
        self._shared_before = _shared_dirs_state()
        self._lock = threading.Lock()

    # -- properties
    @property
    def gateway(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    @property
    def proxy_url(self) -> str:
        assert self.proxy is not None
        return f"http://{self.gateway}:{self.proxy.port}"

    @property
    def ssh_key(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        """An ssh_config for the lab's hosts (`ssh -F`, testinfra): root, the lab key, no host-key checks."""
        return self.state / "ssh_config"

    # -- set-up / teardown
    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the test-host lab needs root (network namespaces, overlay mounts, systemd-nspawn)")
        missing = [t for t in ("systemd-nspawn", "unshare", "ip", "ssh", "ssh-keygen", "zstd") if not shutil.which(t)]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)}; run scripts/hostlab-deps.sh as root")
        if not self.hierarchies:
            raise LabError("no cgroup hierarchy for systemd-nspawn (neither cgroup2 nor name=systemd is mounted)")
        atexit.register(self.close)
        self._install_sigterm()
        with _global_lock():
            clean_stale()
            (self.state / "pids").mkdir(parents=True)
            (self.state / "shared-before").write_text(" ".join(sorted(self._shared_before)))
            (self.state / "owner").write_text(f"{os.getpid()} {_proc_start_time(os.getpid())}\n")
            self.subnet = pick_subnet(self.id)
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        self.work.mkdir(parents=True, exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"hostlab-{self.id}", "-f", str(self.ssh_key))
        self.ssh_config.write_text(
            f"Host *\n  User root\n  IdentityFile {self.ssh_key}\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )
        for h in self.hierarchies:
            (h / self.id).mkdir(exist_ok=True)
        self.proxy = ForwardingProxy(self.gateway).start()
        if self._own_lower:
            tarball = self.tarball
            if tarball is None:
                tarball, self.timings["rootfs_build_s"] = rootfs.ensure_tarball()
            t0 = time.monotonic()
            rootfs.extract(tarball, self.lower)
            self.timings["rootfs_extract_s"] = time.monotonic() - t0

    def _install_sigterm(self) -> None:
        """Treat SIGTERM like Ctrl-C so pytest stops, runs fixture finalizers and atexit (a cancelled CI job
        still cleans up); SystemExit would only fail the current test and let the session go on."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            def _interrupt(signum: int, frame: object) -> None:
                raise KeyboardInterrupt(f"signal {signum}")

            signal.signal(signal.SIGTERM, _interrupt)

    def close(self) -> None:
        """Stop every host (clean poweroff, in parallel) and remove everything the lab created."""
        if self._closed:
            return
        self._closed = True
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut teardown short
        try:
            threads = [threading.Thread(target=h.stop, kwargs={"timeout": 15}) for h in list(self.hosts.values())]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self.proxy is not None:
                self.proxy.stop()
            with _global_lock():
                _clean_lab(self.id, self.hierarchies)
                self._release_shared_dirs()
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _release_shared_dirs(self) -> None:
        _release_shared_dirs(self._shared_before, self.id)

    def _forget(self, host: TestHost) -> None:
        with self._lock:
            if self.hosts.get(host.name) is host:
                del self.hosts[host.name]

    # -- hosts
    def add_host(self, name: str, timeout: float = 60, docker: bool = False,
                 binds_ro: tuple[Path, ...] = ()) -> TestHost:
        """Boot a fresh server named `name` and return once SSH answers.

        `docker`: a host that can run a real docker engine (more capabilities, syscalls and writable cgroup
        controllers than the others get; see DOCKER_NSPAWN_OPTIONS); the engine itself is the test's to install.
        `binds_ro`: controller paths the guest sees read-only at the same place (a wheelhouse, a cache).
        """
        if self._closed or self.subnet is None:
            raise LabError("the lab is not running; use it inside `with Lab() as lab:`")
        if not name.replace("-", "").isalnum() or len(name) > 40:
            raise LabError(f"host name {name!r}: use letters, digits and '-' (at most 40 characters)")
        with self._lock:
            if name in self.hosts:
                raise LabError(f"host name {name!r} is already used in this lab; pick another")
            self._next_index += 1
            index = self._next_index
        if index + HOST_INDEX_OFFSET >= self.subnet.num_addresses - 1:
            raise LabError(f"this lab's /24 has no address left for host {name!r}")
        t0 = time.monotonic()
        workdir = self.work / "hosts" / name
        host = TestHost(
            name=name,
            ip=str(self.subnet.network_address + HOST_INDEX_OFFSET + index),
            ssh_key=self.ssh_key,
            lab=self,
            machine=f"{self.id}-{name}",
            netns=f"{self.id}-{name}",
            veth=f"{self.id}{index}h",
            root=workdir / "merged",
            log=workdir / "console.log",
            pidfile=self.state / "pids" / name,
            cgroups=[h / self.id / name for h in self.hierarchies],
            docker=docker,
            binds_ro=tuple(binds_ro),
        )
        with self._lock:
            self.hosts[name] = host
        try:
            self._wire(host, index)
            self._mount(host, workdir)
            self._configure(host)
            for cg in host.cgroups:
                cg.mkdir(parents=True, exist_ok=True)
            host._supervisor = threading.Thread(target=host._supervise, name=f"hostlab-{name}", daemon=True)
            host._supervisor.start()
            host.wait_ssh(timeout)
        except BaseException:
            host.kill()
            raise
        self.timings[f"boot_to_ssh_s[{name}]"] = time.monotonic() - t0
        return host

    def _wire(self, host: TestHost, index: int) -> None:
        assert self.subnet is not None
        peer = f"{self.id}{index}g"
        with _global_lock():
            _run("ip", "netns", "add", host.netns)
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", host.veth, "master", self.bridge, "up")
        _run("ip", "link", "set", peer, "netns", host.netns)
        ns = ("ip", "-n", host.netns)
        _run(*ns, "link", "set", peer, "name", "eth0")
        _run(*ns, "addr", "add", f"{host.ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _run(*ns, "link", "set", "lo", "up")
        _run(*ns, "link", "set", "eth0", "up")
        _run(*ns, "route", "add", "default", "via", self.gateway)
        if host.docker:
            # Published ports reach containers through DNAT and the guest's docker0: forwarding in its own netns
            # (the guest's /proc/sys is read-only). Nothing leaves the lab: the controller does not forward.
            _run("ip", "netns", "exec", host.netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")

    def _mount(self, host: TestHost, workdir: Path) -> None:
        for d in ("upper", "work", "merged", *(("docker",) if host.docker else ())):
            (workdir / d).mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.lower},upperdir={workdir / 'upper'},workdir={workdir / 'work'}", str(host.root))

    def _configure(self, host: TestHost) -> None:
        """Identity, access and egress: what a provider's fresh server would have, plus our proxy."""
        root = host.root
        proxy = self.proxy_url
        no_proxy = f"localhost,127.0.0.1,::1,{self.subnet}"

        def write(rel: str, text: str, mode: int = 0o644) -> None:
            p = root / rel.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink():
                p.unlink()
            p.write_text(text)
            p.chmod(mode)

        write("etc/hostname", f"{host.name}\n")
        hosts = root / "etc/hosts"
        base = hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n"
        write("etc/hosts", base + f"127.0.1.1\t{host.name}\n")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write("root/.ssh/authorized_keys", Path(f"{self.ssh_key}.pub").read_text(), 0o600)
        self._add_sudo_user(root)
        if host.docker:
            write(f"etc/systemd/system/{CGROUP_RW_UNIT}", CGROUP_RW_UNIT_TEXT)
            wants = root / "etc/systemd/system/multi-user.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            (wants / CGROUP_RW_UNIT).symlink_to(f"/etc/systemd/system/{CGROUP_RW_UNIT}")
            write("etc/docker/daemon.json", json.dumps({"cgroup-parent": "/" + docker_cgroup_parent(host.machine)},
                                                       indent=4) + "\n")
            for unit in ("docker", "containerd"):
                write(f"etc/systemd/system/{unit}.service.d/50-hostlab-no-proxy.conf", DOCKER_NO_PROXY_DROPIN)

        # apt: the controller's sources (and their keyrings) and options, through the proxy.
        own_sources = rootfs.APT_SOURCES_DIR
        controller_sources = [p for p in own_sources.glob("*") if p.suffix in (".list", ".sources")]
        if rootfs.APT_SOURCES_LIST.is_file():
            controller_sources.append(rootfs.APT_SOURCES_LIST)
        if controller_sources:
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            for src in controller_sources:
                _copy_in(src, root)
                for keyring in _keyrings(src.read_text(errors="replace")):
                    if keyring.is_file() and not (root / str(keyring).lstrip("/")).exists():
                        _copy_in(keyring, root)
        for conf in Path("/etc/apt/apt.conf.d").glob("*"):
            if conf.is_file() and not (root / "etc/apt/apt.conf.d" / conf.name).exists():
                _copy_in(conf, root)
        write("etc/apt/apt.conf.d/90hostlab-proxy",
              f'Acquire::http::Proxy "{proxy}/";\nAcquire::https::Proxy "{proxy}/";\n')

        # TLS: the controller's bundle (egress may be intercepted) and its extra CAs, kept on update-ca-certificates.
        for bundle in (Path("/etc/ssl/certs/ca-certificates.crt"),):
            if bundle.is_file():
                _copy_in(bundle, root)
        extra = Path("/usr/local/share/ca-certificates")
        for crt in extra.rglob("*.crt") if extra.is_dir() else ():
            _copy_in(crt, root)

        # pip: the same config files and variables as the controller, plus the proxy.
        for f in self.pip_files:
            _copy_in(f, root)
        for p in self._pip_local_files():
            _copy_in(p, root)
        cp = configparser.RawConfigParser()
        guest_pip = root / "etc/pip.conf"
        if guest_pip.is_file():
            cp.read(guest_pip)
        if not cp.has_section("global"):
            cp.add_section("global")
        cp.set("global", "proxy", proxy)
        if not cp.has_option("global", "cert"):
            cp.set("global", "cert", "/etc/ssl/certs/ca-certificates.crt")
        with open(guest_pip, "w") as fh:
            cp.write(fh)

        # Every way a process can start: login shells/PAM, sudo, systemd services.
        env = {"http_proxy": proxy, "https_proxy": proxy, "no_proxy": no_proxy,
               "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": no_proxy, **self.pip_env}
        write("etc/environment", "".join(f'{k}="{v}"\n' for k, v in env.items()))
        keep = " ".join(["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                         *sorted(self.pip_env)])
        write("etc/sudoers.d/50-hostlab-proxy", f'Defaults env_keep += "{keep}"\n', 0o440)
        write("etc/systemd/system.conf.d/50-hostlab-proxy.conf",
              "[Manager]\nDefaultEnvironment=" + " ".join(f'"{k}={v}"' for k, v in env.items()) + "\n")

    def _add_sudo_user(self, root: Path) -> None:
        """SUDO_USER: the lab key, a home, passwordless sudo (written into the guest's files before boot)."""
        name, uid = SUDO_USER, SUDO_UID
        for rel, line in (("etc/passwd", f"{name}:x:{uid}:{uid}:vllm-deploy lab operator:/home/{name}:/bin/bash"),
                          ("etc/shadow", f"{name}:*:19000:0:99999:7:::"),  # no password; key login only
                          ("etc/group", f"{name}:x:{uid}:"),
                          ("etc/gshadow", f"{name}:!::")):
            path = root / rel
            if path.exists() and not any(x.startswith(f"{name}:") for x in path.read_text().splitlines()):
                with open(path, "a") as handle:  # appending keeps the file's mode (shadow stays 0640)
                    handle.write(line + "\n")
        ssh_dir = root / "home" / name / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(Path(f"{self.ssh_key}.pub").read_text())
        keys.chmod(0o600)
        for path in (ssh_dir.parent, ssh_dir, keys):
            os.chown(path, uid, uid)
        ssh_dir.parent.chmod(0o700)
        sudoers = root / "etc/sudoers.d/60-hostlab-sudo-user"
        sudoers.write_text(f"{name} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)

    def _pip_local_files(self) -> list[Path]:
        """Files (constraints, requirements) the pip config points at; directories are bound instead."""
        return [p for p in self.pip_binds if p.is_file()]


def _copy_in(src: Path, root: Path) -> None:
    dest = root / str(src).lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    shutil.copy2(src, dest)


def _keyrings(sources_text: str) -> list[Path]:
    out: list[Path] = []
    for line in sources_text.splitlines():
        low = line.lower()
        if low.startswith("signed-by:"):
            out += [Path(w) for w in line.split(":", 1)[1].split() if w.startswith("/")]
        elif "signed-by=" in low:
            value = line[low.index("signed-by=") + len("signed-by="):].split()[0].rstrip("]")
            out += [Path(w) for w in value.split(",") if w.startswith("/")]
    return out


@contextlib.contextmanager
def _global_lock() -> Iterator[None]:
    """Serialise lab start-up, netns creation and stale-lab cleaning across test sessions."""
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def live_lab_ids() -> set[str]:
    if not STATE_ROOT.is_dir():
        return set()
    return {d.name for d in STATE_ROOT.iterdir() if d.is_dir() and _owner_alive(d / "owner")}


def clean_stale() -> list[str]:
    """Remove what labs whose owner process is gone left behind; returns their ids. Call under the global lock."""
    live = live_lab_ids()
    stale: set[str] = set()
    if STATE_ROOT.is_dir():
        stale |= {d.name for d in STATE_ROOT.iterdir() if d.is_dir() and d.name.startswith(ID_PREFIX)}
    if WORK_ROOT.is_dir():
        stale |= {d.name for d in WORK_ROOT.iterdir() if d.name.startswith(ID_PREFIX)}
    for h in cgroup_hierarchies():
        stale |= {d.name for d in h.iterdir() if d.is_dir() and d.name.startswith(ID_PREFIX)}
    if NETNS_DIR.is_dir():
        stale |= {d.name.split("-", 1)[0] for d in NETNS_DIR.iterdir() if d.name.startswith(ID_PREFIX)}
    stale |= {n[: len(ID_PREFIX) + 3] for n in os.listdir("/sys/class/net") if n.startswith(ID_PREFIX)}
    stale -= live
    hierarchies = cgroup_hierarchies()
    for lab_id in sorted(stale):
        marker = STATE_ROOT / lab_id / "shared-before"
        before = set(marker.read_text().split()) if marker.is_file() else {"netns-dir", "netns-mount", "nspawn-dir"}
        _clean_lab(lab_id, hierarchies)
        _release_shared_dirs(before, lab_id)
    return sorted(stale)


def _shared_dirs_state() -> set[str]:
    """Which machine-wide paths labs touch already existed (recorded so the last lab can undo the rest)."""
    found = set()
    if NETNS_DIR.exists():
        found.add("netns-dir")
    if is_mountpoint(NETNS_DIR):
        found.add("netns-mount")
    if NSPAWN_RUN_DIR.exists():
        found.add("nspawn-dir")
    return found


def _release_shared_dirs(before: set[str], lab_id: str) -> None:
    """Undo what the first lab on a machine causes outside its own names, once nothing uses it:
    `ip netns add` bind-mounts /run/netns onto itself (and redoes it when needed), nspawn
    creates /run/systemd/nspawn (left while another lab has a host running)."""
    if "netns-mount" not in before and NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
        while is_mountpoint(NETNS_DIR):
            if _run("umount", str(NETNS_DIR), check=False).returncode != 0:
                break
        if "netns-dir" not in before:
            with contextlib.suppress(OSError):
                NETNS_DIR.rmdir()
    others_running = any(any((STATE_ROOT / lab / "pids").glob("*")) for lab in live_lab_ids() - {lab_id})
    if "nspawn-dir" not in before and NSPAWN_RUN_DIR.is_dir() and not others_running:
        for dirpath, _, _ in sorted(os.walk(NSPAWN_RUN_DIR, topdown=False), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only empty directories: never another tool's state


def _clean_lab(lab_id: str, hierarchies: list[Path]) -> None:
    """Remove every resource named by `lab_id`: processes (by its cgroups), mounts, links, netns, dirs."""
    tops = [h / lab_id for h in hierarchies]
    _kill_cgroups([t for t in tops if t.is_dir()])
    pid_dir = STATE_ROOT / lab_id / "pids"
    for pidfile in pid_dir.iterdir() if pid_dir.is_dir() else ():
        _wait_gone(pidfile)
    work = WORK_ROOT / lab_id
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(f"{work}/")), key=len, reverse=True):
        _unmount_root(Path(mnt))
    for base in (PROPAGATE_DIR, UNIX_EXPORT_DIR):
        for d in base.glob(f"{lab_id}-*") if base.is_dir() else ():
            shutil.rmtree(d, ignore_errors=True)
    for name in os.listdir("/sys/class/net"):
        if name.startswith(lab_id):
            _run("ip", "link", "del", name, check=False)
    for ns in NETNS_DIR.glob(f"{lab_id}-*") if NETNS_DIR.is_dir() else ():
        _run("ip", "netns", "del", ns.name, check=False)
    _remove_v1_cgroups(lab_id)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(STATE_ROOT / lab_id, ignore_errors=True)
    with contextlib.suppress(OSError):
        WORK_ROOT.rmdir()  # only when empty: another lab may be running


def _wait_gone(pidfile: Path, timeout: float = 10) -> None:
    """Wait until the nspawn recorded in `pidfile` (killed with its cgroup) is gone and reaped."""
    try:
        pid_s, start = pidfile.read_text().split()
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while _proc_start_time(int(pid_s)) == start and time.monotonic() < deadline:
        time.sleep(0.05)


def write_inventory(hosts: list[TestHost], path: Path, sudo_user: bool = False) -> Path:
    """A pyinfra inventory file (python) listing `hosts` by IP with their SSH data (root, or the sudo user)."""
    entries = ",\n".join(f"    ({h.ip!r}, {h.pyinfra_data(sudo_user)!r})" for h in hosts)
    path.write_text(f"hosts = [\n{entries},\n]\n")
    return path


def controller_state() -> dict[str, frozenset[str]]:
    """What a lab can leave behind on the controller, for before/after comparisons in teardown tests."""
    procs = set()
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            with contextlib.suppress(OSError):
                if (pid_dir / "comm").read_text().strip() == "systemd-nspawn":
                    procs.add(pid_dir.name)
    cgroup_dirs = set()
    for h in cgroup_hierarchies():  # lab and host levels: below that, running guests change all the time
        cgroup_dirs |= {str(p) for p in h.glob("*") if p.is_dir()} | {str(p) for p in h.glob("*/*") if p.is_dir()}
    return {
        "links": frozenset(os.listdir("/sys/class/net")),
        "netns": frozenset(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else frozenset(),
        "mounts": frozenset(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "cgroups": frozenset(cgroup_dirs),
        "processes": frozenset(procs),
        "nspawn_dirs": frozenset(str(p) for p in NSPAWN_RUN_DIR.rglob("*")) if NSPAWN_RUN_DIR.is_dir() else frozenset(),
        "work_dirs": frozenset(os.listdir(WORK_ROOT)) if WORK_ROOT.is_dir() else frozenset(),
    }
