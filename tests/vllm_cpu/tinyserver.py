"""A real vLLM OpenAI server on the tiny local model, on loopback, for tests.

Uses the controller vLLM venv (scripts/controller-vllm.sh) and the settings that make the CPU
build start reliably: explicit KV cache bytes (the default fraction is taken of NUMA node 0 only),
eager mode (skips ~11 s of compiling), one process less, vLLM's internal ports on loopback, no hub,
no usage stats, and TMPDIR/VLLM_CACHE_ROOT in a private directory instead of /tmp and ~/.cache.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from plan.service import AUTH_MIDDLEWARE, AUTH_SOURCE, CPU_EAGER_ENV
from tests.vllm_cpu.realparser import REPO_SCRIPTS, cache_dir, vllm_env

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
TINY_MODEL_MARKER = ".tiny-model-complete"
CPU_ARGS = ["--kv-cache-memory-bytes", "64M", "--enforce-eager", "--dtype", "float32", "--max-model-len", "1024"]
# What the plan renders for an eager CPU instance (TorchDynamo off), and no C++ compiler: this controller has
# one, a server usually has none (the lab's hosts neither), and a request that makes torch compile one then kills
# the engine ("InvalidCxxCompiler"). torch's inductor takes the compiler from CXX.
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", **CPU_EAGER_ENV, "CXX": "/nonexistent/no-c++-compiler-here"}


def tiny_model_dir() -> Path:
    return cache_dir() / "models" / "tiny-llama"


def ensure_tiny_model(python: Path, out: Path | None = None) -> Path:
    """Build the tiny model with scripts/build_tiny_model.py unless it is already complete (~5 s)."""
    out = out or tiny_model_dir()
    if not (out / TINY_MODEL_MARKER).is_file():
        with tempfile.TemporaryDirectory(prefix="tiny-model-") as tmp:
            proc = subprocess.run([str(python), str(REPO_SCRIPTS / "build_tiny_model.py"), str(out)],
                                  env=vllm_env(Path(tmp)), capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"build_tiny_model.py failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TinyServer:
    """One running server; `stop()` sends SIGTERM to its pid and waits."""

    proc: subprocess.Popen
    port: int
    log: Path
    api_key: str | None = None
    started_s: float = 0.0
    children: list[int] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)  # pids that needed SIGKILL in stop()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, path: str, body: dict | None = None, key: str | None = "default",
                timeout: float = 60) -> tuple[int, dict]:
        """(status, JSON body) of a GET (body None) or POST; key "default" sends the server's API key."""
        token = self.api_key if key == "default" else key
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"{}")
            except ValueError:
                return exc.code, {"raw": raw.decode(errors="replace")}

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM by pid, then SIGKILL (recorded in `forced`) after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.forced.append(self.proc.pid)
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in self.children:  # the engine process follows its parent; make sure of it
            deadline = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if alive(pid):
                self.forced.append(pid)
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours is gone for practical purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


def start_tiny_server(python: Path, model: Path, workdir: Path, served_name: str = "tiny",
                      api_key: str | None = None, ready_timeout: float = 240,
                      extra_args: tuple[str, ...] = (), env_changes: dict[str, str | None] | None = None
                      ) -> TinyServer:
    """Start the server on a free loopback port and wait until /health answers 200. `env_changes` sets (or, where
    None, removes) variables of the server's environment after CPU_ENV."""
    port = free_port()
    env = vllm_env(workdir) | CPU_ENV
    for name, value in (env_changes or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.pop("VLLM_API_KEY", None)
    cmd = [str(python), "-m", SERVER_MODULE, "--model", str(model), *CPU_ARGS,
           "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if api_key:
        # As the deployed unit: the key from the environment, the deploy's key check on every route from its
        # own directory on PYTHONPATH.
        env["VLLM_API_KEY"] = api_key
        asgi = workdir / "asgi"
        asgi.mkdir(exist_ok=True)
        (asgi / AUTH_SOURCE.name).write_text(AUTH_SOURCE.read_text())
        env["PYTHONPATH"] = str(asgi)
        cmd += ["--middleware", AUTH_MIDDLEWARE]
    log = workdir / "server.log"
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = TinyServer(proc=proc, port=port, log=log, api_key=api_key)
    while time.monotonic() - t0 < ready_timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode} before it was ready:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.base}/health", timeout=2) as resp:
                if resp.status == 200:
                    server.started_s = time.monotonic() - t0
                    server.children = _children(proc.pid)
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"vLLM not ready after {ready_timeout} s:\n{server.log_tail()}")
