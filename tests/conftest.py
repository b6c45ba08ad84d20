"""Shared pytest set-up: the repository root on sys.path, the test-host lab fixtures, and no real model hub."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hostlab.fixtures import fresh_host, hostlab  # noqa: E402

__all__ = ["fresh_host", "hostlab"]

# No test reaches a real model hub: hub sizing answers from an empty per-run cache, offline (tests of
# the hub client clear both and run their own loopback hub). Set here, so pyinfra runs inherit it.
os.environ["VLLM_DEPLOY_HUB_OFFLINE"] = "1"
_HUB_CACHE = tempfile.mkdtemp(prefix="vllm-deploy-hub-")
os.environ["VLLM_DEPLOY_HUB_CACHE"] = _HUB_CACHE


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001 - pytest's hook signature
    shutil.rmtree(_HUB_CACHE, ignore_errors=True)
