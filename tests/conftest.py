"""Shared pytest set-up: the repository root on sys.path, the test-host lab fixtures, no real model hub,
and no write to the user's own calibration file."""

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
# the hub client clear both and run their own loopback hub). Set here, so pyinfra runs inherit them.
os.environ["VLLM_DEPLOY_HUB_OFFLINE"] = "1"
_RUN_DIR = tempfile.mkdtemp(prefix="vllm-deploy-tests-")
os.environ["VLLM_DEPLOY_HUB_CACHE"] = os.path.join(_RUN_DIR, "hub")
# Deploys append calibration records (tasks/verify.py): to this run's file, not ~/.local/share, unless the
# caller chose a file; a test that checks the records points VLLM_DEPLOY_CALIBRATION at its own.
os.environ.setdefault("VLLM_DEPLOY_CALIBRATION", os.path.join(_RUN_DIR, "calibration.jsonl"))


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001 - pytest's hook signature
    shutil.rmtree(_RUN_DIR, ignore_errors=True)
