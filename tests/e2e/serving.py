"""What a client of a lab deployment checks: a keyed request, and the tiny model listed and completing."""

from __future__ import annotations

import json
import urllib.request

from hostlab import TestHost
from hostlab.deployrun import lab_api_key


def get_json(url: str, payload: dict | None = None, timeout: float = 60) -> dict:
    """A request with the lab's API key, as a client of the deployment would send it."""
    data = json.dumps(payload).encode() if payload else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {lab_api_key()}"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def assert_serving(host: TestHost, served: str = "tiny") -> None:
    """/v1/models from the controller over the lab network, then a real completion."""
    models = get_json(f"http://{host.ip}:8000/v1/models")
    assert [m["id"] for m in models["data"]] == [served]
    assert models["data"][0]["max_model_len"] == 1024
    completion = get_json(f"http://{host.ip}:8000/v1/completions",
                          {"model": served, "prompt": "def main(", "max_tokens": 4})
    assert completion["choices"][0]["text"]
