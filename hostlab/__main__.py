"""`python -m hostlab build|clean`: prepare the lab's cached root filesystem, or remove leftovers.

`build` is what a CI set-up step runs once per machine so that test sessions only re-extract;
`clean` removes what labs whose process died left behind (never touches a running lab).
"""

from __future__ import annotations

import argparse
import sys
import time

from . import rootfs
from .lab import _global_lock, clean_stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hostlab", description=__doc__)
    parser.add_argument("action", choices=["build", "clean"])
    args = parser.parse_args(argv)
    if args.action == "build":
        start = time.monotonic()
        path, built = rootfs.ensure_tarball()
        state = f"built in {built:.0f}s" if built else "already cached"
        print(f"{path} ({state}, {path.stat().st_size / 2**20:.0f} MiB, {time.monotonic() - start:.1f}s)")
    else:
        with _global_lock():
            cleaned = clean_stale()
        print(f"removed leftovers of {len(cleaned)} lab(s): {' '.join(cleaned) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
