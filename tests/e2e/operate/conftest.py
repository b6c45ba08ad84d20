"""Two lab hosts deployed once for every "operate" test. The files run in the order their numbers give:
bench, monitoring, the watchdog (its frozen engine), then the cluster, which turns the same two hosts (their
vLLM and model already installed) into one multi-node instance.

Host A runs the gateway, Prometheus and Alertmanager (`vllm_monitoring`) and two instances of the
tiny model; instance "a" runs vLLM's engine core in its own process (VLLM_ENABLE_V1_MULTIPROCESSING=1,
as on GPU hosts), so freezing the engine leaves the API server answering `/health`. Host B runs one
instance, reached by the gateway and Prometheus over the lab's private bridge. Scrapes and watchdog
probes are frequent so the tests wait seconds, not minutes. Models live on a filesystem of their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hostlab import Lab
from tests.e2e.gatewaylab import Story

A_INSTANCES = [{"name": "a", "port": 8001, "env": {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}},
               {"name": "b", "port": 8002}]
B_INSTANCES = [{"name": "c", "port": 8001}]
FAST = {"vllm_scrape_interval": 2, "vllm_watchdog_interval": 3, "vllm_watchdog_timeout": 5,
        "vllm_watchdog_misses": 3}


@pytest.fixture(scope="package")
def operated(hostlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """The deployed pair; the first deploy must succeed, or every operate test fails with its output."""
    a, b = hostlab.add_host("op-a"), hostlab.add_host("op-b")
    story = Story(a, b, tmp_path_factory.mktemp("operate") / "tls.crt",
                  a_data={"vllm_instances": A_INSTANCES, "vllm_monitoring": True, **FAST},
                  b_data={"vllm_instances": B_INSTANCES, **FAST})
    try:
        for host in (a, b):
            # Models on a filesystem of their own, as on a server's data disk: the lab's root is overlayfs,
            # which node exporter leaves out like every virtual filesystem, so the disk alert would see none.
            host.run("mkdir -p /srv/models && mount -t tmpfs -o size=512m,mode=755 vllm-models /srv/models")
        result = story.deploy()
        assert result.returncode == 0, result.failure(8000)
        story.fetch_cert()
        yield story
    finally:
        a.kill()
        b.kill()
