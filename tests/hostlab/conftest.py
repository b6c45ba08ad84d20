"""The lab's own tests use the same fixtures the project's end-to-end tests import."""

from tests.hostlab.fixtures import fresh_host, hostlab

__all__ = ["fresh_host", "hostlab"]
