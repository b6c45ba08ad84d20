"""Several instances behind the nginx gateway, on real test hosts with vLLM's CPU build.

One module, one story: host A runs the gateway and two instances of the tiny
model; host B joins with one more instance of it and one of a second model name.
Then, under a client load loop through the gateway, an instance is killed with
SIGKILL and later every instance is updated in a rolling restart: no request may
fail. Finally the API key is searched for everywhere it must not be.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import RunResult, lab_api_key, lab_host, run_pyinfra

pytestmark = pytest.mark.hosts

GATEWAY_PORT = 443
CERT = "/etc/vllm/gateway/vllm/tls.crt"
A_INSTANCES = [{"name": "a", "port": 8001}, {"name": "b", "port": 8002}]
B_INSTANCES = [{"name": "c", "port": 8001}, {"name": "d", "port": 8003, "vllm_served_model_name": "tiny-chat"}]


@dataclass
class Story:
    a: TestHost
    b: TestHost
    cert: Path
    outputs: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)

    def inventory(self, with_b: bool = True) -> list:
        hosts = [lab_host(self.a, vllm_gateway=True, vllm_instances=A_INSTANCES, **self.overrides)]
        if with_b:
            hosts.append(lab_host(self.b, vllm_instances=B_INSTANCES, **self.overrides))
        return hosts

    def deploy(self, with_b: bool = True, script: str = "deploy.py") -> RunResult:
        result = run_pyinfra(self.inventory(with_b), script)
        self.outputs.append(result.output)
        return result

    def connection(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.cert))
        return http.client.HTTPSConnection(self.a.ip, GATEWAY_PORT, context=context, timeout=120)

    def request(self, method: str, path: str, payload: dict | None = None, key: str | None = "lab"
                ) -> tuple[int, bytes, str]:
        """(status, body, content type) of one request through the gateway, TLS checked against its cert."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {lab_api_key() if key == 'lab' else key}"
        conn = self.connection()
        try:
            conn.request(method, path, json.dumps(payload) if payload is not None else None, headers)
            response = conn.getresponse()
            return response.status, response.read(), response.getheader("Content-Type") or ""
        finally:
            conn.close()


@pytest.fixture(scope="module")
def story(hostlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    a, b = hostlab.add_host("gw-a"), hostlab.add_host("gw-b")
    s = Story(a, b, tmp_path_factory.mktemp("gateway") / "tls.crt")
    try:
        yield s
    finally:
        a.kill()
        b.kill()


class LoadLoop:
    """Clients sending completions through the gateway, each failure recorded with its reason."""

    def __init__(self, story: Story, requests: int, clients: int = 4):
        self.story = story
        self.remaining = requests
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.done = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _take(self) -> bool:
        with self.lock:
            if self.remaining <= 0 or self.stop.is_set():
                return False
            self.remaining -= 1
            return True

    def _client(self) -> None:
        payload = {"model": "tiny", "prompt": "def main(", "max_tokens": 4}
        while self._take():
            try:
                status, body, _ = self.story.request("POST", "/v1/completions", payload)
                ok = status == 200 and json.loads(body)["choices"][0]["text"] is not None
                reason = f"HTTP {status}: {body[:200]!r}"
            except Exception as error:  # noqa: BLE001 - every failure counts, whatever its kind
                ok, reason = False, repr(error)
            with self.lock:
                self.done += 1
                if not ok:
                    self.failures.append(reason)

    def __enter__(self) -> LoadLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.stop.set()
        for thread in self.threads:
            thread.join(timeout=600)

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.done < count and time.monotonic() < deadline:
            time.sleep(0.2)


def _listeners(host: TestHost) -> str:
    return host.run("ss -ltnH").stdout


def _main_pid(host: TestHost, unit: str) -> int:
    return int(host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip())


def _started_at(host: TestHost, unit: str) -> str:
    return host.run(f"systemctl show -p ExecMainStartTimestampMonotonic --value {unit}").stdout.strip()


def test_two_instances_behind_the_gateway_on_one_host(story: Story) -> None:
    first = story.deploy(with_b=False)
    assert first.returncode == 0, first.output[-6000:]
    story.cert.write_text(story.a.run(f"cat {CERT}").stdout)
    listeners = _listeners(story.a)
    for port in (8001, 8002):
        assert f"127.0.0.1:{port} " in listeners, "behind a gateway on the same host: loopback only"
        assert f"0.0.0.0:{port} " not in listeners
    assert f"0.0.0.0:{GATEWAY_PORT} " in listeners
    hardening = story.a.run("systemctl show -p User,NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,"
                            "ReadOnlyPaths,ReadWritePaths vllm-a").stdout
    for setting in ("User=vllm", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "ReadOnlyPaths=/srv/models/tiny-llama", "ReadWritePaths=/opt/vllm/state"):
        assert setting in hardening, hardening
    denied = story.a.run("systemd-run --wait --pipe -q -p User=vllm -p ProtectSystem=strict "
                         "-p ReadOnlyPaths=/srv/models/tiny-llama touch /srv/models/tiny-llama/x; echo rc=$?").stdout
    assert "rc=0" not in denied, "the model is read-only for the service"
    assert "gateway https://" in first.output and "over 2 instance(s)" in first.output

    assert story.request("GET", "/v1/models", key=None)[0] == 401
    assert story.request("GET", "/v1/models", key="sk-wrong-key-0123456789")[0] == 401
    status, body, _ = story.request("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["tiny"]
    status, body, _ = story.request("POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2},
                                    key=None)
    assert status == 401, "the gateway checks the key before any instance sees the request"


def test_streaming_goes_through_the_gateway_unbuffered(story: Story) -> None:
    payload = {"model": "tiny", "prompt": "def main(", "max_tokens": 12, "stream": True}
    conn = story.connection()
    conn.request("POST", "/v1/completions", json.dumps(payload),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {lab_api_key()}"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.getheader("Transfer-Encoding") == "chunked", "streamed, not buffered into one body"
    events = [line for line in response.read().decode().splitlines() if line.startswith("data: ")]
    conn.close()
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 3, events


def test_a_second_host_joins_the_same_upstream(story: Story) -> None:
    result = story.deploy()
    assert result.returncode == 0, result.output[-6000:]
    conf = story.a.run("cat /etc/nginx/conf.d/vllm-vllm.conf").stdout
    for address in ("127.0.0.1:8001", "127.0.0.1:8002", f"{story.b.ip}:8001", f"{story.b.ip}:8003"):
        assert f"server {address} " in conf
    assert "least_conn;" in conf and "proxy_buffering off;" in conf
    assert "0.0.0.0:8001 " in _listeners(story.b), "a remote gateway reaches B's instances over the network"
    # B's instances check the key themselves.
    direct = http.client.HTTPConnection(story.b.ip, 8001, timeout=30)
    direct.request("GET", "/v1/models")
    assert direct.getresponse().status == 401
    direct.close()

    status, body, _ = story.request("GET", "/v1/models")
    assert status == 200 and sorted(m["id"] for m in json.loads(body)["data"]) == ["tiny", "tiny-chat"]
    status, body, _ = story.request("POST", "/v1/completions", {"model": "tiny-chat", "prompt": "x", "max_tokens": 2})
    assert status == 200 and json.loads(body)["model"] == "tiny-chat", body
    status, body, _ = story.request("POST", "/v1/completions", {"model": "nope", "prompt": "x", "max_tokens": 2})
    assert status == 404 and b"does not exist" in body
    for _ in range(24):
        assert story.request("POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2})[0] == 200
    log = story.a.run("cat /var/log/nginx/vllm-vllm.access.log").stdout
    used = set(re.findall(r"upstream=(\S+)", log))
    assert {"127.0.0.1:8001", "127.0.0.1:8002", f"{story.b.ip}:8001"} <= used, used


def test_kill_9_of_one_instance_fails_no_request(story: Story) -> None:
    before = _main_pid(story.a, "vllm-a")
    with LoadLoop(story, requests=300) as loop:
        loop.wait_for(40)
        story.a.run(f"kill -9 {before}")
    assert loop.done == 300
    assert loop.failures == [], loop.failures[:5]
    deadline = time.monotonic() + 120
    while _main_pid(story.a, "vllm-a") in (0, before) and time.monotonic() < deadline:
        time.sleep(1)
    check = story.deploy(script="verify.py")
    assert check.returncode == 0, check.output[-5000:]
    assert "vllm-a: verify" in check.output and _main_pid(story.a, "vllm-a") != before


def test_rolling_update_fails_no_request(story: Story) -> None:
    started = {unit: _started_at(story.a, unit) for unit in ("vllm-a", "vllm-b")}
    story.overrides = {"vllm_max_num_seqs": 16}
    result_box: list[RunResult] = []
    deploy = threading.Thread(target=lambda: result_box.append(story.deploy()))
    with LoadLoop(story, requests=100_000) as loop:
        loop.wait_for(20)
        deploy.start()
        deploy.join(timeout=1500)
        loop.stop.set()
    result = result_box[0]
    assert result.returncode == 0, result.output[-6000:]
    assert loop.failures == [], loop.failures[:5]
    assert loop.done > 100, "the load ran through the whole update"
    for unit in ("vllm-a", "vllm-b"):
        assert _started_at(story.a, unit) != started[unit], f"{unit} was not restarted"
        assert "--max-num-seqs 16" in story.a.run(f"systemctl cat {unit}").stdout
    output = result.output
    # One instance at a time across the deployment: each host's first instance, host after host, then each
    # host's second. pyinfra walks its active hosts as a set, so which host goes first is not fixed.
    restarts = re.findall(r"\[(\S+)\] vLLM serving '([\w-]+)'", output)
    hosts = [ip for ip, _ in restarts]
    assert len(restarts) == 4 and hosts[0] != hosts[1] and hosts[2:] == hosts[:2], restarts
    assert [model for ip, model in restarts if ip == story.a.ip] == ["tiny", "tiny"], restarts
    assert [model for ip, model in restarts if ip == story.b.ip] == ["tiny", "tiny-chat"], restarts


def test_a_rerun_changes_nothing(story: Story) -> None:
    again = story.deploy()
    assert again.returncode == 0, again.output[-5000:]
    assert again.changed == 0, again.output[-5000:]


def test_the_key_is_in_no_command_line_journal_output_or_open_file(story: Story) -> None:
    key = lab_api_key()
    for output in story.outputs:
        assert key not in output
    for host in (story.a, story.b):
        assert key not in host.run("ps -eo args").stdout
        assert key not in host.run("journalctl --no-pager -o cat").stdout
        holders = host.run(f"grep -rlF -- '{key}' /etc /opt/vllm /srv /var/log 2>/dev/null || true").stdout.split()
        assert holders, "the key is on the host somewhere"
        modes = {path: host.run(f"stat -c %a {path}").stdout.strip() for path in holders}
        assert set(modes.values()) == {"600"}, modes
    # The gateway's key map holds it as a regex (every other character escaped), also 0600.
    key_map = "/etc/nginx/vllm-vllm-keys.conf"
    assert key in re.sub(r"\\(.)", r"\1", story.a.run(f"cat {key_map}").stdout)
    assert story.a.run(f"stat -c %a {key_map}").stdout.strip() == "600"
