"""Gateway stage: nginx from the distribution, one OpenAI-compatible entry point per deployment.

Files are rendered into a staging directory first and installed by a script that
runs `nginx -t` before the reload, so a bad configuration never reaches the
running nginx. The key map is written by `secret_file` (0600; never on a command line, in /tmp or
in pyinfra's output).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import time
from pathlib import Path

import gevent
from jinja2 import Template
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, python, server, systemd

from plan.gateway import GatewayPlan
from plan.host import HostPlan
from tasks.apt_lists import update_once
from tasks.secret_files import secret_file
from tasks.verify import curl

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "gateway"


def _subject_alt_names(g: GatewayPlan) -> str:
    try:
        ipaddress.ip_address(g.server_name)
        names = [f"IP:{g.server_name}"]
    except ValueError:
        names = [f"DNS:{g.server_name}"]
    return ",".join([*names, "DNS:localhost", "IP:127.0.0.1"])


def _certificate(g: GatewayPlan) -> list[OperationMeta]:
    """The user's certificate, or a self-signed one made once on the gateway (kept across runs).

    The private key is a secret like the API key: `secret_file`, so --diff and sudo's /tmp never see it.
    """
    if g.cert_source and g.key_source:
        return [
            files.put(name="Gateway TLS certificate", src=g.cert_source, dest=g.cert_path, mode="644"),
            secret_file(name="Gateway TLS key (0600)", dest=g.key_path, content=Path(g.key_source).read_text()),
        ]
    if host.get_fact(File, path=g.cert_path) and host.get_fact(File, path=g.key_path):
        return []
    command = (f"umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -days 825 -sha256 "
               f"-keyout {g.key_path} -out {g.cert_path} -subj {shlex.quote('/CN=' + g.server_name)} "
               f"-addext {shlex.quote('subjectAltName=' + _subject_alt_names(g))} 2>&1 && chmod 644 {g.cert_path}")
    return [server.shell(name="Gateway TLS certificate (self-signed, generated once)", commands=[command])]


@deploy("Gateway")
def gateway(plan: HostPlan, restarts: list[OperationMeta] | None = None) -> None:
    """Install nginx, stage and activate the gateway config, then verify through it (when anything changed)."""
    g = plan.gateway
    if g is None:
        return
    packages = apt.packages(name="nginx and tools", packages=list(g.apt_packages), no_recommends=True,
                            **update_once())
    files.directory(name="Gateway staging directory", path=g.staging, user="root", group="root", mode="700")
    changes = [packages, *(_certificate(g) if g.tls else [])]
    changes.append(files.template(name="Gateway nginx config", src=str(TEMPLATES / "gateway.conf.j2"),
                                  dest=f"{g.staging}/gateway.conf", mode="600", g=g))
    key = plan.api_key if g.require_api_key else "-"
    keys = (TEMPLATES / "keys.conf.j2").read_text()  # rendered here: the key goes up as file content only
    pattern = re.sub(r"([^A-Za-z0-9_])", r"\\\1", key or "")  # every other character taken literally
    changes.append(secret_file(name="Gateway API key map (0600)", dest=f"{g.staging}/keys.conf",
                               content=Template(keys).render(g=g, key_pattern=pattern)))
    if g.routes_by_model:
        routes = {u.model: f"@{u.name}" for u in g.upstreams}
        lists = [f"/_vllm_models/{u.name}" for u in g.upstreams]
        changes.append(files.template(name="Gateway model router (njs)", src=str(TEMPLATES / "route.js.j2"),
                                      dest=f"{g.staging}/route.js", mode="600", g=g, routes=routes,
                                      model_lists=lists))
    changes.append(files.template(name="Gateway activation script", src=str(TEMPLATES / "activate.sh.j2"),
                                  dest=f"{g.staging}/activate", mode="700", g=g))
    activate = server.shell(name=f"Gateway {g.deployment}: nginx -t, then reload", commands=[f"{g.staging}/activate"],
                            _if=lambda: any(op.did_change() for op in changes))
    systemd.service(name="nginx enabled and running", service="nginx.service", running=True, enabled=True)
    verify_gateway(plan, when=lambda: activate.did_change() or any(op.did_change() for op in restarts or []))


def _gateway_request(g: GatewayPlan, path: str, header_file: str | None, payload: dict | None = None
                     ) -> tuple[str, str]:
    scheme = "https" if g.tls else "http"
    tls = f" --cacert {g.cert_path}" if g.tls else ""
    extra = f"{tls} --resolve {shlex.quote(f'{g.server_name}:{g.port}:127.0.0.1')}"
    return curl(f"{scheme}://{g.server_name}:{g.port}{path}", payload, header_file, extra)


def check_gateway(plan: HostPlan, timeout: float = 120.0) -> None:
    """Through the gateway, as a client: the key is enforced, every model is listed and completes."""
    g = plan.gateway
    assert g is not None
    start = time.monotonic()
    while True:
        code, body = _gateway_request(g, "/v1/models", plan.key_header_file)
        if code == "200" or time.monotonic() - start > timeout:
            break
        gevent.sleep(2)
    if code != "200":
        raise OperationError(f"gateway {g.url}: /v1/models answered HTTP {code}: {body[:300]}")
    listed = {m.get("id") for m in json.loads(body).get("data", [])}
    missing = {u.model for u in g.upstreams} - listed
    if missing:
        raise OperationError(f"gateway {g.url}: /v1/models lists {sorted(listed)}, missing {sorted(missing)}")
    if g.require_api_key:
        code, _ = _gateway_request(g, "/v1/models", None)
        if code != "401":
            raise OperationError(f"gateway {g.url}: a request without the API key got HTTP {code}, not 401")
    for upstream in g.upstreams:
        payload = {"model": upstream.model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
        code, body = _gateway_request(g, "/v1/completions", plan.key_header_file, payload)
        if code != "200":
            raise OperationError(f"gateway {g.url}: a completion of '{upstream.model}' got HTTP {code}: {body[:300]}")
    logger.info(f"[{host.name}] gateway {g.url}/v1 serving {', '.join(u.model for u in g.upstreams)} "
                f"over {sum(len(u.backends) for u in g.upstreams)} instance(s); key enforced: {g.require_api_key}")


def verify_gateway(plan: HostPlan, when=None) -> OperationMeta:
    assert plan.gateway is not None
    return python.call(name=f"Verify gateway {plan.gateway.deployment}", function=check_gateway, plan=plan, _if=when)
