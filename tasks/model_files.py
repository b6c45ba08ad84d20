"""Model stage: put the weights in the plan's model directory, verified.

A local source is copied as one stream of the files the host lacks (tasks/directory_copy.py:
a re-run resumes, files whose size and time already match are skipped), in the background
while the runtime installs when deploy.py starts it early, then checked against a SHA-256
manifest; a file that fails is removed so the next run sends it again. A marker holding the
manifest's digest makes a complete copy a no-op next time.

A hub source is downloaded on the host by a systemd oneshot that then runs
remote/model_check.py (uploaded): the repository's file list against the
directory, then the manifest and the marker. deploy.py starts it before the runtime
installs, so the weights and vLLM's packages (or image) arrive at once; `model_files`
waits for it. After it, every instance serving the model is re-sized from the
downloaded config.json (plan/replan.py).
"""

from __future__ import annotations

import hashlib
import os
import time
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

import gevent
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FileContents
from pyinfra.operations import apt, files, pip, python, server

from facts.parsers import parse_json_object
from plan.host import HostPlan
from plan.quoting import comment_text, sh, systemd_environment, systemd_exec, systemd_value
from plan.replan import plan_changes, replan_message
from plan.service import ModelPlan, ServicePlan
from plan.settings import Settings
from remote import model_check
from remote.model_check import MANIFEST, MARKER
from tasks import remote
from tasks.apt_lists import update_once
from tasks.directory_copy import copy_directory, wait_for_copy
from tasks.install_venv import pip_install_args
from tasks.service_account import finish_wheelhouse, start_wheelhouse
from tasks.verify import unit_state

DOWNLOAD_UNIT = "vllm-model-download"
# remote/model_check.py, uploaded under the prefix and run by the download unit.
CHECK_SCRIPT = "model-check.py"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# (host name, model directory) of the copies and downloads start_model_transfers put in the background.
_STARTED: set[tuple[str, str]] = set()


def local_manifest(root: str | Path) -> str:
    """`sha256sum` format manifest of every file under root (sorted, our own files excluded)."""
    root = Path(root)
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in (MANIFEST, MARKER):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()}  {rel}")
    return "\n".join(lines) + "\n"


@deploy("Model files")
def model_files(plan: HostPlan) -> dict[str, list[OperationMeta]]:
    """Each model directory once; returns, per directory, the operations whose change restarts its instances."""
    return {model.host_dir: _model_files(plan, model, index) for index, model in enumerate(plan.models)}


def download_unit(index: int) -> str:
    return DOWNLOAD_UNIT if index == 0 else f"{DOWNLOAD_UNIT}-{index}"


@cache
def _local_manifest(local_path: str) -> tuple[str, str]:
    """(manifest, its digest) of a local model, hashed once per run: every host's deploy file asks for it."""
    manifest = local_manifest(local_path)
    return manifest, hashlib.sha256(manifest.encode()).hexdigest()


def _local_copy_needed(model: ModelPlan) -> bool:
    marker = host.get_fact(FileContents, path=f"{model.host_dir}/{MARKER}")
    return not (marker and marker[0].strip() == _local_manifest(model.local_path)[1])


def start_model_transfers(plan: HostPlan) -> None:
    """Start, in the background, each model transfer the host needs: a local model's copy, or a hub model's download
    unit. Its bytes travel while the runtime installs (minutes each, for a large model and vLLM's packages or
    image); `model_files` waits for it, then verifies. Call it after the driver stage, whose reboot would cut it."""
    for index, model in enumerate(plan.models):
        if model.source == "local":
            if not _local_copy_needed(model):
                continue
            _copy_model(model, background=True)
        elif _download_done(model):
            continue
        else:
            _start_download(plan, model, index)
        _STARTED.add((host.name, model.host_dir))


def _copy_model(model: ModelPlan, background: bool) -> None:
    copy_directory(name=f"Sync model {model.local_path} -> {model.host_dir}", src=model.local_path,
                   dest=model.host_dir, keep=[MANIFEST, MARKER], background=background)


def _model_files(plan: HostPlan, model: ModelPlan, index: int) -> list[OperationMeta]:
    if model.source != "local":
        return download(plan, model, index)
    if not _local_copy_needed(model):
        return []
    if (host.name, model.host_dir) in _STARTED:
        wait_for_copy(name=f"Model {model.local_path} copied to {model.host_dir}", dest=model.host_dir)
    else:
        _copy_model(model, background=False)
    manifest, digest = _local_manifest(model.local_path)
    manifest_file = os.path.join(model.host_dir, MANIFEST)
    files.put(name="Model manifest", src=BytesIO(manifest.encode()), dest=manifest_file, mode="644")
    return [server.shell(name="Verify model checksums", commands=[verify_command(model.host_dir, digest)])]


def verify_command(model_dir: str, digest: str) -> str:
    """Check the copied files against the manifest; only then write the marker. Root runs it: quoted.

    A file that fails is removed: the copy skips files whose size and time match, so a same-size damaged
    file would otherwise stay; without it, the next run sends it again."""
    return (f"cd {sh(model_dir)} && rm -f {sh(MARKER)} && "
            f"if failed=$(sha256sum --quiet --strict -c {sh(MANIFEST)} 2>&1); then echo {sh(digest)} > {sh(MARKER)}; "
            "else printf '%s\\n' \"$failed\" >&2; printf '%s\\n' \"$failed\" | sed -n 's/: FAILED.*$//p' "
            "| while IFS= read -r name; do rm -f -- \"./$name\"; done; "
            "echo 'the files that failed were removed: the next run copies them again' >&2; exit 1; fi")


def download(plan: HostPlan, model: ModelPlan, index: int) -> list[OperationMeta]:
    """Download from ModelScope or a Hugging Face endpoint in a systemd oneshot on the host.

    The download outlives a dropped SSH session, resumes where it stopped (both hub
    CLIs skip complete files), and runs once per host whatever the parallel size.
    The oneshot's second step checks the directory against the repository's file
    list and writes the manifest and the marker only when every file is complete;
    then the plan is checked against the downloaded config.json.
    """
    if _download_done(model):
        return []
    if (host.name, model.host_dir) not in _STARTED:
        _start_download(plan, model, index)
    return [
        python.call(name=f"Download {model.name} from {model.source}", function=wait_for_download, model=model,
                    unit=download_unit(index)),
        python.call(name=f"Check the plan against {model.name}'s downloaded config.json",
                    function=check_plan_against_download, model=model, instances=_serving(plan, model)),
    ]


def _download_done(model: ModelPlan) -> bool:
    """The check's marker is there: every file of the hub's list was complete when the download last ran."""
    return bool(host.get_fact(FileContents, path=f"{model.host_dir}/{MARKER}"))


def _start_download(plan: HostPlan, model: ModelPlan, index: int) -> None:
    """The hub CLI, the completeness check and the download unit, then the unit started without waiting.

    The hub CLI installs as vLLM does: from the offline wheelhouse alone when one is set (its copy travels while
    apt runs, and the runtime's stage then finds it there), else from the mirror preset's index.
    """
    unit = download_unit(index)
    hub_venv = f"{plan.setup.prefix}/hub-venv"
    checker = f"{plan.setup.prefix}/{CHECK_SCRIPT}"
    package = "modelscope" if model.source == "modelscope" else "huggingface_hub"
    start_wheelhouse(plan.setup, background=True)
    apt.packages(name="Python virtualenv support", packages=["python3-venv"], **update_once())
    finish_wheelhouse(plan.setup)
    # The venv module (python3-venv, above), as for vLLM's venv: pyinfra's default is the `virtualenv` command,
    # which a fresh server lacks.
    pip.packages(name=f"{package} CLI", packages=[package], virtualenv=hub_venv,
                 virtualenv_kwargs={"venv": True, "python": "python3"},
                 extra_install_args=pip_install_args(plan.setup) or None)
    files.put(name="Model completeness check", src=model_check.__file__, dest=checker, mode="644")
    files.template(
        name="Model download unit",
        src=str(TEMPLATES / "model-download.service.j2"),
        dest=f"/etc/systemd/system/{unit}.service",
        mode="644",
        **download_unit_values(plan.host, model, hub_venv, checker),
    )
    python.call(name=f"Start downloading {model.name} from {model.source}", function=start_download,
                unit=f"{unit}.service")


def download_unit_values(host_name: str, model: ModelPlan, hub_venv: str, checker: str) -> dict[str, str]:
    """The download unit's values, each already quoted for systemd (the template pastes them as they are).

    The unit runs as root: a space, quote, `%` or `$` in a path, revision or endpoint must stay
    inside its one argument, and a line break must not start a directive of its own.
    """
    marker = f"{model.host_dir.rstrip('/')}/{MARKER}"
    return {
        "comment_host": comment_text(host_name),
        "comment_model": comment_text(model.name),
        "marker": MARKER,
        "description": systemd_value(comment_text(f"Download {model.name} from {model.source}").rstrip("\\")),
        "endpoint_environment": endpoint_environment(model),
        "mkdir_command": systemd_exec(["/bin/mkdir", "-p", model.host_dir]),
        "rm_marker_command": systemd_exec(["/bin/rm", "-f", marker]),
        "command": systemd_exec(download_command(model, hub_venv)),
        "check_command": systemd_exec(check_command(model, hub_venv, checker)),
    }


def hub_endpoint(model: ModelPlan) -> str | None:
    """The endpoint setting of the model's hub, None for the hub CLI's own default."""
    return model.modelscope_endpoint if model.source == "modelscope" else model.hf_endpoint


def endpoint_environment(model: ModelPlan) -> str:
    """`Environment=` for the hub CLI's endpoint variable, or nothing for its default.

    ModelScope: MODELSCOPE_ENDPOINT, the variable modelscope 1.40's client (modelscope_hub's HubConfig) reads first,
    with its scheme (http:// for a mirror without TLS); the older MODELSCOPE_DOMAIN is deprecated there, and set
    alone it warns on every run. With either set, the CLI reads from that endpoint alone instead of probing
    modelscope.cn, then modelscope.ai, for the repository.
    """
    endpoint = hub_endpoint(model)
    if not endpoint:
        return ""
    return systemd_environment("MODELSCOPE_ENDPOINT" if model.source == "modelscope" else "HF_ENDPOINT", endpoint)


def download_command(model: ModelPlan, hub_venv: str) -> list[str]:
    """The hub CLI command line that fills the model directory.

    `modelscope download REPO --local-dir DIR`: modelscope 1.40 takes `--model` and `--local_dir` only as hidden
    deprecated aliases (a DeprecationWarning each)."""
    if model.source == "modelscope":
        command = [f"{hub_venv}/bin/modelscope", "download", model.name, "--local-dir", model.host_dir]
    else:
        command = [f"{hub_venv}/bin/hf", "download", model.name, "--local-dir", model.host_dir]
    if model.revision:
        command += ["--revision", model.revision]
    return command


def check_command(model: ModelPlan, hub_venv: str, checker: str) -> list[str]:
    """The completeness check, run by the hub venv's python (it has the hub's client library)."""
    command = [f"{hub_venv}/bin/python", checker, "--source", model.source, "--model", model.name,
               "--dir", model.host_dir]
    if model.revision:
        command += ["--revision", model.revision]
    if hub_endpoint(model):
        command += ["--endpoint", str(hub_endpoint(model))]
    return command


def downloaded_config_command(model_dir: str) -> str:
    """Read config.json after the download; unlike the ModelConfig fact, a missing file is an error."""
    return f"cat -- {sh(model_dir.rstrip('/') + '/config.json')}"


def _serving(plan: HostPlan, model: ModelPlan) -> list[tuple[ServicePlan, Settings, Any]]:
    """(plan, settings, facts) of each instance serving this model directory, for re-sizing after the download.

    The inputs the host plan was built from, minus config.json, so a difference comes from the
    config alone (not from, say, a driver this run installed).
    """
    settings = {i.unit: i.settings for i in plan.settings}
    return [(instance, settings[instance.unit], plan.facts) for instance in plan.instances
            if instance.model.host_dir == model.host_dir]


def check_plan_against_download(model: ModelPlan, instances: list[tuple[ServicePlan, Settings, Any]]) -> None:
    """Fail the host, before any service (re)starts, when the downloaded config.json changes the plan.

    Why fail instead of re-rendering: see plan/replan.py; the next run plans from this config.json.
    """
    _, out = remote.run(downloaded_config_command(model.host_dir))
    config = parse_json_object(out.stdout_lines)
    if config is None:
        raise OperationError(f"{model.host_dir}/config.json is missing or not a JSON object after the download "
                             f"of {model.name}; the repository must hold a Hugging Face config.json")
    changes = {planned.unit: found for planned, settings, facts in instances
               if (found := plan_changes(planned, settings, facts, config))}
    if changes:
        raise OperationError(replan_message(host.name, model.name, changes))
    logger.info(f"[{host.name}] {model.name}: the downloaded config.json confirms the plan")


def start_download(unit: str) -> None:
    """Start the oneshot without waiting: a download already running (a cut run's) goes on, a finished one again
    (the hub CLI skips complete files, and the check writes the marker)."""
    ok, out = remote.run(f"systemctl daemon-reload && systemctl start --no-block {sh(unit)}")
    if not ok:
        raise OperationError(f"cannot start {unit}: {' '.join(out.stderr_lines)}")


def download_progress(size: float, weight_bytes: int | None) -> str:
    """`3.20 GiB`, or `3.20/16.38 GiB (20%)` when the checkpoint's size is known from its metadata."""
    if not weight_bytes:
        return f"{size / 2**30:.2f} GiB"
    return f"{size / 2**30:.2f}/{weight_bytes / 2**30:.2f} GiB ({min(size / weight_bytes, 1.0):.0%})"


def wait_for_download(model: ModelPlan, unit: str) -> None:
    """Show bytes and rate until the oneshot `unit` finishes; fail with its journal.

    The journal ends with the completeness check's report, which names every missing or
    short file, so the failure says what is wrong without a login to the host. The unit
    counts as finished only with no job of it queued: until the start job runs, a failed
    earlier attempt's state would read as this one's.
    """
    start = last_time = time.monotonic()
    last_bytes: float | None = None
    while True:
        state = unit_state(unit)
        _, out = remote.run(f"du -sb {sh(model.host_dir)} 2>/dev/null | cut -f1")
        size = float(next((line for line in out.stdout_lines if line.isdigit()), 0))
        now = time.monotonic()
        rate = "" if last_bytes is None else f", {(size - last_bytes) / max(now - last_time, 1e-6) / 2**20:.1f} MiB/s"
        last_bytes, last_time = size, now
        logger.info(f"[{host.name}] downloading {model.name}: {download_progress(size, model.weight_bytes)}{rate}, "
                    f"{now - start:.0f}s")
        if "ActiveState" not in state:
            raise OperationError(f"cannot read the state of {unit}.service (systemctl show printed {state!r})")
        if state["ActiveState"] in ("inactive", "failed") and state.get("Jobs", "0").strip() == "0":
            if state.get("Result") != "success":
                _, journal = remote.run(f"journalctl -u {sh(unit + '.service')} -n 40 --no-pager -o cat")
                raise OperationError(f"model download failed ({state.get('Result')}):\n"
                                     + "\n".join(journal.stdout_lines))
            return
        gevent.sleep(5)
