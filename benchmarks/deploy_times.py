"""Deploy timings on throwaway lab hosts (needs root and `scripts/setup.sh --lab`).

Prints: the cold deploy of one fresh host (install, model sync, start, verify),
a no-change re-run of it, and the time for three fresh hosts in one run divided
by the time for one. Run: .venv/bin/python benchmarks/deploy_times.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hostlab import Lab  # noqa: E402
from hostlab.deployrun import lab_host, run_pyinfra  # noqa: E402


def timed(hosts, label: str) -> float:
    start = time.monotonic()
    result = run_pyinfra([lab_host(h) for h in hosts])
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"{label} failed:\n{result.output[-4000:]}")
    print(f"{label:<34} {elapsed:7.1f} s   (operations changed: {result.changed})", flush=True)
    return elapsed


def main() -> None:
    with Lab() as lab:
        one = lab.add_host("bench-1")
        cold = timed([one], "cold deploy, 1 host")
        timed([one], "no-change re-run, 1 host")
        one.kill()
        three = [lab.add_host(f"bench-3-{i}") for i in range(3)]
        fleet = timed(three, "cold deploy, 3 hosts in one run")
        print(f"{'3 hosts / 1 host':<34} {fleet / cold:7.2f} x")


if __name__ == "__main__":
    main()
