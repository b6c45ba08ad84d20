"""The gateway plan refuses to carry the bearer key to another host over plain HTTP unless told in writing."""

from __future__ import annotations

from typing import Any

import pytest

from plan.gateway import build_gateway_plan
from plan.service import PlanError
from plan.settings import SettingsError, load_instances, load_settings

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


HOSTILE_REMOTE = "10.0.0.12;\n  server evil.example:80"
HOSTILE_GATEWAY = "gw; location / { return 200; }"


@pytest.mark.parametrize(("gateway", "remote", "field", "named"), [
    ("gw", HOSTILE_REMOTE, "vllm_advertise_address", HOSTILE_REMOTE),
    (HOSTILE_GATEWAY, "10.0.0.12", "vllm_gateway_server_name", HOSTILE_GATEWAY),
])
def test_an_inventory_name_standing_in_for_an_address_is_held_to_the_validator(gateway: str, remote: str,
                                                                              field: str, named: str) -> None:
    members = _members((gateway, GATEWAY), (remote, {**REMOTE, "vllm_backend_tls": False}))
    with pytest.raises(PlanError) as refused:
        build_gateway_plan(members[0][1], gateway, members)
    message = str(refused.value)
    assert message.startswith(f"{field}: the inventory name {named!r}") and f"set {field}" in message


def test_nginx_sees_quoted_addresses_and_comment_safe_names() -> None:
    remote = {**REMOTE, "vllm_backend_tls": False, "vllm_advertise_address": "fd00::12"}
    members = _members(("gw", GATEWAY), ("odd\nname", remote))
    plan = build_gateway_plan(members[0][1], "gw", members)
    backends = plan.upstreams[0].backends
    assert [b.nginx_server for b in backends] == ["127.0.0.1:8001", "[fd00::12]:8001", "[fd00::12]:8003"]
    assert "\n" not in backends[1].comment_host and plan.nginx_server_name == "gw"


def test_the_retry_window_covers_the_slowest_watchdog_of_the_deployment() -> None:
    remote = {**REMOTE, "vllm_backend_tls": False, "vllm_watchdog_interval": 30, "vllm_watchdog_misses": 4}
    members = _members(("gw", GATEWAY), ("10.0.0.12", remote))
    assert build_gateway_plan(members[0][1], "gw", members).retry_window == 4 * 30 + 10 + 30
    # A deadline longer than the interval: probes follow each other as each ends.
    slow = {**REMOTE, "vllm_backend_tls": False, "vllm_watchdog_interval": 10, "vllm_watchdog_timeout": 40}
    members = _members(("gw", GATEWAY), ("10.0.0.12", slow))
    assert build_gateway_plan(members[0][1], "gw", members).retry_window == 10 + 2 * 40 + 40 + 30
    quiet = _members(("gw", {**GATEWAY, "vllm_watchdog": False}))
    assert build_gateway_plan(quiet[0][1], "gw", quiet).retry_window == 60


def test_the_limits_reach_the_plan_as_nginx_reads_them() -> None:
    limits = {"vllm_gateway_max_body": "1G", "vllm_gateway_client_timeout": 5, "vllm_gateway_key_concurrency": 3}
    members = _members(("gw", {**GATEWAY, **limits}))
    plan = build_gateway_plan(members[0][1], "gw", members)
    assert (plan.max_body, plan.client_timeout, plan.key_concurrency) == ("1g", 5, 3)
    # client_body_buffer_size is parsed without the 'g' suffix that client_max_body_size takes.
    assert (plan.nginx_max_body, plan.nginx_body_buffer) == ("1g", "1024m")
    members = _members(("gw", GATEWAY))
    plan = build_gateway_plan(members[0][1], "gw", members)
    assert (plan.max_body, plan.nginx_body_buffer, plan.client_timeout, plan.key_concurrency) == ("16m", "16m", 60, 0)


@pytest.mark.parametrize(("field", "value", "said"), [
    ("vllm_gateway_max_body", "1023", "out of range; use 1k..1g"),
    ("vllm_gateway_max_body", "1025m", "out of range; use 1k..1g"),
    ("vllm_gateway_max_body", "0", "out of range"),
    ("vllm_gateway_max_body", "1.5m", "not an nginx size"),
    ("vllm_gateway_max_body", "16MB", "not an nginx size"),
    ("vllm_gateway_max_body", "2t", "not an nginx size"),
    ("vllm_gateway_max_body", "16m; return 200", "not an nginx size"),
    ("vllm_gateway_max_body", "16m\n", "not an nginx size"),
    ("vllm_gateway_max_body", "", "not an nginx size"),
    ("vllm_gateway_max_body", True, "not an nginx size"),
    ("vllm_gateway_max_body", None, "not an nginx size"),
    ("vllm_gateway_client_timeout", 0, "out of range; use 1..3600"),
    ("vllm_gateway_client_timeout", 3601, "out of range; use 1..3600"),
    ("vllm_gateway_client_timeout", "60", "must be an integer"),
    ("vllm_gateway_client_timeout", 1.5, "must be an integer"),
    ("vllm_gateway_key_concurrency", -1, "out of range; use 0..65535"),
    ("vllm_gateway_key_concurrency", 65536, "out of range; use 0..65535"),  # nginx's own limit_conn maximum
    ("vllm_gateway_key_concurrency", False, "must be an integer"),
])
def test_bad_limits_are_refused_naming_the_field(field: str, value: Any, said: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({**GATEWAY, field: value})
    problems = dict(refused.value.problems)
    assert list(problems) == [field] and said in problems[field], problems


@pytest.mark.parametrize(("value", "kept"), [("1k", "1k"), ("1K", "1k"), ("1024", "1024"), ("16M", "16m"),
                                             ("1g", "1g"), ("1048576k", "1048576k"), (65536, "65536")])
def test_nginx_sizes_from_1k_to_1g_pass(value: str | int, kept: str) -> None:
    assert load_settings({**GATEWAY, "vllm_gateway_max_body": value}).vllm_gateway_max_body == kept
