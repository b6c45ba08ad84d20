"""ASGI middleware for vLLM's API server: every route needs the API key, except `/health`.

vLLM's own `--api-key` (and `VLLM_API_KEY`) guards only paths under `/v1`, `/v2`, `/inference` and
`/cohere`: `/invocations` (completions and chat, routed by the body), `/tokenize`, `/detokenize`,
`/load`, `/metrics`, `/scale_elastic_ep`, the docs and whatever route a later release adds answer
anyone who reaches the port. vLLM loads this class with `--middleware vllm_auth.RequireApiKey`
(the deploy puts this file's directory on the service's PYTHONPATH) and adds it last, so it sees
every request first. It allows a path only when the request carries `Authorization: Bearer <key>`;
a load balancer's health check needs no key (`/health` says only whether the engine is up).

The key is read once from `VLLM_API_KEY`, the service's 0600 key file: without one the server
refuses to start, never serves open. Standard library only: it must import in any vLLM's venv,
conda environment or image. Compared as SHA-256 digests in constant time, as vLLM does itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths answered without the key: a load balancer's liveness check, nothing that reads or runs the model.
OPEN_PATHS = frozenset({"/health"})
KEY_VARIABLE = "VLLM_API_KEY"
BODY = json.dumps({"error": {"message": "missing or wrong API key: send Authorization: Bearer <key>",
                             "type": "authentication_error", "code": 401}}).encode() + b"\n"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class RequireApiKey:
    """Refuses every HTTP request and WebSocket without the deployment's bearer key (401 / close 1008)."""

    def __init__(self, app: ASGIApp, key: str | None = None) -> None:
        key = key if key is not None else os.environ.get(KEY_VARIABLE, "")
        if not key.strip():
            raise RuntimeError(f"vllm_auth: {KEY_VARIABLE} is empty; refusing to serve without an API key")
        self.app = app
        self._want = _digest(key.strip().encode())

    def allowed(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path in OPEN_PATHS and scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            return True
        sent = [value for name, value in scope.get("headers", ()) if name.lower() == b"authorization"]
        # Exactly one Authorization header: two could be read differently by a proxy and by vLLM.
        if len(sent) != 1:
            return False
        scheme, _, token = sent[0].strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(_digest(token.strip()), self._want)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
            (b"www-authenticate", b'Bearer realm="vllm"')]})
        await send({"type": "http.response.body", "body": BODY})
