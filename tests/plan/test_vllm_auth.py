"""remote/vllm_auth.py as an ASGI app sees it, without vLLM: what passes to the app, what is refused and how.

The same class in a real vLLM, over every route that server lists, is tests/vllm_cpu/test_openai_client.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

from plan.service import AUTH_SOURCE

_spec = importlib.util.spec_from_file_location("vllm_auth", AUTH_SOURCE)
assert _spec and _spec.loader
vllm_auth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vllm_auth)

KEY = "sk-test-0123456789abcdef"


def _call(scope: dict[str, Any], key: str = KEY) -> tuple[list[dict[str, Any]], list[str]]:
    """(messages sent to the client, paths the app behind it saw)."""
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope.get("path", scope["type"]))

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    asyncio.run(vllm_auth.RequireApiKey(app, key=key)(scope, receive, send))
    return sent, reached


def _http(path: str, method: str = "GET", *headers: tuple[bytes, bytes], root: str = "") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": root, "headers": list(headers)}


def bearer(token: str, scheme: bytes = b"Bearer") -> tuple[bytes, bytes]:
    return b"authorization", scheme + b" " + token.encode()


@pytest.mark.parametrize("path,method", [("/invocations", "POST"), ("/tokenize", "POST"), ("/metrics", "GET"),
                                         ("/v1/models", "GET"), ("/load", "GET"), ("/openapi.json", "GET"),
                                         ("/a-route-a-later-vllm-adds", "POST"), ("/health", "POST"),
                                         ("/health/", "GET"), ("/v1/completions", "OPTIONS")])
def test_every_route_without_the_key_is_refused_before_the_app(path: str, method: str) -> None:
    for headers in ((), (bearer("wrong"),), (bearer(KEY + "x"),), (bearer(KEY[:-1]),), ((b"x-api-key", KEY.encode()),)):
        sent, reached = _call(_http(path, method, *headers))
        assert reached == [], f"{method} {path} {headers} reached vLLM"
        assert sent[0]["status"] == 401 and (b"www-authenticate", b'Bearer realm="vllm"') in sent[0]["headers"]
        assert b"authentication_error" in sent[1]["body"]


def test_the_key_opens_every_route_and_health_needs_none() -> None:
    for path in ("/invocations", "/v1/completions", "/metrics", "/anything"):
        assert _call(_http(path, "POST", bearer(KEY)))[1] == [path]
    assert _call(_http("/tokenize", "POST", bearer(KEY, b"bearer")))[1] == ["/tokenize"], "the scheme is case-free"
    assert _call(_http("/health"))[1] == ["/health"]
    assert _call(_http("/health", "HEAD"))[1] == ["/health"]
    assert _call(_http("/api/health", root="/api"))[1] == ["/api/health"], "behind a root path too"


def test_two_authorization_headers_are_refused_even_if_one_is_right() -> None:
    sent, reached = _call(_http("/v1/models", "GET", bearer(KEY), bearer("other")))
    assert reached == [] and sent[0]["status"] == 401


def test_a_websocket_without_the_key_is_closed_and_lifespan_passes() -> None:
    sent, reached = _call({"type": "websocket", "path": "/v1/realtime", "headers": []})
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"}]
    assert _call({"type": "websocket", "path": "/v1/realtime", "headers": [bearer(KEY)]})[1] == ["/v1/realtime"]
    assert _call({"type": "lifespan"})[1] == ["lifespan"]


def test_without_a_key_the_server_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "  ")
    with pytest.raises(RuntimeError, match="VLLM_API_KEY is empty"):
        vllm_auth.RequireApiKey(lambda *a: None)
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    assert vllm_auth.RequireApiKey(lambda *a: None).allowed(_http("/v1/models", "GET", bearer(KEY)))
