"""remote/vllm_serve.py with the real vLLM CPU build: the multi-node flags parse, and a cluster plan's two
nodes (both on loopback, TP 2 across them) serve one model: /v1/models and a completion through the head.

The argv and environment of each node come from plan.cluster (what a deploy renders into the units);
only VLLM_PORT differs here, because both "nodes" share one machine's ports. Processes are started in their
own session and stopped by their process group id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from facts.model import HostFacts
from facts.parsers import parse_ip_route_get
from plan.cluster import ClusterMember, ClusterPlan, NetworkFacts, build_cluster_plan
from plan.settings import load_settings
from tests.vllm_cpu.realparser import require_controller_python, vllm_env
from tests.vllm_cpu.tinyserver import ensure_tiny_model, free_port

pytestmark = pytest.mark.vllm

LAUNCHER = Path(__file__).resolve().parents[2] / "remote" / "vllm_serve.py"
START_TIMEOUT = 240


def test_help_lists_the_multinode_flags(tmp_path: Path) -> None:
    python = require_controller_python()
    proc = subprocess.run([str(python), str(LAUNCHER), "--help"], env=vllm_env(tmp_path), capture_output=True,
                          text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in ("--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless"):
        assert flag in proc.stdout, f"{flag} missing from the serve parser's help"


def test_a_bad_flag_is_refused_as_vllm_serve_refuses_it(tmp_path: Path) -> None:
    python = require_controller_python()
    proc = subprocess.run([str(python), str(LAUNCHER), "--model", "/nowhere", "--nnodes", "two"],
                          env=vllm_env(tmp_path), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 2 and "--nnodes" in proc.stderr


def _loopback_plan(model: Path, api_port: int, master_port: int) -> ClusterPlan:
    common = {"model": "tiny", "model_source": "local", "model_local_path": str(model), "model_dir": str(model),
              "vllm_device": "cpu", "vllm_cluster": "lo", "vllm_max_model_len": 1024, "vllm_port": api_port,
              "vllm_cluster_master_port": master_port, "vllm_served_model_name": "tiny",
              "vllm_cpu_kv_cache_memory": "64M", "vllm_cluster_address": "127.0.0.1"}
    facts = HostFacts(mem_total_bytes=8 << 30, cpu_count=2)
    route = parse_ip_route_get("local 127.0.0.1 dev lo table local src 127.0.0.1 uid 0 \\    cache <local> ")
    net = NetworkFacts(route=route)
    return build_cluster_plan([
        ClusterMember("node-a", load_settings({**common, "vllm_cluster_head": True}), facts, "127.0.0.1", net),
        ClusterMember("node-b", load_settings(common), facts, "127.0.0.1", net),
    ])


def _get(url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def test_two_nodes_on_loopback_serve_one_model_through_the_head() -> None:
    python = require_controller_python()
    model = ensure_tiny_model(python)
    api_port, master_port = free_port(), free_port()
    plan = _loopback_plan(model, api_port, master_port)
    assert (plan.executor, plan.tensor_parallel_size, plan.pipeline_parallel_size) == ("mp", 2, 1)
    service_argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                    "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(api_port),
                    *plan.fit["vllm_args"]]
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    short = Path(tempfile.mkdtemp(prefix="mn-"))  # vLLM's IPC socket paths must stay under 108 characters
    try:
        for host, _unit in plan.start_order:  # followers first, then the head
            node = plan.node(host)
            argv = list(plan.argv(host, service_argv, str(LAUNCHER.parent)))
            assert argv[1] == str(LAUNCHER) and ("--headless" in argv) != node.head
            work = short / host
            work.mkdir()
            env = {**vllm_env(work), "VLLM_ENABLE_V1_MULTIPROCESSING": "0", **node.env,
                   "VLLM_PORT": str(free_port())}  # one machine: each "node" needs its own internal ports
            assert env["VLLM_HOST_IP"] == "127.0.0.1" and env["GLOO_SOCKET_IFNAME"] == "lo"
            logs[host] = work / "vllm.log"
            with logs[host].open("w") as out:
                procs[host] = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work,
                                               start_new_session=True)
        base = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + START_TIMEOUT
        models: dict = {}
        while time.monotonic() < deadline:
            dead = [h for h, p in procs.items() if p.poll() is not None]
            assert not dead, f"{dead} exited:\n" + "\n".join(logs[h].read_text()[-3000:] for h in dead)
            try:
                status, models = _get(base + "/v1/models", timeout=5)
                if status == 200:
                    break
            except OSError:
                time.sleep(2)
        assert models.get("data"), "the head never answered /v1/models:\n" + logs[plan.head].read_text()[-3000:]
        assert [m["id"] for m in models["data"]] == ["tiny"]
        status, done = _get(base + "/v1/completions", {"model": "tiny", "prompt": "Hello", "max_tokens": 4})
        assert status == 200 and done["usage"]["completion_tokens"] == 4
        follower = next(n.host for n in plan.followers)
        assert "headless" in logs[follower].read_text(), "the follower did not run vLLM's headless executor"
        assert "Starting vLLM server" not in logs[follower].read_text(), "the follower started an API server"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(short, ignore_errors=True)
