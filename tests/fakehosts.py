"""Recorded host profiles as pyinfra `@fake` host data, and an in-process pyinfra State to run them.

A profile is a directory under tests/fixtures/hosts/ holding one file per fact
(`<fact>.txt`, the command's output as printed); a state subdirectory
(nodriver, olddriver, converged, ...) overrides files of the profile. Each file
is keyed in `fake_responses` by the exact command text from facts.commands, so a
deploy run against the fake host reads the same bytes a real server would send.
A fact whose file is absent gets pyinfra's fake default: success, no output.

Two ways to run a deploy against these hosts:

* in-process: ``state = make_fake_state([("gpu1", fake_host_data(...))])`` then
  ``host = state.inventory.get_host("@fake/gpu1")`` and ``host.get_fact(...)``,
  or ``pyinfra.api.operations.run_ops(state)`` after adding operations;
* the CLI: write an inventory with :func:`write_inventory` and run
  ``python tests/fakerun.py OUT inventory.py deploy.py --dry -y``.

Both make the fake connector answer a FactSections command (many facts in one, see
facts.commands.composite) section by section, each sub-command looked up in
`fake_responses` as if it had been sent alone (:func:`answer_fact_sections`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pyinfra.connectors.fake import FakeConnector
from pyinfra.connectors.util import CommandOutput, OutputLine

from facts import commands

PROFILES_DIR = Path(__file__).resolve().parent / "fixtures" / "hosts"
DEFAULT_STATE = "converged"

# fixture file stem -> the text that identifies the fact's command (first match wins, in this order)
FACT_MATCHERS: dict[str, str] = {
    "gpus": commands.NVIDIA_GPUS,
    "topology": commands.NVIDIA_TOPOLOGY,
    "nvidia_smi": commands.NVIDIA_SMI,
    "lspci": commands.NVIDIA_PCI_MARK,
    "nvidia_module": commands.NVIDIA_MODULE_VERSION,
    "os_release": commands.OS_RELEASE,
    "meminfo": commands.MEMINFO,
    "nproc": commands.NPROC,
    "disk": commands.DISK_SPACE_MARK,
    "shm": commands.SHM_SIZE,
    "ss": commands.LISTENING_TCP,
    "modules": commands.KERNEL_MODULES,
    "secure_boot": commands.SECURE_BOOT,
    "dpkg": commands.DPKG_MARK,
    "docker_info": "docker info --format",
    "model_config": commands.MODEL_CONFIG_MARK,
    # install stages of the docker and conda runtimes; `files` is tail's output for every file they read
    "daemon_json": commands.DOCKER_DAEMON_JSON,
    "files": commands.TEXT_FILES_MARK,
    "hashes": commands.FILE_HASHES_MARK,
    "conda": commands.CONDA_STATE_MARK,
    "kernel": commands.KERNEL_RELEASE,
}


class ProfileError(LookupError):
    """A profile or state that has no recorded outputs."""


def profiles() -> list[str]:
    return sorted(p.name for p in PROFILES_DIR.iterdir() if p.is_dir())


def states(profile: str) -> list[str]:
    """The states recorded for a profile; a profile without state directories has only 'converged'."""
    base = _profile_dir(profile)
    found = sorted(p.name for p in base.iterdir() if p.is_dir())
    return found or [DEFAULT_STATE]


def _profile_dir(profile: str) -> Path:
    base = PROFILES_DIR / profile
    if not base.is_dir():
        raise ProfileError(f"profile {profile!r} not found; recorded profiles: {', '.join(profiles())}")
    return base


def recorded_outputs(profile: str, state: str = DEFAULT_STATE) -> dict[str, str]:
    """Fact stem -> recorded text for one profile in one state (state files override the profile's)."""
    base = _profile_dir(profile)
    if state not in states(profile):
        raise ProfileError(f"profile {profile!r} has no state {state!r}; recorded: {', '.join(states(profile))}")
    outputs = {p.stem: p.read_text() for p in sorted(base.glob("*.txt"))}
    state_dir = base / state
    if state_dir.is_dir():
        outputs.update({p.stem: p.read_text() for p in sorted(state_dir.glob("*.txt"))})
    unknown = set(outputs) - set(FACT_MATCHERS)
    if unknown:
        raise ProfileError(f"{base}: files {sorted(unknown)} match no fact; known: {sorted(FACT_MATCHERS)}")
    return outputs


def fake_responses(outputs: dict[str, str]) -> dict[str | re.Pattern[str], Any]:
    return {FACT_MATCHERS[stem]: outputs[stem].splitlines() for stem in FACT_MATCHERS if stem in outputs}


def fake_host_data(profile: str, state: str = DEFAULT_STATE, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """pyinfra host data for an `@fake` host answering like `profile` in `state`.

    `extra` is merged into the host data; its own `fake_responses` come first, so
    a test can override one command (e.g. `{"ss -ltnH": [...]}`) or add answers
    for operations' commands.
    """
    extra = dict(extra or {})
    responses: dict[str | re.Pattern[str], Any] = dict(extra.pop("fake_responses", {}) or {})
    for key, value in fake_responses(recorded_outputs(profile, state)).items():
        responses.setdefault(key, value)
    return {"fake_delay": 0, "fake_delay_jitter": 0, **extra, "fake_responses": responses}


def model_config_response(config: dict[str, Any]) -> dict[str, list[str]]:
    """A fake_responses entry that makes the model's config.json present on the host."""
    import json

    return {commands.MODEL_CONFIG_MARK: [json.dumps(config)]}


_lookup_alone = FakeConnector._lookup_response


def _lookup_sections(self: FakeConnector, command_str: str) -> tuple[bool, CommandOutput]:
    """pyinfra's lookup for a plain command; for a FactSections command, each section's command looked up
    alone and the answers framed as the real shell frames them (a failed lookup is that section's failure)."""
    sections = commands.split_composite(command_str)
    if not sections:
        return _lookup_alone(self, command_str)
    answers, stderr = [], []
    for key, command in sections:
        success, output = _lookup_alone(self, command)
        answers.append((key, success, output.stdout_lines))
        stderr += output.stderr_lines
    lines = [OutputLine("stdout", line) for line in commands.join_sections(answers)]
    return True, CommandOutput(lines + [OutputLine("stderr", line) for line in stderr])


def answer_fact_sections() -> None:
    """Make every `@fake` host of this process answer FactSections commands section by section (idempotent)."""
    FakeConnector._lookup_response = _lookup_sections  # type: ignore[method-assign]


def make_fake_state(hosts: list[tuple[str, dict[str, Any]]]) -> Any:
    """A connected pyinfra State over `@fake/<name>` hosts, ready for get_fact / add_op / run_ops."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all

    answer_fact_sections()
    inventory = Inventory(([(f"@fake/{name}", data) for name, data in hosts], {}))
    state = State(inventory, Config())
    connect_all(state)
    return state


def write_inventory(path: Path, hosts: list[tuple[str, str, str]], extra: dict[str, Any] | None = None) -> Path:
    """An inventory.py for the pyinfra CLI: hosts are (name, profile, state); `extra` is plain host data."""
    lines = [
        "import sys",
        f"sys.path.insert(0, {str(PROFILES_DIR.parent.parent.parent)!r})",
        "from tests.fakehosts import answer_fact_sections, fake_host_data",
        "answer_fact_sections()",
        f"EXTRA = {extra or {}!r}",
        "hosts = [",
    ]
    lines += [f"    ('@fake/{name}', fake_host_data({profile!r}, {state!r}, EXTRA))," for name, profile, state in hosts]
    lines.append("]")
    path.write_text("\n".join(lines) + "\n")
    return path
