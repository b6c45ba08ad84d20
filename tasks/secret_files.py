"""Secret files (the API key and what embeds it) written on hosts without the content ever showing.

pyinfra's `files.put` prints the whole content with `--diff` (and reads the old content back to
diff it), and with `_sudo` it uploads to a world-readable `/tmp/pyinfra-*` file first, then copies
it into place. `secret_file` instead sends the content on the SSH channel's stdin to a shell that
writes it to a `mktemp` file (0600 from its creation) in the destination's own directory, sets
owner and mode, then renames it over the destination: the content is never on a command line, in
pyinfra's output at any verbosity, in /tmp, or readable by anyone but its owner, also through sudo.
Whether it changed is decided by the file's SHA-256 and its owner and mode, never by its content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator

from pyinfra import host, logger, state
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File, Sha256File

# $1 destination, $2 owner, $3 group, $4 mode; the content arrives on stdin. The directory keeps
# the usual 0755 when missing; the file exists only as 0600 until chown/chmod, then is renamed whole.
WRITE_SCRIPT = (
    'set -eu; (umask 022; mkdir -p -- "$(dirname -- "$1")"); umask 077; '
    'tmp=$(mktemp -- "$1.XXXXXX"); trap \'rm -f -- "$tmp"\' EXIT; '
    'cat > "$tmp"; chown -- "$2:$3" "$tmp"; chmod -- "$4" "$tmp"; mv -f -- "$tmp" "$1"; trap - EXIT'
)
MARKER = "vllm-deploy-secret"


class SecretWrite(StringCommand):
    """The write command; `secret_dest` and `_stdin` let a fake connector keep what would be written."""

    def __init__(self, dest: str, content: str, user: str, group: str, mode: str) -> None:
        super().__init__("sh", "-c", QuoteString(WRITE_SCRIPT), MARKER, QuoteString(dest), QuoteString(user),
                         QuoteString(group), QuoteString(mode), _stdin=content)
        self.secret_dest = dest


def secret_file(name: str, dest: str, content: str, user: str = "root", group: str = "root",
                mode: str = "600") -> OperationMeta:
    """Write `content` to `dest` (owner, group, mode) when its hash, owner or mode differ; never shows it.

    `name` is required: pyinfra lists an unnamed operation's arguments (here the content) in its output.
    """
    return _secret_file(name=name, dest=dest, content=content, user=user, group=group, mode=mode)


@operation()
def _secret_file(dest: str, content: str, user: str, group: str, mode: str) -> Generator[StringCommand, None, None]:
    if not content.endswith("\n"):
        content += "\n"  # pyinfra's stdin writer adds it anyway; the hash must match what lands
    digest = hashlib.sha256(content.encode()).hexdigest()
    current = host.get_fact(File, path=dest)
    if (current and host.get_fact(Sha256File, path=dest) == digest and current.get("user") == user
            and current.get("group") == group and current.get("mode") == int(mode)):
        host.noop(f"secret {dest} is up to date")
        return
    if state.config.DIFF:
        host.log(f"Will {'replace' if current else 'create'} {dest} (secret: content not shown)", logger.info)
    yield SecretWrite(dest, content, user, group, mode)
