"""The quick start: a throwaway local server, bootstrapped by deploy.py, serving a tiny model.

Boots a fresh Debian 12 server (systemd-nspawn, real systemd and SSH), deploys
the locally built tiny model to it with vLLM's CPU build from the offline
wheelhouse, prints /v1/models and one completion, then removes the server
(`--keep` leaves it running until Enter is pressed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hostlab import Lab  # noqa: E402
from hostlab.deployrun import lab_host, lab_inventory, pyinfra_command  # noqa: E402


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the server until Enter is pressed")
    args = parser.parse_args()
    import subprocess

    with Lab() as lab:
        host = lab.add_host("demo")
        print(f"==> throwaway server {host.name} up at {host.ip}", flush=True)
        start = time.monotonic()
        command = pyinfra_command()
        with lab_inventory([lab_host(host)]) as env:
            print(f"==> VLLM_DEPLOY_LAB_INVENTORY={env['VLLM_DEPLOY_LAB_INVENTORY']} pyinfra "
                  f"{' '.join(command[1:])}", flush=True)
            code = subprocess.call(command, cwd=ROOT, env=env)
        if code != 0:
            print(f"==> deploy failed (exit {code})", file=sys.stderr)
            return code
        print(f"==> deployed and verified in {time.monotonic() - start:.0f}s", flush=True)
        base = f"http://{host.ip}:8000"
        with urllib.request.urlopen(f"{base}/v1/models", timeout=30) as response:
            print("==> GET /v1/models\n" + json.dumps(json.load(response), indent=2))
        completion = _post(f"{base}/v1/completions", {"model": "tiny", "prompt": "def main(", "max_tokens": 8})
        print("==> POST /v1/completions\n" + json.dumps(completion, indent=2))
        if args.keep:
            input(f"==> server {host.ip} kept (ssh -i {host.ssh_key} root@{host.ip}); Enter removes it ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
