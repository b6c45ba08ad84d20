"""bench.py's host commands, run for real here: vLLM's own `vllm bench serve` (CPU build) against a real tiny
server on loopback, through the launcher, then the report from its real result files.

The exact shell lines bench.py sends (bench.command: prepare, one per level, cleanup) run under bash on
this machine with the controller venv's Python standing in for the instance's. The server requires an
API key, read by the level's shell from a 0600 header file as on a host. The base URL uses a name that
does not resolve, mapped to 127.0.0.1 by the launcher's --resolve (as the gateway's name is on a host).
The report's counts are checked against the server's own /metrics over the run. The gateway's path
is run too: TLS (a self-signed certificate for a name that does not resolve, in front of the server)
checked through SSL_CERT_FILE, which must fail without it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.command import (
    Target,
    check_workdir,
    cleanup_command,
    level_command,
    prepare_command,
    vllm_bench_args,
)
from bench.report import Slo, level_from_result, write_report
from tests.openai_conformance import metric
from tests.vllm_cpu.realparser import require_controller_python
from tests.vllm_cpu.tinyserver import TinyServer, ensure_tiny_model

pytestmark = pytest.mark.vllm

SERVED = "tiny"
LEVELS = (1, 2)
PROMPTS = 6
INPUT_LEN, OUTPUT_LEN = 32, 8
NAME = "bench-target.invalid"  # never resolves: only the launcher's --resolve makes it reachable
TLS_NAME = "bench-gw.invalid"


@dataclass(frozen=True)
class LocalSetup:
    """What level_command reads of a HostPlan's setup: a venv whose Python is the controller's vLLM venv."""

    python: str
    runtime: str = "venv"
    docker_image: str | None = None


@dataclass(frozen=True)
class LocalHost:
    """What level_command reads of a HostPlan: its setup and the key header file."""

    setup: LocalSetup
    key_header_file: str


def _bash(command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout)


def _counter(server: TinyServer, name: str) -> float:
    """A metric (counter or gauge) summed over its labels, from the server's own /metrics."""
    return metric(lambda: http.client.HTTPConnection("127.0.0.1", server.port, timeout=30), server.api_key, name)


@pytest.fixture(scope="module")
def server(tiny_server: TinyServer) -> TinyServer:
    """The package's shared server (tests/vllm_cpu/conftest.py)."""
    return tiny_server


@pytest.fixture(scope="module")
def sweep(server: TinyServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the sweep as bench.py does; keep the commands, results and the server's counters around it."""
    tmp = tmp_path_factory.mktemp("bench")
    header = tmp / "api-key.header"
    header.touch(mode=0o600)
    header.write_text(f"Authorization: Bearer {server.api_key}\n")
    local = LocalHost(LocalSetup(python=str(require_controller_python())), key_header_file=str(header))
    model = Path(ensure_tiny_model(require_controller_python()))
    target = Target(kind="instance", name="vllm", url=f"http://{NAME}:{server.port}", served_name=SERVED,
                    tokenizer=str(model), resolve=f"{NAME}:{server.port}:127.0.0.1")
    before = {m: _counter(server, m) for m in ("vllm:request_success_total", "vllm:generation_tokens_total")}
    prepared = _bash(prepare_command())
    assert prepared.returncode == 0, prepared.stderr
    workdir = check_workdir(prepared.stdout.strip())
    commands, results = [prepare_command()], []
    try:
        for level in LEVELS:
            args = vllm_bench_args(target, level, PROMPTS, INPUT_LEN, OUTPUT_LEN, workdir)
            command = level_command(local, target, workdir, level, args)  # type: ignore[arg-type]
            commands.append(command)
            run = _bash(command)
            assert run.returncode == 0, f"level {level} failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
            results.append(json.loads(run.stdout))
        files = sorted(p.name for p in Path(workdir).iterdir())
    finally:
        commands.append(cleanup_command(workdir))
        assert _bash(commands[-1]).returncode == 0
    after = {m: _counter(server, m) for m in before}
    report = write_report(tmp / "report", {"deployment": "vllm", "served_name": SERVED}, results,
                          Slo(ttft_ms=60_000, itl_ms=60_000))
    return {"commands": commands, "results": results, "files": files, "workdir": workdir, "report": report,
            "delta": {m: after[m] - before[m] for m in before}}


def test_every_request_completed_at_each_level(sweep: dict) -> None:
    levels = [level_from_result(r) for r in sweep["results"]]
    assert [level.concurrency for level in levels] == list(LEVELS)
    for level in levels:
        assert (level.prompts, level.completed, level.failed) == (PROMPTS, PROMPTS, 0)
        assert level.total_output_tokens == PROMPTS * OUTPUT_LEN  # --ignore-eos: exactly the asked length
        assert level.request_throughput > 0 and level.p("ttft", 95) > 0 and level.p("itl", 95) > 0


def test_result_files_are_where_the_command_put_them(sweep: dict) -> None:
    assert {"bench_serve.py", "c1.json", "c2.json", "c1.log", "c2.log"} <= set(sweep["files"])
    assert not Path(sweep["workdir"]).exists(), "cleanup left the work directory"
    assert all(r["bench_client_vllm_version"] for r in sweep["results"])  # the launcher's --metadata


def test_report_counts_match_the_servers_own_metrics(sweep: dict) -> None:
    out = sweep["report"]
    report = json.loads((out / "report.json").read_text())
    completed = sum(level["completed"] for level in report["levels"])
    output_tokens = sum(level["total_output_tokens"] for level in report["levels"])
    assert completed == sweep["delta"]["vllm:request_success_total"] == len(LEVELS) * PROMPTS
    assert output_tokens == sweep["delta"]["vllm:generation_tokens_total"]
    assert report["best_concurrency"] == max(LEVELS)
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_key_is_in_no_command_and_no_file(sweep: dict, server: TinyServer) -> None:
    assert server.api_key
    for command in sweep["commands"]:
        assert server.api_key not in command
    assert all(server.api_key not in json.dumps(r) for r in sweep["results"])
    for path in sweep["report"].rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md"):
            assert server.api_key not in path.read_text()


class TlsProxy:
    """A TLS front for the server on a loopback port (the gateway's role), in a thread of its own."""

    def __init__(self, cert: Path, key: Path, upstream: int):
        self.upstream = upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def tls_runs(server: TinyServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One level through the TLS front with its certificate given (as bench.py does), one without."""
    tmp = tmp_path_factory.mktemp("bench-tls")
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
                           str(key), "-out", str(cert), "-subj", f"/CN={TLS_NAME}", "-addext",
                           f"subjectAltName=DNS:{TLS_NAME}"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    header = tmp / "api-key.header"
    header.touch(mode=0o600)
    header.write_text(f"Authorization: Bearer {server.api_key}\n")
    local = LocalHost(LocalSetup(python=str(require_controller_python())), key_header_file=str(header))
    proxy = TlsProxy(cert, key, server.port)
    runs = {}
    try:
        for checked in (True, False):
            target = Target(kind="gateway", name="gateway", url=f"https://{TLS_NAME}:{proxy.port}", served_name=SERVED,
                            tokenizer=str(ensure_tiny_model(require_controller_python())),
                            resolve=f"{TLS_NAME}:{proxy.port}:127.0.0.1", ca_file=str(cert) if checked else None)
            workdir = check_workdir(_bash(prepare_command()).stdout.strip())
            try:
                args = vllm_bench_args(target, 2, 4, INPUT_LEN, OUTPUT_LEN, workdir)
                run = _bash(level_command(local, target, workdir, 2, args))
                log = Path(workdir, "c2.log").read_text() if Path(workdir, "c2.log").exists() else ""
            finally:
                _bash(cleanup_command(workdir))
            runs[checked] = (run, log)
    finally:
        proxy.stop()
    return runs


def test_through_tls_by_name_with_the_certificate_every_request_completes(tls_runs: dict) -> None:
    run, log = tls_runs[True]
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{log[-3000:]}"
    level = level_from_result(json.loads(run.stdout))
    assert (level.completed, level.failed, level.total_output_tokens) == (4, 0, 4 * OUTPUT_LEN)


def test_through_tls_without_the_certificate_nothing_completes(tls_runs: dict) -> None:
    run, log = tls_runs[False]
    if run.returncode == 0:
        level = level_from_result(json.loads(run.stdout))
        assert level.completed == 0 and level.failed == 4
    assert "CERTIFICATE_VERIFY_FAILED" in run.stdout + log
