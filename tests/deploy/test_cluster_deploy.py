"""A `vllm_cluster` inventory through the real pyinfra CLI on @fake hosts (recorded outputs only).

Two HGX A100 servers serve DeepSeek-R1 together: the cluster is planned in-process from the same recorded
outputs (facts, `ip -o route get`, `ip -o -4 addr show`, `ibstat`, `lspci -vvv -d ::0604`), then deployed, and
the rendered units, env files and the launcher are checked against that plan. Members whose settings disagree
are refused before any change, each field named; members that would run different engines are not (re)started.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyinfra.context import ctx_host, ctx_state

from facts import commands
from facts import pyinfra_facts as fact
from facts.gather import gather_host_facts
from facts.parsers import parse_ibstat, parse_ip_route_get
from plan.cluster import LAUNCHER, ClusterMember, ClusterPlan, NetworkFacts, build_cluster_plan
from plan.host import build_host_plan
from plan.service import ServicePlan
from plan.settings import load_instances
from tests.deploy.fakeserver import serving_responses
from tests.fakehosts import PROFILES_DIR, fake_host_data, make_fake_state

ROOT = Path(__file__).resolve().parents[2]
A100 = "a100sxm-x8-ubuntu2204"
RECORDED = PROFILES_DIR / A100 / "converged"  # its *.out: the network commands' outputs on the head (10.10.0.11)
# The recorded head's InfiniBand address, and its peer's (the one its recorded `ip -o route get` asks for).
ADDRESSES = {"gpu-a": "10.10.0.11", "gpu-b": "10.10.0.12"}
HEAD, FOLLOWER = "gpu-a", "gpu-b"
R1 = {"model": "deepseek-ai/DeepSeek-R1", "vllm_cluster": "r1"}
VLLM = "vllm 0.32.0"


def _run(tmp: Path, profile: str, hosts: dict[str, dict[str, Any]]) -> tuple[subprocess.CompletedProcess, Path]:
    """`pyinfra inventory.py deploy.py -y` on one @fake host per entry (name -> host data); the run and its files."""
    lines = ["import sys", f"sys.path.insert(0, {str(ROOT)!r})", "from tests.fakehosts import fake_host_data",
             "hosts = ["]
    for name, data in hosts.items():
        lines.append(f"    ('@fake/{name}', fake_host_data({profile!r}, 'converged', {data!r})),")
    (tmp / "inventory.py").write_text("\n".join([*lines, "]"]) + "\n")
    env = {**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "fakerun.py"), str(tmp / "out"),
                           str(tmp / "inventory.py"), "deploy.py", "-y"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, tmp / "out"


def _changed_nothing(out: Path) -> None:
    uploaded = [p for p in out.rglob("*") if p.is_file() and p.name != "commands.txt"]
    assert uploaded == [], uploaded


def test_members_that_disagree_are_refused_with_each_field_named(tmp_path: Path) -> None:
    common = {"model": "Qwen/Qwen3-8B", "vllm_cluster": "r1", "vllm_api_key_file": str(tmp_path / "key")}
    proc, out = _run(tmp_path, "4090-x2-ubuntu2204", {
        "gpu-a": {**common, "vllm_cluster_head": True, "vllm_version": "0.31.0"},
        "gpu-b": {**common, "vllm_cluster_head": True, "vllm_port": 8100},
    })
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "vllm_cluster_head: cluster 'r1' has 2 heads (@fake/gpu-a, @fake/gpu-b)" in output, output[-4000:]
    assert ("vllm_version: differs between the members of cluster 'r1' (@fake/gpu-a: '0.31.0', "
            "@fake/gpu-b: '0.32.0')") in output
    assert "vllm_port: differs between the members of cluster 'r1' (@fake/gpu-a: 8000, @fake/gpu-b: 8100)" in output
    _changed_nothing(out)


# --- two HGX A100 servers serving DeepSeek-R1 --------------------------------------------------------------------


def _peer(name: str) -> str:
    """What `ip -o route get` is asked on `name`: the head's address, on the head the (only) follower's."""
    return ADDRESSES[FOLLOWER if name == HEAD else HEAD]


def _recorded(fact_name: str, name: str) -> list[str]:
    """A network command's recorded output as `name` prints it: the follower's is the head's with the two
    members' addresses swapped (10.10.0.11 <-> 10.10.0.12 on ib0, 10.20.0.11 <-> .12 on eno1)."""
    text = (RECORDED / f"{fact_name}.out").read_text()
    if name != HEAD:
        text = re.sub(r"(?<=\.0\.)1[12]\b", lambda m: "12" if m.group() == "11" else "11", text)
    return text.splitlines()


def _network_responses(name: str) -> dict[str, list[str]]:
    return {
        commands.ip_route_get(_peer(name)): _recorded("ip_route", name),
        commands.IP_ADDRS: _recorded("ip_addr", name),
        commands.IBSTAT: _recorded("ibstat", name),
        commands.PCI_ACS: _recorded("pci_acs", name),
    }


def _settings(tmp: Path, name: str) -> dict[str, Any]:
    data = {**R1, "vllm_api_key_file": str(tmp / "key"), "vllm_cluster_address": ADDRESSES[name]}
    return {**data, "vllm_cluster_head": True} if name == HEAD else data


def _plan(tmp: Path) -> tuple[ClusterPlan, dict[str, ServicePlan]]:
    """The cluster plan and each member's service, as deploy.py plans them from these recorded hosts."""
    fake = make_fake_state([(name, fake_host_data(A100, "converged", {"fake_responses": _network_responses(name)}))
                            for name in ADDRESSES])
    members, instances = [], {}
    for name in ADDRESSES:
        target = fake.inventory.get_host(f"@fake/{name}")
        with ctx_state.use(fake), ctx_host.use(target):
            instances[name] = load_instances(_settings(tmp, name))
            settings = instances[name][0].settings
            facts = gather_host_facts(target, model_dir=settings.model_dir, ports=[settings.vllm_port])
            network = NetworkFacts(route=target.get_fact(fact.RouteTo, address=_peer(name)),
                                   addresses=target.get_fact(fact.InterfaceAddresses),
                                   ibstat=target.get_fact(fact.IbStat), acs=target.get_fact(fact.PciAcs))
        members.append(ClusterMember(f"@fake/{name}", settings, facts, ADDRESSES[name], network))
    cluster = build_cluster_plan(members)
    services = {}
    for member, name in zip(members, ADDRESSES, strict=True):
        key = "sk-plan-only-0123456789" if member.settings.vllm_require_api_key else None
        services[name] = build_host_plan(instances[name], member.facts, member.name, api_key=key,
                                         cluster=cluster).instances[0]
    return cluster, services


def _deploy_cluster(tmp: Path, installed: dict[str, str], running: bool = False,
                    ) -> tuple[subprocess.CompletedProcess, Path, ClusterPlan, dict[str, ServicePlan]]:
    """Plan, then deploy the two members; `installed`: what each member's installed-vLLM check prints;
    `running`: the members already run the cluster's unit (a re-deploy)."""
    cluster, services = _plan(tmp)
    hosts = {}
    for name, service in services.items():
        responses = {commands.installed_vllm(service.python): installed[name], **_network_responses(name),
                     **serving_responses(service)}
        for _peer_host, address, ports, _why in service.cluster.reach:  # the port probe: every peer's listener answers
            responses[f"connect {address} {' '.join(map(str, ports))}"] = [f"{port} ok" for port in ports]
        if running:  # pyinfra's SystemdStatus fact: `systemctl show --all --property Id --property SubState '*'`
            responses["--property SubState"] = [f"Id={service.unit}.service", "SubState=running"]
        hosts[name] = {**_settings(tmp, name), "fake_responses": responses}
    proc, out = _run(tmp, A100, hosts)
    return proc, out, cluster, services


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _lines_for(commands_txt: Path, unit: str, verb: str) -> list[str]:
    return [line for line in commands_txt.read_text().splitlines()
            if f"systemctl {verb}" in line and f"{unit}.service" in line]


@pytest.mark.parametrize("running", [False, True], ids=["fresh", "redeploy"])
def test_two_a100_servers_deploy_deepseek_r1_as_one_engine(tmp_path: Path, running: bool) -> None:
    cluster, _ = _plan(tmp_path)
    # What `python -m sizing fit --model deepseek-ai/DeepSeek-R1 --gpu A100-80GB --gpus 8 --nodes 2` prints.
    assert (cluster.tensor_parallel_size, cluster.pipeline_parallel_size, cluster.nnodes) == (8, 2, 2)
    assert (cluster.head, cluster.master_addr) == (f"@fake/{HEAD}", ADDRESSES[HEAD])

    proc, out, cluster, services = _deploy_cluster(tmp_path, {HEAD: VLLM, FOLLOWER: VLLM}, running)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert output.count(cluster.summary().splitlines()[0]) == 1, "planned once for both members"
    assert f"rank 1  @fake/{FOLLOWER} (headless)" in output
    head = services[HEAD]
    assert f"[@fake/{HEAD}] vLLM serving '{head.served_name}' (max_model_len {head.max_model_len})" in output

    hca = ",".join(port.name for port in parse_ibstat(_recorded("ibstat", HEAD)).active_infiniband)
    launcher = (ROOT / "remote" / LAUNCHER).read_bytes()
    for name, service in services.items():
        node = cluster.node(f"@fake/{name}")
        files = out / name / "files"
        unit = (files / service.unit_file.lstrip("/")).read_text()
        assert f"ExecStart={service.command_line}\n" in unit
        argv = shlex.split(service.command_line)
        assert argv[1] == f"{service.prefix}/{LAUNCHER}"
        assert (files / argv[1].lstrip("/")).read_bytes() == launcher, f"{name}: the launcher was not uploaded"
        assert _flag(argv, "--nnodes") == str(cluster.nnodes) == "2"
        assert _flag(argv, "--node-rank") == str(node.rank) == ("0" if name == HEAD else "1")
        assert _flag(argv, "--master-addr") == ADDRESSES[HEAD]
        assert _flag(argv, "--master-port") == str(cluster.master_port)
        assert _flag(argv, "--tensor-parallel-size") == str(cluster.tensor_parallel_size)
        assert _flag(argv, "--pipeline-parallel-size") == str(cluster.pipeline_parallel_size)
        assert ("--headless" in argv) == (name != HEAD)
        assert ("ExecStartPost=" in unit) == (name == HEAD), f"{name}: only the head waits for /health"
        assert "Restart=always\n" in unit and "Restart=on-failure" not in unit

        env = (files / service.env_file.lstrip("/")).read_text().splitlines()
        route = parse_ip_route_get(_recorded("ip_route", name))
        assert (route.dev, route.src) == ("ib0", ADDRESSES[name])
        assert f"VLLM_HOST_IP={ADDRESSES[name]}" in env
        assert f"NCCL_SOCKET_IFNAME={route.dev}" in env and f"GLOO_SOCKET_IFNAME={route.dev}" in env
        assert f"NCCL_IB_HCA={hca}" in env and not any(line.startswith("NCCL_IB_DISABLE") for line in env)
        assert f"VLLM_PORT={node.env['VLLM_PORT']}" in env

    # Each member starts once; running members are stopped first, and the ports are probed between the two.
    for name in (HEAD, FOLLOWER):
        lines = (out / name / "commands.txt").read_text().splitlines()
        starts = _lines_for(out / name / "commands.txt", head.unit, "restart")
        stops = _lines_for(out / name / "commands.txt", head.unit, "stop")
        assert len(starts) == 1 and ("--no-block" in starts[0]) == (name == HEAD), starts
        assert len(stops) == (1 if running else 0), stops
        listen = [i for i, line in enumerate(lines) if "systemd-run" in line and " listen " in line]
        connect = [i for i, line in enumerate(lines) if " connect " in line]
        assert len(listen) == 1 and connect and listen[0] < min(connect) and max(connect) < lines.index(starts[0])
        if running:
            assert lines.index(stops[0]) < listen[0]


def test_members_running_different_vllm_are_not_restarted_anywhere(tmp_path: Path) -> None:
    """A re-deploy over a running cluster where the follower's vLLM differs: the head is not even stopped."""
    proc, out, _, services = _deploy_cluster(tmp_path, {HEAD: VLLM, FOLLOWER: "vllm 0.31.0"}, running=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert "cluster r1: the members differ, so it was not (re)started on any member" in output, output[-6000:]
    assert f"installed vLLM differs: @fake/{HEAD}: {VLLM}, @fake/{FOLLOWER}: vllm 0.31.0" in output
    unit = services[HEAD].unit
    for name in ADDRESSES:
        commands_txt = out / name / "commands.txt"
        assert _lines_for(commands_txt, unit, "restart") == [], name
        assert _lines_for(commands_txt, unit, "stop") == [], name


def test_a_port_the_follower_cannot_reach_stops_the_start_everywhere_naming_it(tmp_path: Path) -> None:
    """The probe between the members fails (a firewall on the head): no member starts, the port is named."""
    cluster, services = _plan(tmp_path)
    blocked = cluster.master_port
    hosts = {}
    for name, service in services.items():
        responses = {commands.installed_vllm(service.python): VLLM, **_network_responses(name),
                     **serving_responses(service)}
        for _peer_host, address, ports, _why in service.cluster.reach:
            responses[f"connect {address} {' '.join(map(str, ports))}"] = [
                f"{port} {'Connection refused' if port == blocked and name == FOLLOWER else 'ok'}" for port in ports]
        hosts[name] = {**_settings(tmp_path, name), "fake_responses": responses}
    proc, out = _run(tmp_path, A100, hosts)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (f"cluster r1: @fake/{FOLLOWER} cannot reach its peers' ports" in output
            and f"@fake/{HEAD} ({ADDRESSES[HEAD]}) port(s) {blocked}: Connection refused -- the master port"
            in output), output[-4000:]
    for name in (HEAD, FOLLOWER):
        assert _lines_for(out / name / "commands.txt", services[name].unit, "restart") == [], name
