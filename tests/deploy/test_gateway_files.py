"""The gateway's rendered files, checked without a host: nginx config shape, the njs router's syntax, and
the limits on bad traffic (body size, slow clients, requests per key, the key on every path) in a real nginx."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Template

from plan.gateway import GatewayPlan, build_gateway_plan
from plan.settings import load_instances
from tests.plan.test_quoting import _free_port, _need, _wait_listening

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "gateway"


def _plan(models: int):
    gw = {"model": "tiny", "vllm_gateway": True, "vllm_instances": [{"name": "a", "port": 8001},
                                                                     {"name": "b", "port": 8002}]}
    # The other host accepts plain HTTP from the gateway in writing (the plan refuses it otherwise).
    other = {"model": "tiny", "vllm_backend_tls": False, "vllm_instances": [{"name": "c", "port": 8001}]
             + ([{"name": "d", "port": 8003, "served_model_name": "tiny-chat"}] if models > 1 else [])}
    members = [(n, load_instances(d)[0].settings, load_instances(d)) for n, d in (("gw", gw), ("10.0.0.2", other))]
    return build_gateway_plan(members[0][1], "gw", members)


def test_single_model_config_proxies_straight_to_one_upstream() -> None:
    g = _plan(1)
    conf = Template((TEMPLATES / "gateway.conf.j2").read_text()).render(g=g)
    assert conf.count("upstream vllm_vllm_") == 1 and "js_" not in conf
    assert "server 127.0.0.1:8001 max_fails=1 fail_timeout=10s;" in conf
    assert "server 10.0.0.2:8001 max_fails=1 fail_timeout=10s;" in conf
    assert "proxy_pass http://vllm_vllm_0;" in conf
    assert "proxy_next_upstream error timeout http_500 http_502 http_503 non_idempotent;" in conf
    assert "listen 443 ssl;" in conf and "include /etc/nginx/vllm-vllm-keys.conf;" in conf


def test_several_models_route_through_njs() -> None:
    g = _plan(2)
    conf = Template((TEMPLATES / "gateway.conf.j2").read_text()).render(g=g)
    assert "js_import vllm_vllm from /etc/nginx/njs/vllm-vllm.js;" in conf
    assert "js_content vllm_vllm.route;" in conf
    assert conf.count("location @vllm_vllm_") == 2 and conf.count("internal;") == 2


@pytest.mark.skipif(shutil.which("njs") is None, reason="the njs interpreter is not installed "
                    "(scripts/hostlab-deps.sh installs it)")
def test_router_script_parses_in_the_distributions_njs(tmp_path: Path) -> None:
    g = _plan(2)
    routes = {u.model: f"@{u.name}" for u in g.upstreams}
    script = Template((TEMPLATES / "route.js.j2").read_text()).render(
        g=g, routes=routes, model_lists=[f"/_vllm_models/{u.name}" for u in g.upstreams])
    (tmp_path / "route.js").write_text(script)
    (tmp_path / "main.js").write_text(f'import m from "{tmp_path}/route.js"; console.log(typeof m.route);\n')
    result = subprocess.run(["njs", str(tmp_path / "main.js")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "function", result.stdout + result.stderr


# ---- the limits on bad traffic, through a real nginx ------------------------------------------

# 256 characters, the longest key vllm_api_key takes: "Bearer <key>" is over the 255 bytes limit_conn keeps.
KEY = "sk-" + "k" * 253
WRONG = "sk-" + "w" * 253


def _served_plan(upstream_port: int, gateway_port: int, models: int = 1, **settings: Any) -> GatewayPlan:
    """A gateway in front of loopback upstreams (the second model's instance need not answer)."""
    instances = [{"name": "a", "port": upstream_port}]
    if models > 1:
        instances.append({"name": "b", "port": _free_port(), "served_model_name": "tiny-chat"})
    data = {"model": "tiny", "vllm_gateway": True, "vllm_gateway_tls": False, "vllm_gateway_port": gateway_port,
            "vllm_api_key": KEY, "vllm_instances": instances, **settings}
    members = [("gw", load_instances(data)[0].settings, load_instances(data))]
    return build_gateway_plan(members[0][1], "gw", members)


def _local_config(g: GatewayPlan, directory: Path) -> Path:
    """The rendered gateway, its key map and an nginx.conf around them, all under `directory`.

    Live paths point into `directory` and the server listens on loopback only. The distribution's njs
    module is not on the controller, so the model router is stood in for by `try_files` to the first
    model's named location: the same internal redirect (ngx_http_named_location) njs's internalRedirect makes.
    """
    conf = Template((TEMPLATES / "gateway.conf.j2").read_text()).render(g=g)
    pattern = re.sub(r"([^A-Za-z0-9_])", r"\\\1", KEY)  # as tasks/gateway.py escapes it
    (directory / "keys.conf").write_text(Template((TEMPLATES / "keys.conf.j2").read_text()).render(
        g=g, key_pattern=pattern))
    swaps = [(f"/var/log/nginx/vllm-{g.deployment}.access.log", str(directory / "access.log")),
             (f"listen {g.port};", f"listen 127.0.0.1:{g.port};")]
    if g.require_api_key:
        swaps.append((g.live_files["keys.conf"], str(directory / "keys.conf")))
    if g.routes_by_model:
        swaps += [(f"js_import vllm_{g.ident} from {g.live_files['route.js']};", ""),
                  (f"js_content vllm_{g.ident}.route;", f"try_files /nonexistent @{g.upstreams[0].name};")]
    for live, local in swaps:
        assert conf.count(live) == 1, live
        conf = conf.replace(live, local)
    (directory / "gateway.conf").write_text(conf)
    temp = "\n".join(f"  {kind}_temp_path {directory}/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = directory / "nginx.conf"
    main.write_text(f"pid {directory}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n{temp}\n"
                    f"  include {directory}/gateway.conf;\n}}\n")
    return main


def _nginx_test(nginx: str, main: Path) -> subprocess.CompletedProcess:
    return subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-p", str(main.parent), "-c", str(main)],
                          capture_output=True, text=True, timeout=30)


@contextmanager
def _nginx_serving(main: Path, port: int) -> Iterator[Path]:
    """nginx in the foreground on `main` until the block ends; yields the file its error log goes to."""
    nginx = _need("nginx", "nginx")
    check = _nginx_test(nginx, main)
    assert check.returncode == 0, check.stderr
    errors = main.parent / "error.log"
    with errors.open("w") as sink:
        proc = subprocess.Popen([nginx, "-e", "stderr", "-p", str(main.parent), "-c", str(main), "-g", "daemon off;"],
                                stdout=sink, stderr=sink)
    try:
        _wait_listening(port, proc, errors.read_text)
        yield errors
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _Upstream(ThreadingHTTPServer):
    """A stand-in instance on loopback: answers at once, except `/v1/hold`, which waits until released."""

    daemon_threads = True

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.seen: list[str] = []  # the paths of the requests that reached it
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Upstream

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append(self.path)
        if self.path == "/v1/stream":
            return self._stream()
        if self.path == "/v1/hold":
            self.server.arrived.set()
            self.server.release.wait(timeout=3)
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """Server-sent events with a pause longer than the gateway's client timeout between two tokens."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, event in enumerate((b"data: one\n\n", b"data: two\n\n")):
            if index:
                time.sleep(2.5)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        pass


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def _request(port: int, method: str, path: str, key: str | None = KEY, body: bytes | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


LIMITS = {"vllm_gateway_max_body": "1k", "vllm_gateway_client_timeout": 1, "vllm_gateway_key_concurrency": 1}


@pytest.mark.parametrize("settings", [
    {}, LIMITS, {"vllm_gateway_max_body": "1G", "vllm_gateway_client_timeout": 3600,
                 "vllm_gateway_key_concurrency": 65_535},
    {"vllm_gateway_max_body": "512M", "vllm_gateway_key_concurrency": 8, "vllm_require_api_key": False},
], ids=["defaults", "smallest", "largest", "no-key"])
@pytest.mark.parametrize("models", [1, 2], ids=["one-model", "routed"])
def test_the_limits_pass_nginx_t(tmp_path: Path, settings: dict[str, Any], models: int) -> None:
    nginx = _need("nginx", "nginx")
    g = _served_plan(_free_port(), _free_port(), models, **settings)
    check = _nginx_test(nginx, _local_config(g, tmp_path))
    assert check.returncode == 0, check.stderr
    conf = (tmp_path / "gateway.conf").read_text()
    buffer = {"16m": "16m", "1k": "1k", "1g": "1024m", "512m": "512m"}[g.max_body]
    assert f"client_max_body_size {g.max_body};" in conf and f"client_body_buffer_size {buffer};" in conf
    assert all(f"{name} {g.client_timeout}s;" in conf
               for name in ("client_header_timeout", "client_body_timeout", "send_timeout"))
    concurrency = settings.get("vllm_gateway_key_concurrency", 0)
    assert conf.count(f"limit_conn vllm_vllm_keys {concurrency};") == (1 if concurrency else 0)
    assert conf.count("limit_conn_zone ") == (1 if concurrency else 0)


@pytest.mark.parametrize("models", [1, 2], ids=["one-model", "routed"])
def test_a_body_over_the_limit_gets_413(tmp_path: Path, upstream: _Upstream, models: int) -> None:
    port = _free_port()
    g = _served_plan(upstream.server_address[1], port, models, **LIMITS)
    with _nginx_serving(_local_config(g, tmp_path), port):
        assert _request(port, "POST", "/v1/completions", body=b"x" * 1025)[0] == 413
        status, _, body = _request(port, "POST", "/v1/completions", body=b"x" * 1024)
    assert status == 200 and json.loads(body) == {"path": "/v1/completions"}
    assert upstream.seen == ["/v1/completions"], "the body over the limit must not reach an instance"


@pytest.mark.parametrize("sent", [
    f"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\n",
    f"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n{{",
], ids=["header", "body"])
def test_a_client_stalling_in_its_request_is_cut_off_as_408(tmp_path: Path, upstream: _Upstream, sent: str) -> None:
    port = _free_port()
    g = _served_plan(upstream.server_address[1], port, 1, **LIMITS)
    with _nginx_serving(_local_config(g, tmp_path), port), socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(sent.encode())
        client.settimeout(10)
        started = time.monotonic()
        answer = client.recv(4096)
        waited = time.monotonic() - started
    # nginx answers a read timeout by closing the connection; the 408 is in its access log.
    assert answer == b"" and 0.5 < waited < 5, answer
    assert '"POST /v1/completions HTTP/1.1" 408 ' in (tmp_path / "access.log").read_text()
    assert upstream.seen == []


def test_a_stream_waiting_longer_than_the_client_timeout_for_its_next_token_goes_on(tmp_path: Path,
                                                                                    upstream: _Upstream) -> None:
    port = _free_port()
    g = _served_plan(upstream.server_address[1], port, 1, **LIMITS)
    with _nginx_serving(_local_config(g, tmp_path), port):
        status, _, body = _request(port, "POST", "/v1/stream", body=b"{}")
    assert status == 200 and body == b"data: one\n\ndata: two\n\n"


@pytest.mark.parametrize("models", [1, 2], ids=["one-model", "routed"])
def test_every_path_needs_the_key(tmp_path: Path, upstream: _Upstream, models: int) -> None:
    port = _free_port()
    g = _served_plan(upstream.server_address[1], port, models, **LIMITS)
    paths = ["/", "/metrics", "/v1/models", "/v1/completions", f"/_vllm_models/{g.upstreams[0].name}"]
    with _nginx_serving(_local_config(g, tmp_path), port):
        refused = {(path, key): _request(port, "GET", path, key) for path in paths for key in (None, WRONG)}
        good = {path: _request(port, "GET", path)[:2] for path in paths}
    for (path, key), (status, headers, body) in refused.items():
        assert status == 401, (path, key)
        assert headers.get("WWW-Authenticate") == 'Bearer realm="vllm"' and b"authentication_error" in body
    assert good["/v1/models"][0] == 200 and "WWW-Authenticate" not in good["/v1/models"][1]
    assert good["/"][0] == good["/metrics"][0] == 404
    if models > 1:
        assert good[f"/_vllm_models/{g.upstreams[0].name}"][0] == 404  # internal: not reachable from outside
    assert sorted(upstream.seen) == ["/v1/completions", "/v1/models"], "only requests with the key reach an instance"


@pytest.mark.parametrize("models", [1, 2], ids=["one-model", "routed"])
def test_requests_over_the_key_concurrency_get_429(tmp_path: Path, upstream: _Upstream, models: int) -> None:
    port = _free_port()
    g = _served_plan(upstream.server_address[1], port, models, **LIMITS)
    with _nginx_serving(_local_config(g, tmp_path), port) as errors:
        first: list[int] = []
        holder = threading.Thread(target=lambda: first.append(_request(port, "POST", "/v1/hold", body=b"{}")[0]))
        holder.start()
        assert upstream.arrived.wait(timeout=5), "the first request did not reach the instance"
        second = _request(port, "POST", "/v1/hold", body=b"{}")
        upstream.release.set()
        holder.join(timeout=10)
        # The slot is given back when a request ends: the next one passes.
        after = _request(port, "POST", "/v1/completions", body=b"{}")[0]
        log = errors.read_text()
    assert first == [200] and second[0] == 429 and after == 200
    assert upstream.seen == ["/v1/hold", "/v1/completions"], "the refused request must not reach an instance"
    assert "k" * 100 not in log, "the bearer key reached nginx's error log"
