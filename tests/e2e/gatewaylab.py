"""A gateway story on two lab hosts, shared by the e2e modules that need one: inventory, TLS-checked
requests through the gateway, and a client load loop that records every failure with its reason."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostlab import TestHost
from hostlab.deployrun import RunResult, lab_api_key, lab_host, run_pyinfra

GATEWAY_PORT = 443
CERT = "/etc/vllm/gateway/vllm/tls.crt"


@dataclass
class Story:
    a: TestHost
    b: TestHost
    cert: Path
    a_data: dict[str, Any]
    b_data: dict[str, Any]
    outputs: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)

    def inventory(self, with_b: bool = True, sudo_user: bool = False) -> list:
        """Host A runs the gateway; B, when present, is reached over plain HTTP on the lab's private
        bridge (accepted in writing: vllm_backend_tls = False)."""
        hosts = [lab_host(self.a, sudo_user, vllm_gateway=True, **{**self.a_data, **self.overrides})]
        if with_b:
            hosts.append(lab_host(self.b, sudo_user, vllm_backend_tls=False, **{**self.b_data, **self.overrides}))
        return hosts

    def deploy(self, with_b: bool = True, script: str = "deploy.py", *args: str, sudo_user: bool = False
               ) -> RunResult:
        result = run_pyinfra(self.inventory(with_b, sudo_user), script, *args)
        self.outputs.append(result.output)
        return result

    def fetch_cert(self) -> None:
        """The gateway's (self-signed) certificate, for clients that check TLS against it."""
        self.cert.write_text(self.a.run(f"cat {CERT}").stdout)

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


class LoadLoop:
    """Clients sending completions through the gateway, each failure recorded with its reason."""

    def __init__(self, story: Story, requests: int, clients: int = 4):
        self.story = story
        self.remaining = requests
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.started = 0
        self.done = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _take(self) -> bool:
        with self.lock:
            if self.remaining <= 0 or self.stop.is_set():
                return False
            self.remaining -= 1
            self.started += 1
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

    def in_flight(self) -> int:
        """Requests sent and not yet answered, at this moment."""
        with self.lock:
            return self.started - self.done
