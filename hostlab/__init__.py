"""Throwaway Debian 12 test servers (systemd as PID 1, real SSH) booted with systemd-nspawn."""

from .lab import Lab, LabError, TestHost, clean_stale, controller_state, write_inventory
from .rootfs import RootfsError, ensure_tarball

__all__ = [
    "Lab",
    "LabError",
    "RootfsError",
    "TestHost",
    "clean_stale",
    "controller_state",
    "ensure_tarball",
    "write_inventory",
]
