"""Quoting at the boundary: one helper per language a setting's value can reach.

Settings are validated first (`plan.schema`), so most hostile values never get here; these
helpers make what does pass inert in the language it lands in: a root shell, a systemd unit
or environment file, docker's --env-file, an nginx configuration, a line-based config file.
Each one is written against that language's own parser (systemd's `extract_first_word`,
specifier and env-file readers, docker's env-file reader, nginx's tokenizer), and
tests/plan/test_quoting.py feeds their output through the real parsers (`sh`, `systemd --test`,
systemd's environment.d generator, the docker CLI, `nginx -t`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Literal

_SYSTEMD_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+\Z")
_NGINX_BARE = re.compile(r"[A-Za-z0-9_.:/\[\]-]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# systemd reads these at the start of an Exec line's first word as prefixes (ignore failure, argv0, ...).
_EXEC_PREFIXES = "-@:+!|"
# A value both env-file readers take verbatim: systemd strips outer white space, opens quotes at the
# start and reads backslashes as escapes; docker reads the rest of the line raw.
_ENV_PLAIN = re.compile(r"[^\s'\"\\]([^\\]*[^\s\\])?\Z")

EnvFileReader = Literal["systemd", "docker", "both"]


class QuotingError(ValueError):
    """A value that no quoting makes safe in that language (a NUL or a line break where lines matter)."""


def sh(value: str) -> str:
    """One word for a POSIX shell: `;`, `$()`, backticks and spaces stay literal."""
    return shlex.quote(str(value))


def sh_join(argv: Iterable[str]) -> str:
    """A shell command line from words, each quoted."""
    return " ".join(sh(word) for word in argv)


def _systemd_quoted(value: str, *, cunescape: bool, dollar: bool) -> str:
    """`"value"` with the escapes the directive's reader undoes; `%` doubled for the specifier pass."""
    if "\x00" in value:
        raise QuotingError(f"{value!r}: a NUL byte cannot appear in a unit file")
    if _CONTROL.search(value) and not cunescape:
        raise QuotingError(f"{value!r}: this unit setting has no escape for a control character (line break, tab)")
    if value and _SYSTEMD_BARE.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    if cunescape:
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        escaped = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", escaped)
    escaped = escaped.replace("%", "%%")
    if dollar:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def systemd_word(value: str, *, dollar: bool = True) -> str:
    """One word of a systemd Exec*= line (`dollar=False`: of Environment=, which expands no `$`).

    systemd splits these lines itself: double quotes group, backslash escapes inside them (C
    escapes too, so a line break is written `\\n`), `%` starts a specifier (`%%` is a literal
    percent) and on Exec lines `$NAME` / `${NAME}` expand the environment (`$$` is a literal
    dollar). Paths in ReadWritePaths= and friends take `systemd_path`, not this.
    """
    return _systemd_quoted(str(value), cunescape=True, dollar=dollar)


def systemd_path(value: str) -> str:
    """One path of ReadWritePaths=/ReadOnlyPaths=: quotes group, but no C escapes and no `$` expansion."""
    return _systemd_quoted(str(value), cunescape=False, dollar=False)


def systemd_exec(argv: Iterable[str]) -> str:
    """An Exec*= command line: each word escaped for systemd, so what runs is exactly `argv`.

    systemd reads prefixes (`-`, `@`, `+`, ...) off the first word even when it is quoted, so a
    first word starting with one is refused rather than silently changing how the command runs.
    """
    words = [str(word) for word in argv]
    if not words or not words[0] or words[0][0] in _EXEC_PREFIXES:
        raise QuotingError(f"{words[:1]!r}: an Exec line needs a program that does not start with "
                           f"one of systemd's prefixes {_EXEC_PREFIXES!r}")
    return " ".join(systemd_word(word) for word in words)


def systemd_value(value: str) -> str:
    """A single-valued unit setting (Description=, WorkingDirectory=, EnvironmentFile=): `%` doubled.

    These are taken verbatim apart from specifiers, so only what ends the line is refused: a
    control character, or a trailing backslash (systemd joins the next line onto it).
    """
    value = str(value)
    if _CONTROL.search(value):
        raise QuotingError(f"{value!r}: a control character (line break, tab, NUL) cannot appear in a "
                           "unit file setting")
    if value.endswith("\\"):
        raise QuotingError(f"{value!r}: a trailing backslash continues a unit file line onto the next")
    return value.replace("%", "%%")


def comment_text(value: str) -> str:
    """Text for a `#` comment line of any line-based file: control characters become spaces.

    Comments only inform, so a value is shown rather than refused; what matters is that a line
    break in it cannot start a directive of its own.
    """
    return _CONTROL.sub(" ", str(value))


def systemd_environment(name: str, value: str) -> str:
    """An `Environment=` assignment, quoted as a whole word: spaces, quotes and `%` stay in the value."""
    if not _ENV_NAME.match(name):
        raise QuotingError(f"{name!r} is not an environment variable name")
    return "Environment=" + systemd_word(f"{name}={value}", dollar=False)


def env_file_line(name: str, value: str, reader: EnvFileReader = "both") -> str:
    """One `NAME=value` line of an environment file, for the reader(s) that will parse it.

    systemd's EnvironmentFile= strips white space around an unquoted value, opens quotes at its
    start and reads `\\` as an escape; docker's --env-file takes the rest of the line verbatim,
    quotes included. A plain value is written bare, read alike by both. Otherwise `systemd` gets
    its double-quoted form (`\\"`, `\\\\`, `\\$`, `` \\` `` escaped, nothing expanded), `docker` the
    raw value, and `both` a QuotingError, since no one line reads the same to the two. A line
    break is refused everywhere: docker has no quoting to keep it in the value.
    """
    if not _ENV_NAME.match(name):
        raise QuotingError(f"{name!r} is not an environment variable name")
    value = str(value)
    if _CONTROL.search(value):
        raise QuotingError(f"{name}: a control character (line break, tab, NUL) cannot appear in an "
                           "environment file value")
    if value == "" or _ENV_PLAIN.match(value) or reader == "docker":
        return f"{name}={value}"
    if reader == "both":
        raise QuotingError(f"{name}={value!r}: systemd and docker read this value differently in an environment "
                           "file (outer spaces, a leading quote or a backslash)")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'{name}="{escaped}"'


def config_word(value: str, what: str) -> str:
    """A word in a config format with no quoting at all (deb822 fields, apt one-line lists, ini values).

    White space would split it into several words and a line break would start a field of its
    own, so both are refused; everything else is taken literally by those readers.
    """
    value = str(value)
    if not value or re.search(r"\s", value) or _CONTROL.search(value):
        raise QuotingError(f"{what}: {value!r} must be one word without white space or control characters")
    return value


def nginx_string(value: str) -> str:
    """A string argument of an nginx directive: bare when it is plain, else double-quoted.

    nginx reads `;`, `{`, `}`, `#`, quotes and white space as syntax outside quotes and `$` as a
    variable almost everywhere, so anything beyond a plain name is quoted with `\\` escapes and
    `$` is refused (there is no escape for it in nginx's configuration language).
    """
    value = str(value)
    if _CONTROL.search(value):
        raise QuotingError(f"{value!r}: a control character cannot appear in an nginx configuration")
    if "$" in value:
        raise QuotingError(f"{value!r}: '$' starts a variable in nginx and cannot be escaped")
    if value and _NGINX_BARE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
