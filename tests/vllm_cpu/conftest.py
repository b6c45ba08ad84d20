"""One real tiny server for the modules that only talk to it (bench, the openai client's and the API tests): a
start costs 15–30 s on 2 cores. test_tiny_server's last test stops it by SIGTERM, so the modules that share it run first
(pytest's file order); the watchdog test freezes an engine and starts its own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.vllm_cpu.realparser import require_controller_python
from tests.vllm_cpu.tinyserver import TinyServer, ensure_tiny_model, start_tiny_server

SERVED = "tiny"  # the name both modules ask for
# The tiny llama has no recipe parser; hermes loads with any tokenizer, so the client tests make a real tool call.
TOOL_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")


@pytest.fixture(scope="package")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServer]:
    python = require_controller_python()
    srv = start_tiny_server(python, ensure_tiny_model(python), tmp_path_factory.mktemp("vllm"),
                            served_name=SERVED, api_key=secrets.token_hex(16), extra_args=TOOL_ARGS)
    yield srv
    srv.stop()
