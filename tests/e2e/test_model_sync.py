"""The local model source on a real host: an interrupted sync resumes to an identical, verified copy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hostlab import TestHost
from hostlab.deployrun import ROOT, TINY_MODEL, lab_host, lab_inventory, pyinfra_command, run_pyinfra
from tasks.model_files import MARKER, local_manifest

pytestmark = pytest.mark.hosts
PADDING_BYTES = 384 << 20


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    """The tiny model plus a large (valid safetensors) shard, so that a sync takes long enough to be cut off."""
    model = tmp_path / "big-model"
    shutil.copytree(TINY_MODEL, model)
    header = json.dumps({"padding": {"dtype": "U8", "shape": [PADDING_BYTES], "data_offsets": [0, PADDING_BYTES]}})
    header += " " * (-len(header) % 8)
    with open(model / "model-00002-of-00002.safetensors", "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header.encode())
        for _ in range(PADDING_BYTES >> 24):
            handle.write(os.urandom(1 << 24))
    return model


def host_checksums(host: TestHost, model_dir: str) -> str:
    listing = host.run(f"cd {model_dir} && find . -type f ! -name '.vllm-deploy-*' | sed 's|^./||' | sort "
                       "| xargs sha256sum").stdout
    return "\n".join(sorted(listing.splitlines())) + "\n"


def test_interrupted_sync_resumes_to_an_identical_copy(fresh_host, big_model: Path) -> None:
    host = fresh_host()
    entry = lab_host(host, model="big-model", model_local_path=str(big_model))
    model_dir = "/srv/models/big-model"
    with lab_inventory([entry]) as env:
        proc = subprocess.Popen(pyinfra_command("tests/e2e/model_only.py"), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 180
            size = 0
            while time.monotonic() < deadline and proc.poll() is None:
                out = host.run(f"stat -c %s {model_dir}/model-00002-of-00002.safetensors 2>/dev/null || echo 0",
                               check=False).stdout.strip()
                size = int(out or 0)
                if size > 8 << 20:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, "the sync finished before it could be interrupted"
            assert 0 < size < PADDING_BYTES, f"remote shard at {size} bytes"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    assert host.run(f"test -e {model_dir}/{MARKER}", check=False).returncode != 0, "no marker after a cut sync"

    resumed = run_pyinfra([entry], "tests/e2e/model_only.py")
    assert resumed.returncode == 0, resumed.failure(4000)
    expected = "\n".join(sorted(local_manifest(big_model).splitlines())) + "\n"
    assert host_checksums(host, model_dir) == expected
    assert host.run(f"cat {model_dir}/{MARKER}").stdout.strip()

    # A damaged copy (marker gone, a file truncated) is repaired; a complete one is left alone.
    host.run(f"rm {model_dir}/{MARKER} && truncate -s 100 {model_dir}/config.json")
    repaired = run_pyinfra([entry], "tests/e2e/model_only.py")
    assert repaired.returncode == 0, repaired.failure(4000)
    assert host_checksums(host, model_dir) == expected
    untouched = run_pyinfra([entry], "tests/e2e/model_only.py")
    assert untouched.returncode == 0 and untouched.changed == 0, untouched.output[-4000:]
