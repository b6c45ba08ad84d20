"""Hub downloads through the real pyinfra CLI on a recorded H100 host (@fake): check, marker, re-plan.

The download oneshot's answers (its state, its journal, the config.json it left)
are faked like a real host would print them; the journal of a failed check is the
report remote/model_check.py writes for a real directory with a missing and a
short shard.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from pyinfra.context import ctx_host, ctx_state

from facts import commands
from facts.gather import gather_host_facts
from plan.service import build_plan
from plan.settings import load_instances
from remote import model_check
from sizing.catalog import find_model
from tasks.model_files import MARKER, download_progress, downloaded_config_command
from tests.deploy.fakeserver import plan_for, run_fake_deploy, serving_responses
from tests.fakehosts import fake_host_data, make_fake_state

PROFILE = "h100-x1-ubuntu2404"
QWEN = {"model": "Qwen/Qwen3-8B", "vllm_tensor_parallel_size": 1}
UNIT = "vllm-model-download.service"


def _deploy(tmp_path: Path, data: dict[str, Any], answers: dict[str, Any] | None = None) -> tuple[Any, str, Path]:
    """Deploy with the model absent at plan time; `answers` replace or add to a serving host's answers."""
    plan = plan_for(PROFILE, data)
    responses = {**serving_responses(plan, model_present=False), **(answers or {})}
    proc, out = run_fake_deploy(tmp_path, PROFILE, {**data, "fake_responses": responses}, None)
    return proc, proc.stdout + proc.stderr, out


def _commands(out: Path) -> list[str]:
    return (out / "commands.txt").read_text().splitlines()


def _index(commands: list[str], text: str) -> int:
    return next(i for i, command in enumerate(commands) if text in command)


def _service_touched(out: Path) -> bool:
    unit_file = (out / "files/etc/systemd/system/vllm.service").exists()
    return unit_file or any(re.search(r"systemctl (re)?start .*vllm\.service", c) for c in _commands(out))


@pytest.mark.parametrize(("source", "preset", "lister"), [
    ("modelscope", "upstream", "--source modelscope"),
    ("huggingface", "tuna", "--source huggingface"),
])
def test_oneshot_checks_the_file_list_before_the_marker_then_serves(tmp_path: Path, source: str, preset: str,
                                                                     lister: str) -> None:
    data = {**QWEN, "model_source": source, "mirror_preset": preset, "model_revision": "v1.0"}
    proc, output, out = _deploy(tmp_path, data)
    assert proc.returncode == 0, output[-3000:]
    plan = plan_for(PROFILE, data)

    unit = (out / "files/etc/systemd/system/vllm-model-download.service").read_text()
    starts = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(starts) == 2, "download, then check: a oneshot runs its ExecStart lines in order"
    assert shlex.split(starts[0])[1] == "download"
    check = shlex.split(starts[1])
    assert check[:2] == ["/opt/vllm/hub-venv/bin/python", "/opt/vllm/model-check.py"]
    assert f"{lister} --model Qwen/Qwen3-8B --dir {plan.model.host_dir} --revision v1.0" in starts[1]
    assert ("--endpoint https://hf-mirror.com" in starts[1]) == (source == "huggingface")
    # Only the check writes the marker; a stale one is removed before the download starts.
    assert [line for line in unit.splitlines() if MARKER in line and not line.startswith("#")] == [
        f"ExecStartPre=/bin/rm -f {plan.model.host_dir}/{MARKER}"]
    uploaded = (out / "files/opt/vllm/model-check.py").read_bytes()
    assert uploaded == Path(model_check.__file__).read_bytes()

    commands = _commands(out)
    download = _index(commands, f"systemctl start --no-block {UNIT}")
    replan = _index(commands, downloaded_config_command(plan.model.host_dir))
    start = next(i for i, c in enumerate(commands) if re.search(r"systemctl (re)?start .*vllm\.service", c))
    assert download < replan < start, "re-planned from config.json after the download, before vLLM starts"
    install = _index(commands, "/opt/vllm/venv/bin/pip install")
    waited = _index(commands, f"NRestarts,Result {UNIT}")
    assert download < install < waited, "the weights download while vLLM installs; the wait comes after"
    assert "the downloaded config.json confirms the plan" in output
    assert "vLLM serving 'Qwen3-8B'" in output


def test_missing_or_short_file_fails_the_host_with_the_file_named(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "run").mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model-00001-of-00002.safetensors").write_bytes(b"x" * 100)
    listing = [model_check.RemoteFile("config.json", 2),
               model_check.RemoteFile("model-00001-of-00002.safetensors", 500),
               model_check.RemoteFile("model-00002-of-00002.safetensors", 300)]
    result = model_check.compare(model_dir, listing)
    journal = ["Downloading Model to directory: /srv/models/Qwen3-8B"] + model_check.format_report(
        "Qwen/Qwen3-8B", "modelscope", None, "/srv/models/Qwen3-8B", result).splitlines()

    proc, output, out = _deploy(tmp_path / "run", QWEN, answers={
        f"NRestarts,Result {UNIT}": ["ActiveState=failed", "Result=exit-code"],
        f"journalctl -u {UNIT}": journal,
    })
    assert proc.returncode != 0
    assert "model download failed (exit-code)" in output
    assert "missing  model-00002-of-00002.safetensors" in output
    assert "short    model-00001-of-00002.safetensors: 100 bytes of 500 bytes" in output
    assert "run the deploy again to resume the download" in output
    commands = _commands(out)
    assert not any(downloaded_config_command("/srv/models/Qwen3-8B") in c for c in commands)
    assert not _service_touched(out), "no service starts on an incomplete model"


def test_downloaded_config_that_changes_the_plan_stops_before_the_service(tmp_path: Path) -> None:
    plan = plan_for(PROFILE, QWEN)
    real = {**find_model("Qwen/Qwen3-8B").config, "max_position_embeddings": 8192}
    proc, output, out = _deploy(tmp_path, QWEN, answers={
        downloaded_config_command(plan.model.host_dir): json.dumps(real)})
    assert proc.returncode != 0
    assert "the downloaded config.json of Qwen/Qwen3-8B changes the plan" in output
    assert f"vllm: max model len: {plan.max_model_len} -> 8192" in output
    assert "Run the deploy again" in output
    assert _index(_commands(out), f"systemctl start --no-block {UNIT}") >= 0, "the download itself ran"
    assert not _service_touched(out), "the unit rendered from the catalog plan must not start"


def test_second_run_plans_from_the_downloaded_config_and_skips_the_download(tmp_path: Path) -> None:
    """What the failure above tells the user to do: with marker and config.json there, the plan follows them."""
    real = {**find_model("Qwen/Qwen3-8B").config, "max_position_embeddings": 8192}
    catalog_plan = plan_for(PROFILE, QWEN)
    on_host = {commands.model_config(catalog_plan.model.host_dir): json.dumps(real)}
    fake = make_fake_state([("h", fake_host_data(PROFILE, extra={"fake_responses": on_host}))])
    host = fake.inventory.get_host("@fake/h")
    with ctx_state.use(fake), ctx_host.use(host):
        settings = load_instances(QWEN)[0].settings
        plan = build_plan(settings, gather_host_facts(host, model_dir=settings.model_dir, ports=[8000]), "h")
    assert (catalog_plan.max_model_len, plan.max_model_len) == (40960, 8192)

    responses = {**on_host, **serving_responses(plan, model_present=True)}
    proc, out = run_fake_deploy(tmp_path, PROFILE, {**QWEN, "fake_responses": responses}, None)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert not (out / "files/etc/systemd/system/vllm-model-download.service").exists()
    assert "--max-model-len 8192" in (out / "files/etc/systemd/system/vllm.service").read_text()


def test_download_progress_shows_the_total_when_the_checkpoint_size_is_known() -> None:
    assert download_progress(3 * 2**30, None) == "3.00 GiB"
    assert download_progress(2**30, 4 * 2**30) == "1.00/4.00 GiB (25%)"
    # The directory also holds the config and tokenizer files, so it can pass the weights' size.
    assert download_progress(4.1 * 2**30, 4 * 2**30) == "4.10/4.00 GiB (100%)"


def test_apt_lists_are_refreshed_once_for_the_hub_cli_and_the_runtime(tmp_path: Path) -> None:
    """Both stages install packages on this fresh host (its lists are older than a day); one `apt-get update`."""
    proc, output, out = _deploy(tmp_path, {**QWEN, "model_source": "modelscope"})
    assert proc.returncode == 0, output[-3000:]
    commands = _commands(out)
    updates = [i for i, command in enumerate(commands) if command.startswith("apt-get update")]
    installs = [i for i, command in enumerate(commands) if "apt-get" in command and " install " in command]
    assert len(installs) == 2, "python3-venv for the hub CLI, then the runtime's packages"
    assert len(updates) == 1 and updates[0] < installs[0]


def test_with_a_wheelhouse_the_hub_cli_installs_from_it_alone_and_it_is_copied_once(tmp_path: Path) -> None:
    """An offline site (wheelhouse, hub mirror on its own network): no pip index may be asked for the hub CLI."""
    from tasks.service_account import WHEELHOUSE_MARKER

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "huggingface_hub-1.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "run").mkdir()
    data = {**QWEN, "model_source": "huggingface", "vllm_wheelhouse": str(wheels)}
    proc, output, out = _deploy(tmp_path / "run", data)
    assert proc.returncode == 0, output[-3000:]
    commands = _commands(out)
    hub_cli = _index(commands, "/opt/vllm/hub-venv/bin/pip install")
    assert "--no-index --find-links /opt/vllm/wheelhouse huggingface_hub" in commands[hub_cli]
    # Created by the venv module that python3-venv provides: a fresh server has no `virtualenv` command.
    assert _index(commands, "python3 -m venv /opt/vllm/hub-venv") < hub_cli
    assert not [command for command in commands if command.startswith("virtualenv")]
    copies = [i for i, command in enumerate(commands) if "vllm-deploy-copy" in command]
    assert len(copies) == 1 and copies[0] < hub_cli, "one copy of the wheelhouse, before the hub CLI needs it"
    assert output.count("Starting operation: Offline wheelhouse marker") == 1, output[-3000:]
    assert (out / f"files/opt/vllm/wheelhouse/{WHEELHOUSE_MARKER}").exists()
    assert _index(commands, f"systemctl start --no-block {UNIT}") < _index(commands, "/opt/vllm/venv/bin/pip install")
