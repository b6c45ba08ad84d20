"""Lab deploys record calibration lines (tasks/verify.py) in a file of this test session, not in the user's
~/.local/share: a test module that checks the records points VLLM_DEPLOY_CALIBRATION at its own file."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _calibration_file_of_this_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if os.environ.get("VLLM_DEPLOY_CALIBRATION"):
        yield
        return
    os.environ["VLLM_DEPLOY_CALIBRATION"] = str(tmp_path_factory.mktemp("calibration") / "calibration.jsonl")
    try:
        yield
    finally:
        os.environ.pop("VLLM_DEPLOY_CALIBRATION", None)
