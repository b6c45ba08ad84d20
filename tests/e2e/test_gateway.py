"""Several instances behind the nginx gateway, on real test hosts with vLLM's CPU build.

One module, one story: host A runs the gateway and two instances of the tiny
model; host B joins with one more instance of it and one of a second model name.
Every route the running vLLM lists needs the key, on B's instance port and through the gateway; a body over
the limit, a stalled client and a key over its share of requests in flight are cut off at the gateway; the
official openai client's request mix goes through it. Then, under a client load loop through the gateway,
an instance's engine core is killed with SIGKILL (the gateway's access log shows the requests it re-sent;
systemd starts the instance again) and later every
instance is updated in a rolling restart: no request may fail. Finally the key
files are written again through a non-root SSH user with sudo and every output
pyinfra has (--diff, -vvv, --debug), while a watcher on each host looks for the
key in /tmp, /var/tmp and every process's argv; then it is searched for
everywhere it must not be.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator

import openai
import pytest

from hostlab import Lab, TestHost
from hostlab.deployrun import RunResult, lab_api_key
from hostlab.lab import SUDO_USER
from tests.e2e.engine import engine_core, main_pid
from tests.e2e.gatewaylab import GATEWAY_PORT, LoadLoop, Story
from tests.openai_conformance import ask, run_conformance, server_routes, unguarded_routes

pytestmark = pytest.mark.hosts

A_INSTANCES = [{"name": "a", "port": 8001}, {"name": "b", "port": 8002}]
# Tighter than the defaults (60 s, off), so a stalled client and a key over its share show within the module;
# the load loops below keep at most 4 requests of the key in flight.
LIMITS = {"vllm_gateway_client_timeout": 10, "vllm_gateway_key_concurrency": 8}
B_INSTANCES = [{"name": "c", "port": 8001}, {"name": "d", "port": 8003, "served_model_name": "tiny-chat"}]
ACCESS_LOG = "/var/log/nginx/vllm-vllm.access.log"
KEY_MAP_STAGED = "/etc/vllm/gateway/vllm/keys.conf"
KEY_HEADER = "/etc/vllm/api-key.header"


@pytest.fixture(scope="module")
def story(hostlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    a, b = hostlab.add_host("gw-a"), hostlab.add_host("gw-b")
    s = Story(a, b, tmp_path_factory.mktemp("gateway") / "tls.crt", a_data={"vllm_instances": A_INSTANCES, **LIMITS},
              b_data={"vllm_instances": B_INSTANCES})
    try:
        yield s
    finally:
        a.kill()
        b.kill()


def _listeners(host: TestHost) -> str:
    return host.run("ss -ltnH").stdout


def _started_at(host: TestHost, unit: str) -> str:
    return host.run(f"systemctl show -p ExecMainStartTimestampMonotonic --value {unit}").stdout.strip()


def test_two_instances_behind_the_gateway_on_one_host(story: Story) -> None:
    first = story.deploy(with_b=False)
    assert first.returncode == 0, first.failure()
    story.fetch_cert()
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
    # A write from inside the running service's sandbox is refused in tests/e2e/test_bootstrap.py.
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
    assert result.returncode == 0, result.failure()
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


def test_every_route_needs_the_key_on_the_gateway_and_on_a_remote_instance(story: Story) -> None:
    """The routes the running vLLM lists in its /openapi.json (from B's instance, which the network reaches),
    without the key and with a wrong one: refused by B's instance itself, and by the gateway on every path."""
    key = lab_api_key()

    def instance() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(story.b.ip, 8001, timeout=60)

    routes = server_routes(instance, key)
    assert unguarded_routes(instance, key, routes) == {}
    assert unguarded_routes(story.connection, key, routes, open_routes=set()) == {}
    # Bounded at the gateway: a body over vllm_gateway_max_body (16m by default) is refused before any instance.
    status, _ = ask(story.connection, "POST", "/v1/completions", key, b"x" * (17 << 20))
    assert status == 413


def _tls_socket(story: Story) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(story.cert))
    return context.wrap_socket(socket.create_connection((story.a.ip, GATEWAY_PORT), timeout=30),
                               server_hostname=story.a.ip)


def _closed_after(sock: ssl.SSLSocket) -> float:
    """Seconds until the gateway closes the connection without an answer."""
    started = time.monotonic()
    try:
        answer = sock.recv(4096)
    except ssl.SSLError:  # closed without TLS's close_notify
        answer = b""
    assert answer == b"", answer[:200]
    return time.monotonic() - started


def test_a_stalled_client_and_a_key_over_its_share_are_cut_off_at_the_gateway(story: Story) -> None:
    """vllm_gateway_client_timeout (10 s here): a request that stops halfway through its headers is dropped and
    logged as 408. vllm_gateway_key_concurrency (8 here): 8 requests of the key held open (headers sent, body
    pending) leave the 9th a 429, and the key's next request after they end passes."""
    key = lab_api_key()
    logged_before = int(story.a.run(f"wc -l < {ACCESS_LOG}").stdout)
    with _tls_socket(story) as stalled:
        stalled.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\n")
        waited = _closed_after(stalled)
    print(f"\nstalled client dropped after {waited:.1f} s")
    assert 5 < waited < 30, waited
    assert '"POST /v1/completions HTTP/1.1" 408 ' in story.a.run(f"tail -n +{logged_before + 1} {ACCESS_LOG}").stdout

    head = (f"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode()
    held = [_tls_socket(story) for _ in range(8)]
    try:
        for sock in held:
            sock.sendall(head)
        time.sleep(1)  # each has reached the location (and taken a slot) before the 9th asks
        over = story.request("POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2})
    finally:
        for sock in held:
            sock.close()
    assert over[0] == 429, over[:2]
    deadline = time.monotonic() + 15
    while (status := story.request("POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2})[0]
           ) != 200:
        assert status == 429 and time.monotonic() < deadline, f"HTTP {status} once the held requests ended"
        time.sleep(0.5)


def test_the_openai_clients_requests_through_the_gateway(story: Story) -> None:
    trust = ssl.create_default_context(cafile=str(story.cert))
    client = openai.OpenAI(base_url=f"https://{story.a.ip}:{GATEWAY_PORT}/v1", api_key=lab_api_key(),
                           http_client=openai.DefaultHttpxClient(verify=trust), max_retries=0, timeout=120)
    failed = run_conformance(client, "tiny", tool_parser=False)
    assert failed == [], "\n".join(failed)
    for unit, host in (("vllm-a", story.a), ("vllm-b", story.a), ("vllm-c", story.b)):
        assert host.run(f"systemctl show -p NRestarts --value {unit}").stdout.strip() == "0", f"{unit} restarted"


def _completions_logged(host: TestHost, after_line: int) -> list[tuple[str, list[str], list[str]]]:
    """(status, upstream addresses, upstream statuses) of each completion in the access log after a line."""
    log = host.run(f"tail -n +{after_line + 1} {ACCESS_LOG}").stdout
    found = re.findall(r'"POST /v1/completions HTTP/[\d.]+" (\d{3}) \d+ upstream=(.+?) upstream_status=(.+?) time=',
                       log)
    return [(status, addrs.split(", "), codes.split(", ")) for status, addrs, codes in found]


def test_an_engine_core_killed_under_load_fails_no_request(story: Story) -> None:
    """SIGKILL to vllm-a's engine core (not its API server): the requests it held get a 500 and are re-sent, the
    API server exits 0 and systemd starts it again (Restart=always)."""
    before = main_pid(story.a, "vllm-a")
    engine = engine_core(story.a, "vllm-a")
    logged_before = int(story.a.run(f"wc -l < {ACCESS_LOG}").stdout)
    with LoadLoop(story, requests=300) as loop:
        loop.wait_for(40)
        killed_at = time.monotonic()
        story.a.run(f"kill -9 {engine}")
    assert loop.done == 300
    # The gateway re-sent what hit the dead engine: such a request names two upstreams, the killed one first
    # (500 from its API server while the engine was gone, or 502 once it closed), and it still ended 200.
    completions = _completions_logged(story.a, logged_before)
    retried = [c for c in completions if len(c[1]) > 1]
    assert len(completions) == 300, f"{len(completions)} completions logged, expected 300"
    assert any(status == "200" and addrs[0] == "127.0.0.1:8001" and codes[0] in ("500", "502")
               for status, addrs, codes in retried), \
        f"no request was retried after the kill ({len(loop.failures)} failed): {retried[:5]} {loop.failures[:3]}"
    print(f"engine core kill -9: {len(retried)} of 300 requests re-sent by the gateway, e.g. {retried[0]}")
    assert loop.failures == [], loop.failures[:5]
    deadline = time.monotonic() + 180
    while (main_pid(story.a, "vllm-a") in (0, before)
           or story.a.run("systemctl is-active vllm-a", check=False).stdout.strip() != "active"):
        assert time.monotonic() < deadline, "vllm-a was not started again within 180 s of its engine's death"
        time.sleep(1)
    print(f"vllm-a active again {time.monotonic() - killed_at:.0f} s after the kill")
    check = story.deploy(script="verify.py")
    assert check.returncode == 0, check.failure(5000)
    assert "vllm-a: verify" in check.output and main_pid(story.a, "vllm-a") != before


def test_rolling_update_fails_no_request(story: Story) -> None:
    started = {unit: _started_at(story.a, unit) for unit in ("vllm-a", "vllm-b")}
    story.overrides = {"vllm_max_num_seqs": 16}
    result_box: list[RunResult] = []
    deploy = threading.Thread(target=lambda: result_box.append(story.deploy()))
    # Two clients keep requests in flight through every restart. With four, each of the four restarts took ~80 s
    # on two cores: the starting vLLM competes for them with the instances serving the load.
    with LoadLoop(story, requests=100_000, clients=2) as loop:
        loop.wait_for(20)
        deploy.start()
        deploy.join(timeout=1500)
        loop.stop.set()
    result = result_box[0]
    assert result.returncode == 0, result.failure()
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
    assert again.returncode == 0, again.failure(5000)
    assert again.changed == 0, again.output[-5000:]


# Runs on a host as root: every few milliseconds, every file under /tmp and /var/tmp (new or changed) and every
# process's argv is searched for the key (read from a 0600 file, never from argv); each find is one line.
LEAK_WATCH = r"""
import os, stat, sys, time
key = open("/root/.leakwatch-key", "rb").read().strip()
checked, reported, ticks = {}, set(), 0
def report(what):
    if what not in reported:
        reported.add(what)
        print("LEAK " + what, flush=True)
print("watching", flush=True)
while not os.path.exists("/root/.leakwatch-stop"):
    ticks += 1
    for top in ("/tmp", "/var/tmp"):
        for where, _, names in os.walk(top):
            for name in names:
                path = os.path.join(where, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode) or checked.get(path) == (st.st_mtime_ns, st.st_size):
                        continue
                    with open(path, "rb") as handle:
                        data = handle.read(1 << 20)
                except OSError:
                    continue
                checked[path] = (st.st_mtime_ns, st.st_size)
                if key in data:
                    report(f"file {path} mode {stat.S_IMODE(st.st_mode):o} uid {st.st_uid}")
    for pid in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read() if pid.isdigit() else b""
        except OSError:
            continue
        if key in argv:
            report(f"argv of pid {pid}: {argv.split(chr(0).encode())[0].decode(errors='replace')}")
    time.sleep(0.005)
print(f"stopped after {ticks} rounds", flush=True)
"""


class LeakWatch:
    """LEAK_WATCH running on each host (a transient unit) for the duration of a `with` block."""

    def __init__(self, hosts: list[TestHost], key: str):
        self.hosts, self.key, self.findings = hosts, key, {}

    def __enter__(self) -> LeakWatch:
        for host in self.hosts:
            # The key goes in on stdin, into a root-only file outside the searched directories.
            subprocess.run(host.ssh_argv("umask 077 && rm -f /root/.leakwatch-stop && cat > /root/.leakwatch-key"),
                           input=self.key, text=True, check=True, timeout=30)
            host.run("cat > /root/leakwatch.py <<'EOF'\n" + LEAK_WATCH + "EOF\n")
            host.run("systemd-run --unit=leakwatch --property=Type=exec python3 /root/leakwatch.py")
        for host in self.hosts:
            deadline = time.monotonic() + 30
            while "watching" not in host.journal("leakwatch") and time.monotonic() < deadline:
                time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts:
            host.run("touch /root/.leakwatch-stop")
            deadline = time.monotonic() + 60
            while host.run("systemctl is-active leakwatch", check=False).stdout.strip() == "active" \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            self.findings[host.name] = host.run("journalctl --no-pager -o cat -u leakwatch").stdout
            host.run("rm -f /root/.leakwatch-key /root/.leakwatch-stop /root/leakwatch.py")


def _files_holding(host: TestHost, key: str, paths: str) -> list[str]:
    """Files under `paths` that contain the key (given to grep on stdin, not in its argv)."""
    argv = host.ssh_argv(f"grep -rlF -f - {paths} 2>/dev/null || true")
    return subprocess.run(argv, input=key, text=True, capture_output=True, check=True, timeout=120).stdout.split()


def test_the_key_is_in_no_command_line_journal_output_or_open_file(story: Story) -> None:
    key = lab_api_key()
    hosts = [story.a, story.b]
    # Make the next deploy write both kinds of secret file: the header files are gone (created anew), the staged
    # key map is stale (replaced, then the gateway reloads). Neither makes an instance restart.
    for host in hosts:
        host.run(f"rm -f {KEY_HEADER}")
    story.a.run(f"echo '# stale' > {KEY_MAP_STAGED}")
    started = {(host.name, unit): _started_at(host, unit) for host, unit in
               [(story.a, "vllm-a"), (story.a, "vllm-b"), (story.b, "vllm-c"), (story.b, "vllm-d")]}
    with LeakWatch(hosts, key) as watch:
        result = story.deploy(True, "deploy.py", "--diff", "-vvv", "--debug", sudo_user=True)
    output = result.output
    # Every place the key must not be, all checked before one assertion, so a failure lists them all.
    leaks = [f"pyinfra output of deploy {n}" for n, out in enumerate(story.outputs, 1) if key in out]
    for host in hosts:
        seen = watch.findings[host.name]
        assert "watching" in seen and "stopped after" in seen, seen
        leaks += [f"{host.name} during the deploy: {line}" for line in seen.splitlines() if line.startswith("LEAK")]
        if key in host.run("ps -eo args").stdout:
            leaks.append(f"{host.name}: ps argv")
        if key in host.run("journalctl --no-pager -o cat").stdout:
            leaks.append(f"{host.name}: the journal")
        leaks += [f"{host.name}: {path}" for path in _files_holding(host, key, "/tmp /var/tmp")]
        holders = _files_holding(host, key, "/etc /opt/vllm /srv /var/log")
        modes = {path: host.run(f"stat -c '%a %U' {path}").stdout.strip() for path in holders}
        leaks += [f"{host.name}: {path} is {mode}, not 600 root" for path, mode in modes.items() if mode != "600 root"]
        assert KEY_HEADER in holders, f"{host.name}: the key header file was written again"
    assert leaks == [], "the key leaked:\n" + "\n".join(leaks)

    assert result.returncode == 0, output[-6000:]
    # Through the sudo user, with every output on, and the files were really written again.
    assert "sudo -H" in output, "-vvv shows the commands, wrapped in sudo"
    for host in hosts:
        assert f"Accepted publickey for {SUDO_USER}" in host.journal("ssh", 2000), "logged in as the sudo user"
        assert f"[{host.ip}] Will create {KEY_HEADER} (secret: content not shown)" in output, output[-4000:]
    assert f"[{story.a.ip}] Will replace {KEY_MAP_STAGED} (secret: content not shown)" in output
    assert "nginx -t, then reload" in output and "gateway https://" in output
    for (name, unit), before in started.items():
        host = story.a if name == story.a.name else story.b
        assert _started_at(host, unit) == before, f"{unit} on {name} restarted for a key file that vLLM does not read"
    # The gateway's key map holds it as a regex (every other character escaped), also 0600.
    key_map = "/etc/nginx/vllm-vllm-keys.conf"
    assert key in re.sub(r"\\(.)", r"\1", story.a.run(f"cat {key_map}").stdout)
    assert story.a.run(f"stat -c %a {key_map}").stdout.strip() == "600"
