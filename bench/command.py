"""What `bench.py` runs on the host: the target it measures and the shell commands of each sweep level.

Every command is one root shell line (run through tasks.remote with the operation's sudo settings).
The API key is read inside that shell from the 0600 header file into OPENAI_API_KEY (which vLLM's
request functions read), so it is on no command line, in no file we write and in no pyinfra output.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

from plan.host import HostPlan
from plan.quoting import sh, sh_join

LAUNCHER = Path(__file__).resolve().parent.parent / "remote" / "bench_serve.py"
WORKDIR_PREFIX = "/var/tmp/vllm-bench."
WORKDIR_RE = re.compile(re.escape(WORKDIR_PREFIX) + r"[A-Za-z0-9]{8}")
PERCENTILES = (50, 95, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")
LOG_TAIL_LINES = 40


class BenchError(ValueError):
    """The target cannot be benchmarked from this host (the message says why)."""


@dataclass(frozen=True)
class Target:
    """What one sweep measures and how the host reaches it."""

    kind: str  # "gateway" or "instance"
    name: str  # "gateway" or the instance's name
    url: str  # the base URL the requests go to; holds no key
    served_name: str
    tokenizer: str  # the model directory on the host: its tokenizer builds the prompts
    resolve: str | None = None  # "NAME:PORT:127.0.0.1": the gateway's name reached on loopback
    ca_file: str | None = None  # the gateway's certificate: TLS is checked against it
    trust_remote_code: bool = False
    backends: tuple[str, ...] = ()  # "host/instance address:port" of each instance behind the URL


def prompts_for(level: int, prompts: int) -> int:
    """Requests of one level: `prompts`, or (0) 8 per concurrent client and at least 16."""
    return prompts if prompts > 0 else max(16, 8 * level)


def target_for(plan: HostPlan, target: str) -> Target | None:
    """The target `target` ('gateway' or an instance name) as this host reaches it; None: not served here.

    Through the gateway the sweep measures the model of this host's first instance (its tokenizer is
    here); the gateway balances it over every instance of that name in the deployment.
    """
    if target == "gateway":
        g = plan.gateway
        if g is None:
            return None
        instance = plan.first
        upstream = next((u for u in g.upstreams if u.model == instance.served_name), None)
        backends = tuple(f"{b.host}/{b.instance} {b.address}:{b.port}" for b in upstream.backends) if upstream else ()
        return Target(kind="gateway", name="gateway", url=g.url, served_name=instance.served_name,
                      tokenizer=instance.model.host_dir, resolve=f"{g.server_name}:{g.port}:127.0.0.1",
                      ca_file=g.cert_path if g.tls else None,
                      trust_remote_code="--trust-remote-code" in instance.vllm_args, backends=backends)
    for instance in plan.instances:
        if instance.name == target:
            return Target(kind="instance", name=instance.name, url=instance.probe_url,
                          served_name=instance.served_name, tokenizer=instance.model.host_dir,
                          trust_remote_code="--trust-remote-code" in instance.vllm_args,
                          backends=(f"{plan.host}/{instance.name} {instance.probe_host}:{instance.port}",))
    return None


def result_filename(level: int) -> str:
    return f"c{level}.json"


def vllm_bench_args(target: Target, level: int, prompts: int, input_len: int, output_len: int,
                    result_dir: str) -> list[str]:
    """`vllm bench serve` arguments of one level: random prompts of exact lengths, `level` clients."""
    args = [
        "--backend", "openai", "--endpoint", "/v1/completions", "--base-url", target.url,
        "--model", target.served_name, "--served-model-name", target.served_name, "--tokenizer", target.tokenizer,
        "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
        "--ignore-eos", "--num-prompts", str(prompts), "--max-concurrency", str(level),
        "--percentile-metrics", ",".join(METRICS), "--metric-percentiles", ",".join(map(str, PERCENTILES)),
        "--save-result", "--result-dir", result_dir, "--result-filename", result_filename(level), "--disable-tqdm",
    ]
    if target.trust_remote_code:
        args.append("--trust-remote-code")
    return args


def launcher_args(target: Target) -> list[str]:
    """The launcher's own options (before `--`)."""
    return ["--resolve", target.resolve] if target.resolve else []


def bench_env(target: Target, workdir: str) -> dict[str, str]:
    """The benchmark client's environment: offline, quiet, its scratch files in the work directory."""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "TOKENIZERS_PARALLELISM": "false", "TMPDIR": f"{workdir}/tmp", "VLLM_CACHE_ROOT": f"{workdir}/cache",
           "HF_HOME": f"{workdir}/hf"}
    if target.ca_file:
        env["SSL_CERT_FILE"] = target.ca_file
    return env


def key_export(header_file: str | None) -> str:
    """Shell that sets OPENAI_API_KEY from the 0600 header file (no key in any argv), or nothing."""
    if not header_file:
        return ""
    return (f"OPENAI_API_KEY=$(sed -n 's/^Authorization: Bearer //p' {sh(header_file)}) && "
            f"[ -n \"$OPENAI_API_KEY\" ] || {{ echo bench: no API key in {sh(header_file)} >&2; exit 3; }}; "
            "export OPENAI_API_KEY; ")


def check_workdir(workdir: str) -> str:
    """The work directory as `prepare_command` made it; anything else is refused (it is removed later)."""
    if not WORKDIR_RE.fullmatch(workdir):
        raise BenchError(f"unexpected benchmark work directory {workdir!r}")
    return workdir


def prepare_command() -> str:
    """A private work directory with the launcher in it; prints its path."""
    payload = base64.b64encode(LAUNCHER.read_bytes()).decode()
    return (f"umask 077 && D=$(mktemp -d {WORKDIR_PREFIX}XXXXXXXX) && mkdir \"$D/tmp\" && "
            f"printf %s {payload} | base64 -d > \"$D/bench_serve.py\" && echo \"$D\"")


def level_command(plan: HostPlan, target: Target, workdir: str, level: int, args: list[str]) -> str:
    """One level: run the benchmark into `workdir`, then print its result JSON (or the log's tail and fail)."""
    workdir = check_workdir(workdir)
    env = bench_env(target, workdir)
    launcher = [f"{workdir}/bench_serve.py", *launcher_args(target), "--", *args]
    if plan.setup.runtime == "docker":
        if not plan.setup.docker_image:
            raise BenchError("the docker runtime has no planned image")
        mounts = [f"{workdir}:{workdir}", f"{target.tokenizer}:{target.tokenizer}:ro"]
        if target.ca_file:
            mounts.append(f"{target.ca_file}:{target.ca_file}:ro")
        words = ["docker", "run", "--rm", "--network", "host", "--entrypoint", "python3"]
        words += [w for m in mounts for w in ("-v", m)]
        words += [w for name, value in sorted(env.items()) for w in ("-e", f"{name}={value}")]
        if plan.key_header_file:
            words += ["-e", "OPENAI_API_KEY"]  # the value comes from this shell's environment, not argv
        run = sh_join([*words, plan.setup.docker_image, *launcher])
    else:
        run = sh_join(["env", *(f"{name}={value}" for name, value in sorted(env.items())), plan.setup.python,
                       *launcher])
    log, result = sh(f"{workdir}/c{level}.log"), sh(f"{workdir}/{result_filename(level)}")
    return (f"umask 077; {key_export(plan.key_header_file)}{run} > {log} 2>&1; rc=$?; "
            f"if [ $rc -ne 0 ] || [ ! -s {result} ]; then tail -n {LOG_TAIL_LINES} {log}; exit $(( rc ? rc : 1 )); fi; "
            f"cat {result}")


def cleanup_command(workdir: str) -> str:
    return f"rm -rf -- {sh(check_workdir(workdir))}"
