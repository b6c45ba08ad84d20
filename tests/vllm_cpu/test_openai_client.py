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

import openai
import pytest

from tests.openai_conformance import ask, bad_requests, hang_up_mid_stream, run_conformance, unguarded_routes
from tests.vllm_cpu.tinyserver import TinyServer

pytestmark = pytest.mark.vllm

SERVED = "tiny"


def _connect(server: TinyServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)


def _raw(server: TinyServer, method: str, path: str, key: str | None, body: bytes | None = None) -> int:
    return ask(lambda: _connect(server), method, path, key, body)[0]


def _client(server: TinyServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key=server.api_key, max_retries=0, timeout=120)


def test_every_route_but_health_needs_the_key(tiny_server: TinyServer) -> None:
    assert unguarded_routes(lambda: _connect(tiny_server), tiny_server.api_key) == {}
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
    assert bad_requests(lambda: _connect(tiny_server), tiny_server.api_key, SERVED) == {}
    assert tiny_server.proc.poll() is None


def test_a_client_that_hangs_up_mid_stream_frees_its_slot(tiny_server: TinyServer) -> None:
    freed = hang_up_mid_stream(lambda: _connect(tiny_server), tiny_server.api_key, SERVED)
    print(f"\nslot freed {freed:.1f} s after the client hung up")
