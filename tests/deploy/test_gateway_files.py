"""The gateway's rendered files, checked without a host: nginx config shape and the njs router's syntax."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from jinja2 import Template

from plan.gateway import build_gateway_plan
from plan.settings import load_instances

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
