"""One model across several nodes: which executor the target vLLM has, and each node's launch arguments.

Shared by `python -m sizing fit --nodes N` (which prints them) and the cluster plan (plan/cluster.py, which
renders them into units), so what the CLI shows is what a deploy starts.

vLLM 0.11.1 added its own multi-node executor to `vllm serve` (PR #23691, "Support MP Executor for multi
node distributed inference"): every node runs the same arguments plus `--nnodes N --node-rank R
--master-addr HEAD --master-port P`; rank 0 serves the API, the others add `--headless`. Before it, several
nodes meant a Ray cluster: `ray start --head --port P` on the head, `ray start --address HEAD:P` on the
others, and `--distributed-executor-backend ray` on the one `vllm serve`, on the head.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizing.versions import Version, parse_version

MP_MULTINODE_SINCE: Version = (0, 11, 1)
# vLLM's internal ports (TCPStore, ZMQ message queues) are taken upward from VLLM_PORT when it is set, so a
# cluster pins them to a known range that preflight can check free and a firewall can open.
INTERNAL_PORT_SPAN = 32


def executor_for(vllm_version: str) -> str:
    """'mp' (vLLM's own multi-node executor) from 0.11.1, else 'ray'."""
    return "mp" if parse_version(vllm_version) >= MP_MULTINODE_SINCE else "ray"


def internal_ports(master_port: int) -> range:
    """VLLM_PORT's range: vLLM's own ports, just above the master port."""
    return range(master_port + 1, master_port + 1 + INTERNAL_PORT_SPAN)


@dataclass(frozen=True)
class NodeLaunch:
    """What one node runs: `serve_args` appended to the shared serve arguments (None: no vLLM process on a
    Ray follower), `ray_start` the Ray daemon's argv (None with the mp executor)."""

    rank: int
    head: bool
    serve_args: tuple[str, ...] | None
    ray_start: tuple[str, ...] | None = None


def node_launches(nnodes: int, master_addr: str, master_port: int, vllm_version: str,
                  node_addresses: tuple[str, ...] | None = None) -> tuple[NodeLaunch, ...]:
    """Rank 0 (the head) first. `node_addresses[r]` is the address Ray advertises for rank r (Ray only)."""
    if nnodes < 2:
        return (NodeLaunch(0, True, ()),)
    if executor_for(vllm_version) == "mp":
        common = ("--nnodes", str(nnodes), "--master-addr", master_addr, "--master-port", str(master_port))
        return tuple(NodeLaunch(rank, rank == 0, (*common, "--node-rank", str(rank), *(("--headless",) * bool(rank))))
                     for rank in range(nnodes))
    launches = []
    for rank in range(nnodes):
        own = ("--node-ip-address", node_addresses[rank]) if node_addresses else ()
        if rank == 0:
            ray = ("ray", "start", "--head", f"--port={master_port}", *own, "--block")
            launches.append(NodeLaunch(0, True, ("--distributed-executor-backend", "ray"), ray))
        else:
            ray = ("ray", "start", f"--address={master_addr}:{master_port}", *own, "--block")
            launches.append(NodeLaunch(rank, False, None, ray))
    return tuple(launches)
