"""A real vLLM server (CPU build) on the tiny local model answers the OpenAI API on loopback.

The package's shared server (start ≈ 15–30 s on 2 cores; bench's tests use it first), with an API key set
through VLLM_API_KEY as the deployed unit's environment file does; stopped by SIGTERM to its pid in the last test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vllm_cpu.realparser import require_controller_python
from tests.vllm_cpu.tinyserver import TinyServer, ensure_tiny_model

pytestmark = pytest.mark.vllm

SERVED = "tiny"


@pytest.fixture(scope="module")
def model() -> Path:
    return ensure_tiny_model(require_controller_python())


@pytest.fixture(scope="module")
def server(tiny_server: TinyServer) -> TinyServer:
    """The package's shared server (tests/vllm_cpu/conftest.py), which the last test here stops."""
    return tiny_server


def test_models_lists_served_name_and_context(server: TinyServer, model: Path) -> None:
    status, body = server.request("/v1/models")
    assert status == 200, body
    (entry,) = body["data"]
    assert entry["id"] == SERVED
    assert entry["max_model_len"] == 1024
    assert Path(entry["root"]) == model


def test_api_key_is_required(server: TinyServer) -> None:
    assert server.request("/v1/models", key=None)[0] == 401
    assert server.request("/v1/models", key="wrong")[0] == 401
    assert server.request("/health", key=None)[0] == 200


def test_completion_returns_text(server: TinyServer) -> None:
    status, body = server.request("/v1/completions", {
        "model": SERVED, "prompt": "def main():", "max_tokens": 4, "temperature": 0, "ignore_eos": True})
    assert status == 200, body
    assert isinstance(body["choices"][0]["text"], str) and body["choices"][0]["text"]
    assert body["usage"]["completion_tokens"] == 4


def test_chat_completion_uses_the_chat_template(server: TinyServer) -> None:
    status, body = server.request("/v1/chat/completions", {
        "model": SERVED, "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4, "temperature": 0, "ignore_eos": True})
    assert status == 200, body
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] == 4
    # ChatML framing of one user turn plus the generation prompt is more tokens than "hello" alone.
    assert body["usage"]["prompt_tokens"] > 5


def test_unknown_model_name_is_404(server: TinyServer) -> None:
    status, body = server.request("/v1/completions", {"model": "nope", "prompt": "x", "max_tokens": 1})
    assert status == 404, body


def test_sigterm_stops_server_and_engine(server: TinyServer) -> None:
    assert server.children, "expected the engine process as a child of the API server"
    server.stop(timeout=30)
    assert server.forced == [], f"needed SIGKILL: {server.forced}\n{server.log_tail()}"
