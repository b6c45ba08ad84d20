"""Copy a controller directory to a host as one tar stream: the offline wheelhouse and a local model.

pyinfra's `files.sync` runs a few commands and one SFTP upload per file: ~35 s for vLLM's 150 wheels
(876 MB) on a lab host, where the same bytes as one stream take ~7 s, and no progress shows while
it runs. `copy_directory` lists the host's copy once (size and modification time of every file, as
rsync's quick check), sends only the files that differ in one `tar` stream on the command's stdin,
logs bytes sent / total every PROGRESS_SECONDS, and removes the host's files that are no longer in
the source when asked. tar restores each file's modification time, so a cut copy resumes: the file
it was writing has another size or time and goes again, the finished ones are skipped.

pyinfra writes stdin as text lines (its `_stdin`), so the stream goes base64-encoded, one line per
STREAM_CHUNK, and the host decodes it with coreutils' base64 in front of GNU tar.
"""

from __future__ import annotations

import base64
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gevent
from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State

from facts.model import FileStamp
from facts.pyinfra_facts import DirectoryListing
from tasks import remote

# Raw bytes per stdin line: a multiple of 3, so that each line is base64 without padding and the lines
# concatenate into one valid stream.
STREAM_CHUNK = 3 << 18
PROGRESS_SECONDS = 10.0
# paramiko starts a re-key after 512 MB in either direction. While a re-key it started is pending, its transport
# thread answers a channel's close (the other commands a host runs meanwhile: facts, apt) with a message that waits
# for that same re-key, so the connection hangs until paramiko gives up ("Key-exchange timed out waiting for key
# negotiation", paramiko issue #822). It hit one host in three on a loaded 2-core run. A re-key the server starts
# has no such window; OpenSSH's sshd starts one after 1 to 4 GB (its RekeyLimit), so keys still change.
CLIENT_REKEY_LIMIT = 1 << 62
# How long a user message may wait for a re-key to finish (paramiko's default: 30 s) on a saturated host.
KEX_WAIT_SECONDS = 300.0
# $1 destination; the tar stream arrives base64-encoded on stdin. Files land 0644 root (the archive's own
# modes; --no-same-owner), new directories 0755; pipefail: a broken stream fails even if tar read a prefix.
UNPACK_SCRIPT = 'set -euo pipefail; umask 022; mkdir -p -- "$1"; base64 -d | tar -C "$1" -x --no-same-owner -f -'
REMOVE_SCRIPT = 'set -eu; cd -- "$1"; shift; rm -f -- "$@"'
MARKER = "vllm-deploy-copy"
# Copies running in the background, by (host name, destination), until `wait_for_copy` joins them.
_RUNNING: dict[tuple[str, str], gevent.Greenlet] = {}


def local_files(root: str | Path, exclude: Sequence[str] = ()) -> dict[str, FileStamp]:
    """Every file under `root` (relative POSIX path -> size and time), the `exclude` paths left out."""
    root = Path(root)
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in exclude:
            stat = path.stat()
            found[rel] = FileStamp(size=stat.st_size, mtime=int(stat.st_mtime))
    return found


def files_to_send(local: Mapping[str, FileStamp], remote: Mapping[str, FileStamp]) -> list[str]:
    """The files the host lacks or holds with another size or time."""
    return [name for name, stamp in local.items() if remote.get(name) != stamp]


def stale_files(local: Mapping[str, FileStamp], remote: Mapping[str, FileStamp], keep: Sequence[str]) -> list[str]:
    """The host's files that are not in the source (and not ours to keep, such as a marker)."""
    return sorted(name for name in remote if name not in local and name not in keep)


def tar_stream(root: str | Path, names: Sequence[str], stamps: Mapping[str, FileStamp]) -> Iterator[bytes]:
    """A POSIX tar of `names` under `root`, read in chunks (a model shard is never in memory whole).

    Each member is 0644, owned by root, with the modification time of `stamps` (what the next run's listing
    is compared with). A file whose size changed since it was listed fails the copy instead of sending a
    header that lies about it.
    """
    root = Path(root)
    for name in names:
        stamp = stamps[name]
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = stamp.size, stamp.mtime, 0o644
        info.uname = info.gname = "root"
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        with (root / name).open("rb") as handle:
            while sent < stamp.size and (chunk := handle.read(min(1 << 20, stamp.size - sent))):
                sent += len(chunk)
                yield chunk
        if sent != stamp.size:
            raise OSError(f"{root / name} changed while it was copied ({sent} of {stamp.size} bytes read)")
        if stamp.size % tarfile.BLOCKSIZE:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - stamp.size % tarfile.BLOCKSIZE)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)


def base64_lines(chunks: Iterator[bytes], chunk: int = STREAM_CHUNK) -> Iterator[str]:
    """Re-cut `chunks` into `chunk`-byte pieces (the last may be shorter), each as one base64 line."""
    pending = bytearray()
    for data in chunks:
        pending += data
        while len(pending) >= chunk:
            yield base64.b64encode(pending[:chunk]).decode() + "\n"
            del pending[:chunk]
    if pending:
        yield base64.b64encode(pending).decode() + "\n"


class LazyLines(list):
    """Lines produced while they are written. pyinfra's stdin writer iterates a list or tuple and wraps any
    other iterable (a generator) in a list of one item, although `_stdin` is typed `Iterable[str]`; a list
    whose iterator is a generator passes, without holding a 1 GB stream in memory."""

    def __init__(self, lines: Iterator[str]) -> None:
        super().__init__()
        self._lines = lines

    def __iter__(self) -> Iterator[str]:
        return self._lines


class TarStdin:
    """The stdin of one copy, for pyinfra's `_stdin` (which calls `readlines()` once per attempt).

    Logs bytes sent / total every PROGRESS_SECONDS while pyinfra writes it to the channel.
    """

    def __init__(self, root: str, names: Sequence[str], stamps: Mapping[str, FileStamp], label: str) -> None:
        self.root, self.names, self.stamps, self.label = root, list(names), dict(stamps), label
        self.total = sum(self.stamps[name].size for name in self.names)

    def readlines(self) -> LazyLines:
        return LazyLines(self._lines())

    def _lines(self) -> Iterator[str]:
        started = last = time.monotonic()
        sent = 0
        for line in base64_lines(tar_stream(self.root, self.names, self.stamps), STREAM_CHUNK):
            yield line
            gevent.sleep(0)  # let the other hosts' greenlets and the connection's own reader run between lines
            sent += (len(line) - 1) * 3 // 4
            if (now := time.monotonic()) - last >= PROGRESS_SECONDS:
                last = now
                logger.info(f"{self.label}: {min(sent, self.total) / 2**20:.0f}/{self.total / 2**20:.0f} MiB "
                            f"sent ({now - started:.0f}s)")


class TarUnpack(StringCommand):
    """The unpack command; `copy_dest` and `_stdin` let a fake connector keep what would land."""

    def __init__(self, dest: str, stdin: TarStdin) -> None:
        super().__init__("bash", "-c", QuoteString(UNPACK_SCRIPT), MARKER, QuoteString(dest), _stdin=stdin)
        self.copy_dest = dest


@operation()
def copy_directory(src: str, dest: str, keep: Sequence[str] = (), delete: bool = False, background: bool = False):
    """Make `dest` on the host hold `src`'s files (0644 root): only what differs goes, as one tar stream.

    `keep`: paths under `dest` that are not the source's and stay (markers, manifests); they are never sent
    either. `delete`: remove the host's other files that are not in `src`. `background`: the stream runs on its
    own SSH channel while the next operations run (apt, say), until `wait_for_copy(dest)`, which fails if it did.
    """
    local = local_files(src, exclude=keep)
    remote_files = host.get_fact(DirectoryListing, path=dest)
    send = files_to_send(local, remote_files)
    stale = stale_files(local, remote_files, keep) if delete else []
    if not send and not stale:
        host.noop(f"{dest} holds every file of {src}")
        return
    if stale:
        yield StringCommand("bash", "-c", QuoteString(REMOVE_SCRIPT), MARKER, QuoteString(dest),
                            *(QuoteString(name) for name in stale))
    if send:
        stdin = TarStdin(src, send, local, label=f"[{host.name}] copying {src} to {dest}")
        logger.info(f"[{host.name}] {dest}: {len(send)} of {len(local)} file(s) to send, "
                    f"{stdin.total / 2**20:.0f} MiB{' (in the background)' if background else ''}")
        _leave_rekeying_to_the_server(host)
        yield FunctionCommand(_start, (dest, stdin), {}) if background else TarUnpack(dest, stdin)


@operation()
def wait_for_copy(dest: str):
    """Wait for the background copy to `dest` that `copy_directory` started on this host, if any; fail if it did."""
    if (host.name, dest) not in _RUNNING:
        host.noop(f"no copy to {dest} is running")
        return
    yield FunctionCommand(_wait, (dest,), {})


def _start(state: State, host: Host, dest: str, stdin: TarStdin) -> bool:
    """Spawn the unpack command with the operation's sudo settings. pyinfra calls a function whose arguments are
    named `state` and `host` in the operation's own greenlet, with them, and takes its result as the status."""
    arguments = {**remote.connector_arguments(host), "_stdin": stdin}
    _RUNNING[(host.name, dest)] = gevent.spawn(host.run_shell_command, TarUnpack(dest, stdin), **arguments)
    return True


def _leave_rekeying_to_the_server(host: Any) -> None:
    """Apply `leave_rekeying_to_the_server` to the host's SSH connection, where it is paramiko's (the default)."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None and hasattr(client, "get_transport") else None
    if transport is not None:
        leave_rekeying_to_the_server(transport)


def leave_rekeying_to_the_server(transport: Any) -> None:
    """Stop this paramiko transport from starting re-keys (see CLIENT_REKEY_LIMIT) and let a user message wait
    KEX_WAIT_SECONDS for one the server starts: the copy crosses 512 MB while the host is busiest."""
    transport.packetizer.REKEY_BYTES = transport.packetizer.REKEY_PACKETS = CLIENT_REKEY_LIMIT
    transport.clear_to_send_timeout = max(transport.clear_to_send_timeout, KEX_WAIT_SECONDS)


def _wait(state: State, host: Host, dest: str) -> bool:
    greenlet = _RUNNING.pop((host.name, dest))
    try:
        ok, output = greenlet.get()
    except Exception as error:  # a source file changed, the connection dropped: the copy's own error
        host.log(f"copy to {dest} failed: {error}", logger.error)
        return False
    if not ok:
        host.log(f"copy to {dest} failed:\n" + "\n".join(output.stderr_lines[-20:]), logger.error)
    return bool(ok)
