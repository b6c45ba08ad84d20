"""Fixtures of the hub download modules (tests/e2e/hubdownload.py), each of which defines its own `hub_lab`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.hubdownload import HubLab


@pytest.fixture
def hub_lab_ok(hub_lab: HubLab) -> Iterator[HubLab]:
    """The module's host with a complete download, whatever an earlier test of the module left; the hub honest
    again afterwards."""
    if hub_lab.marker() is None:
        result = hub_lab.deploy()
        assert result.returncode == 0, result.failure(4000)
    yield hub_lab
    for blob in hub_lab.blobs.values():
        blob.served = None
