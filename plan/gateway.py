"""The gateway plan: one nginx entry point per deployment, over every instance of every host in it.

Pure data, computed from settings alone (ports and served names), so the
gateway host can plan its upstreams without the facts of the other hosts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from plan.quoting import comment_text, nginx_string
from plan.service import PlanError
from plan.settings import InstanceSettings, Settings, watchdog_restart_bound
from plan.validators import Invalid, address

STAGING_DIR = "/etc/vllm/gateway"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Backend:
    """One vLLM instance as the gateway reaches it."""

    host: str
    instance: str
    address: str
    port: int

    @property
    def comment_host(self) -> str:
        return comment_text(self.host)

    @property
    def nginx_server(self) -> str:
        """The `server` argument of the upstream, quoted for nginx (IPv6 literals bracketed)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return nginx_string(f"{host}:{self.port}")


@dataclass(frozen=True)
class Upstream:
    """All instances serving one model name: nginx balances over them."""

    name: str
    model: str
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class GatewayPlan:
    """The nginx gateway of one deployment, on one host."""

    deployment: str
    host: str
    port: int
    tls: bool
    server_name: str
    require_api_key: bool
    upstreams: tuple[Upstream, ...]
    cert_source: str | None
    key_source: str | None
    # Seconds after a request's first try during which nginx may still re-send it elsewhere: long enough
    # that a request stuck on a hung engine is re-sent once the watchdog has killed that engine.
    retry_window: int = 60
    # Bounds on bad traffic: largest request body (nginx size), seconds a client may stall, and requests
    # in flight per API key (0: none); defaults as in plan/schema.py.
    max_body: str = "16m"
    client_timeout: int = 60
    key_concurrency: int = 0

    @property
    def ident(self) -> str:
        """The deployment as an nginx identifier (variables and upstreams allow no '-')."""
        return re.sub(r"[^a-z0-9_]", "_", self.deployment)

    @property
    def staging(self) -> str:
        return f"{STAGING_DIR}/{self.deployment}"

    @property
    def cert_path(self) -> str:
        return f"{self.staging}/tls.crt"

    @property
    def key_path(self) -> str:
        return f"{self.staging}/tls.key"

    @property
    def routes_by_model(self) -> bool:
        """Several models behind one entry point: requests are routed by their "model" (njs)."""
        return len(self.upstreams) > 1

    @property
    def nginx_server_name(self) -> str:
        return nginx_string(self.server_name)

    @property
    def nginx_max_body(self) -> str:
        return nginx_string(self.max_body)

    @property
    def nginx_body_buffer(self) -> str:
        """The same size for client_body_buffer_size, which nginx parses without the 'g' suffix."""
        if self.max_body.endswith("g"):
            return nginx_string(f"{int(self.max_body[:-1]) * 1024}m")
        return nginx_string(self.max_body)

    @property
    def comment_host(self) -> str:
        return comment_text(self.host)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.server_name}:{self.port}"

    # Live locations nginx reads; the staged copies under `staging` are rendered first, then
    # installed only once `nginx -t` accepts them.
    @property
    def live_files(self) -> dict[str, str]:
        files = {
            "gateway.conf": f"/etc/nginx/conf.d/vllm-{self.deployment}.conf",
            "keys.conf": f"/etc/nginx/vllm-{self.deployment}-keys.conf",
        }
        if self.routes_by_model:
            files["route.js"] = f"/etc/nginx/njs/vllm-{self.deployment}.js"
        return files

    @property
    def apt_packages(self) -> tuple[str, ...]:
        return ("nginx", "openssl", "curl") + (("libnginx-mod-http-js",) if self.routes_by_model else ())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        tls = ("TLS from " + self.cert_source if self.cert_source else "TLS self-signed") if self.tls else "plain HTTP"
        key = "API key required" if self.require_api_key else "no API key"
        lines = [f"gateway {self.deployment} on {self.host}: {self.url}/v1 ({key}, {tls})"]
        for upstream in self.upstreams:
            servers = ", ".join(f"{b.address}:{b.port} ({b.host}/{b.instance})" for b in upstream.backends)
            lines.append(f"  model '{upstream.model}' -> least_conn over {servers}")
        return "\n".join(lines)


def refuse_plain_backends(host: str, members: Iterable[tuple[str, Settings, tuple[InstanceSettings, ...]]]
                          ) -> None:
    """Refuse, before any change, a gateway that would reach another host's instances over plain HTTP.

    The gateway forwards each client's `Authorization: Bearer <key>` to the instance; over plain HTTP
    that puts the deployment's key on the network in clear. Only the other host's own
    `vllm_backend_tls = False`, an operator's written opt-out for a trusted network, allows it.
    """
    refused = []
    for name, member, instances in members:
        if name != host and instances and member.vllm_backend_tls:
            refused.append(f"{name} ({', '.join(f'{i.name}:{i.settings.vllm_port}' for i in instances)})")
    if refused:
        raise PlanError(
            f"vllm_backend_tls: the gateway on {host} would reach the instances of {'; '.join(refused)} over "
            "plain HTTP, which carries the deployment's bearer key across the network in clear. The gateway "
            "does not speak TLS to instances on other hosts; on a network you trust, set "
            "`vllm_backend_tls = False` for each of those hosts (its host data or group_data) to accept that, "
            "or give those hosts their own deployment (vllm_deployment) and gateway, which reaches them on loopback.")


def build_gateway_plan(settings: Settings, host: str,
                       members: Iterable[tuple[str, Settings, tuple[InstanceSettings, ...]]]) -> GatewayPlan:
    """The gateway of `host` over `members`: (inventory name, host settings, instances) of each deployment host.

    Instances on the gateway's own host are reached on loopback (they listen there only);
    the others at their vllm_advertise_address, or their inventory name, and only when their
    host accepts plain HTTP in writing (`refuse_plain_backends`).
    """
    members = list(members)
    refuse_plain_backends(host, members)
    by_model: dict[str, list[Backend]] = {}
    for name, member, instances in members:
        reached = LOOPBACK if name == host else (member.vllm_advertise_address or _inventory_address(
            name, "vllm_advertise_address", f"how the gateway reaches {name!r}"))
        for instance in instances:
            backend = Backend(host=name, instance=instance.name, address=reached, port=instance.settings.vllm_port)
            by_model.setdefault(instance.settings.vllm_served_model_name, []).append(backend)
    ident = re.sub(r"[^a-z0-9_]", "_", settings.vllm_deployment)
    upstreams = tuple(Upstream(name=f"vllm_{ident}_{index}", model=model, backends=tuple(backends))
                      for index, (model, backends) in enumerate(sorted(by_model.items())))
    return GatewayPlan(
        deployment=settings.vllm_deployment,
        host=host,
        port=settings.vllm_gateway_port,
        tls=settings.vllm_gateway_tls,
        server_name=settings.vllm_gateway_server_name or _inventory_address(
            host, "vllm_gateway_server_name", "the gateway's name in nginx and its certificate"),
        require_api_key=settings.vllm_require_api_key,
        upstreams=upstreams,
        cert_source=settings.vllm_gateway_tls_cert,
        key_source=settings.vllm_gateway_tls_key,
        retry_window=retry_window(member for _, member, _ in members),
        max_body=settings.vllm_gateway_max_body,
        client_timeout=settings.vllm_gateway_client_timeout,
        key_concurrency=settings.vllm_gateway_key_concurrency,
    )


def retry_window(members: Iterable[Settings]) -> int:
    """60 s, or more where a member's watchdog may take longer to kill a hung engine (plus 30 s to spare)."""
    bounds = [watchdog_restart_bound(m.vllm_watchdog_interval, m.vllm_watchdog_timeout, m.vllm_watchdog_misses) + 30
              for m in members if m.vllm_watchdog]
    return max([60, *bounds])


def _inventory_address(name: str, field: str, used_as: str) -> str:
    """An inventory name standing in for an unset address setting: held to the same validator.

    The setting's own value was checked with the rest; an inventory (maybe generated) could still
    name a host with characters that would change the meaning of nginx's configuration.
    """
    try:
        return address(name)
    except Invalid:
        raise PlanError(f"{field}: the inventory name {name!r} is {used_as} when {field} is unset, and it is not "
                        f"a host name or IP address; set {field}") from None
