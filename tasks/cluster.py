"""Activate stage of a multi-node instance (plan/cluster.py): the members (re)start as one engine.

Every member runs the same operations in the same order (pyinfra runs each operation on every host
before the next), each doing its own part:
1. each member records what it runs: its installed vLLM and its model directory's manifest digest;
2. each member compares every member's record: when they differ the cluster is not (re)started anywhere,
   with the difference named (each host's stages check its own copy; this checks across the nodes);
3. the head stops, then the followers: one engine spans the nodes (a member restarted under a running head
   breaks it), and the probe below needs their ports;
4. the ports the members reach each other on are probed (remote/port_probe.py): every member listens on its
   own, every peer connects; a firewall in between fails the run here, named, instead of hanging the start;
5. the followers start: headless vLLM, waiting for the head's rendezvous;
6. the head starts and is verified: /health once every follower has joined, then /v1/models and a completion.
The cluster restarts when anything one member runs changed on any member, or when a member is not running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import gevent
from pyinfra import host
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, python

from facts import commands
from plan.quoting import sh, sh_join
from plan.service import ServicePlan
from remote.model_check import MARKER
from tasks import remote
from tasks.verify import restart_and_verify, unit_state

LAUNCHER_SOURCE = Path(__file__).resolve().parent.parent / "remote" / "vllm_serve.py"
PROBE_SOURCE = Path(__file__).resolve().parent.parent / "remote" / "port_probe.py"
PROBE_UNIT = "vllm-port-probe"
PROBE_SECONDS = 120
FOLLOWER_SETTLE_SECONDS = 5.0

# Per cluster, across every member's deploy (one process): what restarts it, and what each member runs.
_RESTART: dict[str, list[Callable[[], bool]]] = {}
_RECORDS: dict[str, dict[str, tuple[str, str]]] = {}
_FAILED: set[str] = set()  # clusters whose start failed on a member: the others do not go on alone


def launcher(plan: ServicePlan) -> OperationMeta:
    """remote/vllm_serve.py under the prefix: `vllm serve` without the console script (see its docstring)."""
    return files.put(
        name=f"{plan.unit}: serve launcher for cluster members",
        src=str(LAUNCHER_SOURCE),
        dest=plan.argv[1],
        user="root",
        group="root",
        mode="644",
    )


def _restart_needed(cluster: str) -> bool:
    return cluster not in _FAILED and any(check() for check in _RESTART.get(cluster, []))


def _failing(cluster: str, message: str) -> OperationError:
    _FAILED.add(cluster)
    return OperationError(message)


def _record(plan: ServicePlan) -> None:
    """This member's installed vLLM and model manifest digest, for the comparison across members."""
    assert plan.cluster is not None
    _, version = remote.run(commands.installed_vllm(plan.python))
    _, marker = remote.run(f"cat {sh(plan.model.host_dir + '/' + MARKER)} 2>/dev/null || true")
    record = (" ".join(version.stdout_lines).strip() or "none", " ".join(marker.stdout_lines).strip() or "none")
    _RECORDS.setdefault(plan.cluster.name, {})[host.name] = record


def _compare(plan: ServicePlan) -> None:
    """Refuse to start when the members would not run the same engine on the same weights."""
    assert plan.cluster is not None
    records = _RECORDS.get(plan.cluster.name, {})
    problems = []
    for index, what in enumerate(("installed vLLM", "model manifest (sha256 of its file list)")):
        values = {member: record[index] for member, record in sorted(records.items())}
        if len(set(values.values())) > 1:
            problems.append(f"{what} differs: " + ", ".join(f"{member}: {value}" for member, value in values.items()))
    if problems:
        name = plan.cluster.name
        raise _failing(name, f"cluster {name}: the members differ, so it was not (re)started on any member:\n  "
                       + "\n  ".join(problems) + "\n  re-run the deploy (each member's install and model stages "
                       "converge it), or remove the model directory where it differs")


def _stop(plan: ServicePlan) -> None:
    ok, output = remote.run(f"systemctl stop {sh(plan.unit + '.service')}")
    if not ok:
        raise OperationError(f"systemctl stop {plan.unit}.service failed: {' '.join(output.stderr_lines)}")


def _probe_listen(plan: ServicePlan) -> None:
    """Listen on this member's cluster ports in a transient unit, for the peers' connections (next operation)."""
    assert plan.cluster is not None
    argv = [plan.python, "-c", PROBE_SOURCE.read_text(), "listen", str(PROBE_SECONDS),
            *map(str, plan.cluster.listen_ports)]
    remote.run(f"systemctl stop {PROBE_UNIT}.service 2>/dev/null; systemctl reset-failed {PROBE_UNIT}.service "
               "2>/dev/null; true")
    ok, output = remote.run(f"systemd-run --quiet --collect --unit={PROBE_UNIT} "
                            f"--property=RuntimeMaxSec={PROBE_SECONDS} -- {sh_join(argv)}")
    if not ok:
        raise OperationError(f"the port probe could not listen: {' '.join(output.stderr_lines)}")


def _probe_connect(plan: ServicePlan) -> None:
    """Connect to every peer's ports this member needs; fail naming each port, its host and why it matters."""
    assert plan.cluster is not None
    problems = []
    for peer, address, ports, why in plan.cluster.reach:
        code = PROBE_SOURCE.read_text()
        for _ in range(4):  # the peer's listener may still be binding (python starting)
            _, output = remote.run(f"{sh_join([plan.python, '-c', code, 'connect', address, *map(str, ports)])} "
                                   "2>&1; true")
            results = dict(line.split(" ", 1) for line in output.stdout_lines if " " in line)
            failed = {port: reason for port, reason in results.items() if reason != "ok"}
            if results and not failed:
                break
            gevent.sleep(1)
        else:
            shown = ", ".join(f"{port}: {reason}" for port, reason in failed.items()) or "no answer"
            problems.append(f"{peer} ({address}) port(s) {shown} -- {why}")
    if problems:
        name = plan.cluster.name
        raise _failing(name, f"cluster {name}: {host.name} cannot reach its peers' ports, so the cluster would hang "
                       "at its rendezvous; open them between the members (e.g. in the firewall):\n  "
                       + "\n  ".join(problems))


def _probe_stop(plan: ServicePlan) -> None:
    remote.run(f"systemctl stop {PROBE_UNIT}.service 2>/dev/null; true")


def _start_follower(plan: ServicePlan) -> None:
    """(Re)start the headless member and check it runs: it has no API; the head's verify shows it joined."""
    service = sh(f"{plan.unit}.service")
    ok, output = remote.run(f"systemctl reset-failed {service} 2>/dev/null; systemctl restart {service}")
    if not ok:
        raise OperationError(f"systemctl restart {plan.unit}.service failed: {' '.join(output.stderr_lines)}")
    started = unit_state(plan.unit)
    deadline = time.monotonic() + FOLLOWER_SETTLE_SECONDS
    while time.monotonic() < deadline:
        gevent.sleep(1)
        state = unit_state(plan.unit)
        if state.get("ActiveState") != "active" or state.get("NRestarts") != started.get("NRestarts"):
            raise OperationError(f"{plan.unit}.service (cluster follower) did not stay up: "
                                 f"{state.get('ActiveState')}/{state.get('SubState')} ({state.get('Result')}); "
                                 f"see journalctl -u {plan.unit}.service")


def cluster_member(plan: ServicePlan, changes: list[OperationMeta], running: bool) -> OperationMeta:
    """The member's part of the cluster's (re)start; returns its start operation (the head's: the one that serves)."""
    assert plan.cluster is not None
    name, head = plan.cluster.name, plan.cluster.head
    _RESTART.setdefault(name, []).append((lambda: True) if not running else
                                         (lambda: any(op.did_change() for op in changes)))

    def when(role_applies: bool) -> Callable[[], bool]:
        return lambda: role_applies and _restart_needed(name)

    python.call(name=f"cluster {name}: record this member's vLLM and model manifest", function=_record, plan=plan,
                _if=when(True))
    python.call(name=f"cluster {name}: compare every member's vLLM and model manifest", function=_compare,
                plan=plan, _if=when(True))
    python.call(name=f"cluster {name}: stop the head (one engine spans the members)", function=_stop, plan=plan,
                _if=when(head and running))
    python.call(name=f"cluster {name}: stop the followers", function=_stop, plan=plan, _if=when(not head and running))
    python.call(name=f"cluster {name}: listen on this member's cluster ports (probe)", function=_probe_listen,
                plan=plan, _if=when(True))
    python.call(name=f"cluster {name}: reach every peer's cluster ports (probe)", function=_probe_connect,
                plan=plan, _if=when(True))
    python.call(name=f"cluster {name}: end the probe", function=_probe_stop, plan=plan, _if=when(True))
    follower = python.call(name=f"cluster {name}: start the followers", function=_start_follower, plan=plan,
                           _if=when(not head))
    start = python.call(name=f"cluster {name}: start the head once the followers run, and verify",
                        function=restart_and_verify, plan=plan, _if=when(head))
    return start if head else follower
