"""Three fresh hosts deployed in one pyinfra run, each verified and serving."""

from __future__ import annotations

import pytest

from hostlab.deployrun import lab_host, run_pyinfra
from tests.e2e.test_bootstrap import assert_serving

pytestmark = pytest.mark.hosts


def test_three_hosts_in_one_run(fresh_host) -> None:
    hosts = [fresh_host(f"fleet-{i}") for i in range(3)]
    result = run_pyinfra([lab_host(h) for h in hosts])
    assert result.returncode == 0, result.failure()
    assert result.output.count("vLLM serving 'tiny'") == 3
    for host in hosts:
        assert_serving(host)
