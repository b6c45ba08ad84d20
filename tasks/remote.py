"""Commands run from inside a `python.call` callback, with the calling operation's sudo settings.

pyinfra hands a callback's `host.run_shell_command` none of the operation's connector arguments
(`_sudo`, `_sudo_user`, `_env`, ...), so with a non-root SSH user the checks would run unprivileged
and fail to read the 0600 key header or to drive systemd. This passes them on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyinfra import host
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.api.host import Host


def run(command: str) -> tuple[bool, Any]:
    """(ok, CommandOutput) of `command` on the current host, as the current operation runs commands."""
    return bound()(command)


def bound() -> Callable[[str], tuple[bool, Any]]:
    """`run` bound to the current host and operation, for a greenlet the callback spawns (pyinfra's `host`
    is the current context's, which a spawned greenlet does not have)."""
    target = host._get_module()  # the Host itself, not the greenlet-local proxy
    arguments = connector_arguments(target)
    return lambda command: target.run_shell_command(command, **arguments)


def connector_arguments(target: Host) -> dict[str, Any]:
    """The current operation's connector arguments on `target` (`_sudo`, `_sudo_user`, `_env`, ...)."""
    current = target.current_op_global_arguments or {}
    return {key: value for key, value in current.items() if key in CONNECTOR_ARGUMENT_KEYS}
