"""The gateway plan refuses to carry the bearer key to another host over plain HTTP unless told in writing."""

from __future__ import annotations

from typing import Any

import pytest

from plan.gateway import build_gateway_plan
from plan.service import PlanError
from plan.settings import load_instances

GATEWAY = {"model": "tiny", "vllm_gateway": True, "vllm_instances": [{"name": "a", "port": 8001}]}
REMOTE = {"model": "tiny", "vllm_instances": [{"name": "c", "port": 8001}, {"name": "d", "port": 8003}]}


def _members(*hosts: tuple[str, dict[str, Any]]) -> list:
    return [(name, load_instances(data)[0].settings, load_instances(data)) for name, data in hosts]


def test_a_remote_instance_without_the_written_opt_out_is_refused() -> None:
    members = _members(("gw", GATEWAY), ("10.0.0.12", REMOTE))
    with pytest.raises(PlanError) as refused:
        build_gateway_plan(members[0][1], "gw", members)
    message = str(refused.value)
    assert message.startswith("vllm_backend_tls: ")
    assert "10.0.0.12 (c:8001, d:8003)" in message
    assert "bearer key" in message and "plain HTTP" in message
    assert "`vllm_backend_tls = False`" in message and "trust" in message


def test_the_opt_out_of_the_remote_host_allows_it() -> None:
    members = _members(("gw", GATEWAY), ("10.0.0.12", {**REMOTE, "vllm_backend_tls": False}))
    plan = build_gateway_plan(members[0][1], "gw", members)
    assert [(b.address, b.port) for b in plan.upstreams[0].backends] == [
        ("127.0.0.1", 8001), ("10.0.0.12", 8001), ("10.0.0.12", 8003)]


def test_the_opt_out_of_the_gateway_host_does_not_cover_other_hosts() -> None:
    members = _members(("gw", {**GATEWAY, "vllm_backend_tls": False}), ("10.0.0.12", REMOTE))
    with pytest.raises(PlanError, match=r"vllm_backend_tls: .*10\.0\.0\.12"):
        build_gateway_plan(members[0][1], "gw", members)


def test_instances_on_the_gateway_host_need_no_opt_out() -> None:
    members = _members(("gw", GATEWAY))
    plan = build_gateway_plan(members[0][1], "gw", members)
    assert [b.address for b in plan.upstreams[0].backends] == ["127.0.0.1"]
