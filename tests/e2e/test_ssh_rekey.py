"""A long copy and the host's other commands share one paramiko connection while its keys change.

A re-key that paramiko starts (after 512 MB) hangs the connection when a channel closes before it ends (paramiko
issue #822): the wheelhouse copy and the install stage's commands did that to one host in three. The copy leaves
re-keys to the server (`leave_rekeying_to_the_server`). Here paramiko's limit is scaled down to 4 MB as a stand-in
for its 512 MB, the host's real sshd re-keys every 4 MB (so keys change many times), and 64 MB go over one channel
while short commands, each a channel that closes, run on the same connection from another thread.
"""

from __future__ import annotations

import logging
import threading

import paramiko
import pytest

from hostlab import TestHost
from tasks.directory_copy import leave_rekeying_to_the_server

pytestmark = pytest.mark.hosts

STAND_IN_LIMIT = 4 << 20
STREAM_BYTES = 64 << 20
DEADLINE_S = 240


class _KeySwitches(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "Switch to new keys" in record.getMessage()


def _stream_with_closing_channels(transport: paramiko.Transport) -> tuple[list[str], int]:
    """Send STREAM_BYTES to `cat` while other channels open, run `true` and close; (errors, commands run)."""
    errors: list[str] = []
    done = threading.Event()
    commands = 0

    def chatter() -> None:
        nonlocal commands
        while not done.is_set():
            try:
                channel = transport.open_session(timeout=DEADLINE_S)
                channel.exec_command("true")
                channel.recv_exit_status()
                channel.close()
            except Exception as error:  # the connection hung or dropped: the failure this test is about
                errors.append(f"short command: {error!r}")
                return
            commands += 1

    def stream() -> None:
        try:
            channel = transport.open_session(timeout=DEADLINE_S)
            channel.exec_command("cat > /dev/null")
            block = b"\0" * (1 << 15)
            for _ in range(STREAM_BYTES // len(block)):
                channel.sendall(block)
            channel.shutdown_write()
            if (status := channel.recv_exit_status()) != 0:
                errors.append(f"stream: cat exited {status}")
        except Exception as error:
            errors.append(f"stream: {error!r}")
        finally:
            done.set()

    threads = [threading.Thread(target=chatter, daemon=True), threading.Thread(target=stream, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    if any(thread.is_alive() for thread in threads):
        errors.append(f"still running after {DEADLINE_S} s")
    return errors, commands


def test_a_stream_survives_the_servers_rekeys_while_other_channels_close(fresh_host) -> None:
    host: TestHost = fresh_host("rekey")
    host.run("echo 'RekeyLimit 4M' > /etc/ssh/sshd_config.d/rekey.conf && systemctl restart ssh")
    host.wait_ssh()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host.ip, username="root", key_filename=str(host.ssh_key), look_for_keys=False, allow_agent=False)
    switches = _KeySwitches()
    logger = logging.getLogger("paramiko.transport")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(switches)
    try:
        transport = client.get_transport()
        assert transport is not None
        transport.packetizer.REKEY_BYTES = transport.packetizer.REKEY_PACKETS = STAND_IN_LIMIT
        leave_rekeying_to_the_server(transport)
        errors, commands = _stream_with_closing_channels(transport)
    finally:
        logger.removeHandler(switches)
        logger.setLevel(level)
        client.close()
    assert errors == [], errors
    assert commands > 0, "no short command ran beside the stream"
    # The server re-keyed during the stream: the keys did change, many times, without a hang.
    assert switches.count >= STREAM_BYTES // (4 << 20) // 2, switches.count
