"""A real vLLM (CPU build) as the deploy runs it, against what real clients send.

The package's shared server runs as the rendered unit does: the key in VLLM_API_KEY, the deploy's key check
on every route (`--middleware vllm_auth.RequireApiKey`), the eager CPU plan's environment (TorchDynamo off) on
a machine without a C++ compiler (CXX points nowhere), and the hermes tool-call parser. Every route the running
server itself lists in /openapi.json must refuse a request without the key or with a wrong one, so a route a
later vLLM adds is covered without editing this test; the official `openai` client's request mix must leave
the engine serving; bad requests get a 400, and a client that hangs up mid-stream frees its slot.
"""

from __future__ import annotations

import http.client
import json
import time

import openai
import pytest

from tests.openai_conformance import ask, run_conformance, unguarded_routes
from tests.vllm_cpu.test_bench_real import _counter
from tests.vllm_cpu.tinyserver import TinyServer

pytestmark = pytest.mark.vllm

SERVED = "tiny"


def _raw(server: TinyServer, method: str, path: str, key: str | None, body: bytes | None = None) -> int:
    return ask(lambda: http.client.HTTPConnection("127.0.0.1", server.port, timeout=60), method, path, key, body)[0]


def _client(server: TinyServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key=server.api_key, max_retries=0, timeout=120)


def test_every_route_but_health_needs_the_key(tiny_server: TinyServer) -> None:
    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=60)

    assert unguarded_routes(connect, tiny_server.api_key) == {}
    # With the key, the routes vLLM's --api-key does not guard answer as before.
    assert _raw(tiny_server, "POST", "/tokenize", tiny_server.api_key,
                json.dumps({"model": SERVED, "prompt": "Hi"}).encode()) == 200
    assert _raw(tiny_server, "GET", "/metrics", tiny_server.api_key) == 200


def test_tokenize_and_detokenize_with_the_key(tiny_server: TinyServer) -> None:
    status, tokens = tiny_server.request("/tokenize", {"model": SERVED, "prompt": "def main():"})
    assert status == 200 and tokens["count"] == len(tokens["tokens"]) > 0, tokens
    status, text = tiny_server.request("/detokenize", {"model": SERVED, "tokens": tokens["tokens"]})
    assert status == 200 and text["prompt"] == "def main():", text


def test_the_openai_clients_requests_leave_the_engine_serving(tiny_server: TinyServer) -> None:
    failed = run_conformance(_client(tiny_server), SERVED, tool_parser=True)
    assert failed == [], "\n".join(failed) + "\n" + tiny_server.log_tail()
    assert tiny_server.proc.poll() is None


def test_bad_requests_get_400_not_a_crash(tiny_server: TinyServer) -> None:
    too_long = " ".join(["word"] * 3000)  # over max_model_len 1024 in tokens
    status, body = tiny_server.request("/v1/completions", {"model": SERVED, "prompt": too_long, "max_tokens": 4})
    assert status == 400, body
    status, body = tiny_server.request("/v1/completions", {"model": SERVED, "prompt": "Hi", "max_tokens": 10**9})
    assert status == 400, body
    status, body = tiny_server.request("/v1/chat/completions", {"model": SERVED, "max_tokens": -1,
                                                               "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 400, body
    assert _raw(tiny_server, "POST", "/v1/completions", tiny_server.api_key, b'{"model": "tiny", "prompt": ') == 400
    status, body = tiny_server.request("/v1/completions", {"model": SERVED, "prompt": "Hi", "max_tokens": 1})
    assert status == 200 and tiny_server.proc.poll() is None, body


def test_a_client_that_hangs_up_mid_stream_frees_its_slot(tiny_server: TinyServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=60)
    payload = {"model": SERVED, "prompt": "def main(", "max_tokens": 1000, "min_tokens": 1000, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(payload),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {tiny_server.api_key}"})
    response = conn.getresponse()
    assert response.status == 200
    events = 0
    while events < 3:
        line = response.readline()
        assert line, "the stream ended early"
        events += line.startswith(b"data: ")
    running = _counter(tiny_server, "vllm:num_requests_running")
    assert running == 1, f"the stream is running: {running}"
    conn.sock.close()  # the client goes away without a word
    conn.close()
    deadline = time.monotonic() + 30
    while _counter(tiny_server, "vllm:num_requests_running") != 0:
        assert time.monotonic() < deadline, "the hung-up stream still holds its slot after 30 s"
        time.sleep(0.2)
    aborted = time.monotonic()
    generated = _counter(tiny_server, "vllm:generation_tokens_total")
    time.sleep(1)
    assert _counter(tiny_server, "vllm:generation_tokens_total") == generated, "nothing decodes for the lost client"
    print(f"\nslot freed {30 - (deadline - aborted):.1f} s after the client hung up")
