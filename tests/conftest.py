"""Shared pytest set-up: the repository root on sys.path, and the test-host lab fixtures."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hostlab.fixtures import fresh_host, hostlab  # noqa: E402

__all__ = ["fresh_host", "hostlab"]
