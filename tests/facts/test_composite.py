"""FactSections: many facts in one command, each value the one its own fact would give.

The real composite command runs here with sh and bash on sections this machine has (values are compared
with each section's command run alone, never written out); then a failing or empty section in the middle;
then the fake hosts' harness, which answers a composite command section by section.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError
from pyinfra.facts.pip import PipPackages

from facts import commands
from facts import pyinfra_facts as fact
from facts.gather import InstallQuery, gather_host_facts, host_sections
from facts.model import InstallFacts
from facts.pyinfra_facts import FactSection, FactSections, gather_sections
from tests.fakehosts import fake_host_data, make_fake_state, profiles, states


def _lines(stdout: str) -> list[str]:
    """Output lines as pyinfra reads them: split at newlines, a final newline ends the last line."""
    if not stdout:
        return []
    return stdout.removesuffix("\n").split("\n")


def _run(shell: str, command: str) -> list[str]:
    proc = subprocess.run([shell, "-c", command], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return _lines(proc.stdout)


def _alone(section: FactSection) -> Any:
    """What host.get_fact gives for the section's fact on this machine: its own command, sent alone."""
    instance = section.fact()
    tool = instance.requires_command(**section.kwargs)
    if tool and subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
        return instance.default()
    lines = _run("sh", instance.command(**section.kwargs))
    return instance.process(lines) if lines else instance.default()


def _composite(shell: str, sections: tuple[FactSection, ...]) -> dict[str, Any]:
    sections_fact = FactSections()
    return sections_fact.process(_run(shell, sections_fact.command(sections)))


def _process(sections: tuple[FactSection, ...], output: list[str]) -> dict[str, Any]:
    sections_fact = FactSections()
    sections_fact.command(sections)
    return sections_fact.process(output)


@pytest.fixture
def local_sections(tmp_path: Path) -> tuple[FactSection, ...]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 36}))  # no final newline, as often
    (tmp_path / "a.conf").write_text("one\n\nthree\n")
    pip = tmp_path / "pip"
    pip.write_text("#!/bin/sh\necho 'vllm==0.11.0'\necho 'torch==2.8.0'\n")
    pip.chmod(0o755)
    return (
        FactSection("os", fact.OsRelease),
        FactSection("mem", fact.MemTotal),
        FactSection("nproc", fact.CpuCount),
        FactSection("kernel", fact.KernelRelease),
        FactSection("shm", fact.ShmSize),
        FactSection("pci", fact.NvidiaPciDevices),
        FactSection("modules", fact.KernelModules),
        FactSection("disk", fact.DiskSpace, {"path": str(tmp_path / "not" / "there")}),
        FactSection("config", fact.ModelConfig, {"path": str(model)}),
        FactSection("no-config", fact.ModelConfig, {"path": str(tmp_path / "missing")}),
        FactSection("files", fact.TextFiles, {"paths": (str(tmp_path / "a.conf"), str(tmp_path / "b.conf"))}),
        FactSection("pip", PipPackages, {"pip": str(pip)}),
        FactSection("no-pip", PipPackages, {"pip": str(tmp_path / "no-pip")}),
    )


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_each_section_gives_what_its_command_alone_gives(shell: str, local_sections: tuple[FactSection, ...]) -> None:
    together = _composite(shell, local_sections)
    assert list(together) == [s.key for s in local_sections]
    for section in local_sections:
        alone = _alone(section)
        if section.key == "disk":  # free space moves between two df runs; the filesystem and its size do not
            alone = dataclasses.replace(alone, avail_bytes=together["disk"].avail_bytes)
        assert together[section.key] == alone, section.key
    assert together["config"] == {"num_hidden_layers": 36}
    assert together["no-config"] is None
    files = {s.key: s for s in local_sections}["files"].kwargs["paths"]
    assert together["files"] == {files[0]: "one\n\nthree\n", files[1]: None}
    assert together["pip"] == {"vllm": {"0.11.0"}, "torch": {"2.8.0"}} and together["no-pip"] == {}


class _Fails(FactBase[str]):
    """Prints a line, then fails: the shell must still run the sections after it."""

    def command(self) -> str:
        return "echo partial; exit 3"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_failed_or_empty_section_stops_nothing_after_it(shell: str, tmp_path: Path) -> None:
    sections = (
        FactSection("nproc", fact.CpuCount),
        FactSection("empty", fact.ModelConfig, {"path": str(tmp_path / "missing")}),
        FactSection("secure_boot", fact.SecureBoot),
        FactSection("fails", _Fails),
        FactSection("os", fact.OsRelease),
    )
    command = FactSections().command(sections)
    output = _run(shell, command)
    found = commands.split_sections(output)
    assert found["empty"] == (0, [])
    assert found["fails"] == (3, ["partial"])
    assert found["os"][0] == 0 and fact.OsRelease().process(found["os"][1]) == _alone(sections[-1])
    # an empty section is its fact's default(), as get_fact gives for no output
    assert _composite(shell, sections[:3])["empty"] is None
    assert _composite(shell, sections[:3])["secure_boot"] == _alone(sections[2])
    # a failed section fails the whole fact, naming only that section: pyinfra then fails the host,
    # as it does when that fact's own command fails
    with pytest.raises(FactProcessError, match=r"^fails: exit status 3$"):
        _process(sections, output)


def test_output_cut_short_is_a_failure_and_banner_lines_are_ignored() -> None:
    sections = (FactSection("nproc", fact.CpuCount), FactSection("kernel", fact.KernelRelease))
    output = ["Welcome!", "@@vllm-deploy-fact nproc@@", "8", "", "@@vllm-deploy-fact-exit 0@@",
              "@@vllm-deploy-fact kernel@@", "6.1.0"]
    assert commands.split_sections(output) == {"nproc": (0, ["8"]), "kernel": (None, ["6.1.0"])}
    with pytest.raises(FactProcessError, match=r"^kernel: no answer"):
        _process(sections, output)


def test_a_last_line_without_newline_is_kept_and_an_empty_last_line_too() -> None:
    # "a" unterminated, then "b\n\n": the end line's own newline is dropped exactly once
    output = ["@@vllm-deploy-fact x@@", "a", "@@vllm-deploy-fact-exit 0@@",
              "@@vllm-deploy-fact y@@", "b", "", "", "@@vllm-deploy-fact-exit 0@@"]
    assert commands.split_sections(output) == {"x": (0, ["a"]), "y": (0, ["b", ""])}


def test_the_command_text_splits_back_into_its_sections() -> None:
    sections = host_sections("/opt/models/Qwen3-8B", ("/opt/models/Qwen3-8B", "/data/m2"))
    text = FactSections().command(sections)
    assert commands.split_composite(text) == [(s.key, s.command()) for s in sections]
    assert commands.split_composite(commands.NPROC) == []
    answers = [(s.key, i % 2 == 0, [f"line {i}", ""]) for i, s in enumerate(sections)]
    assert commands.split_sections(commands.join_sections(answers)) == {
        key: (0 if ok else 1, lines) for key, ok, lines in answers}


def test_keys_must_be_plain_and_unique() -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        FactSections().command((FactSection("two words", fact.CpuCount),))
    with pytest.raises(ValueError, match="duplicate"):
        FactSections().command((FactSection("a", fact.CpuCount), FactSection("a", fact.MemTotal)))


# --- the fake hosts' harness -------------------------------------------------------------------------------------
def _install_query() -> InstallQuery:
    sections = (
        FactSection("stage.files", fact.TextFiles, {"paths": ("/etc/apt/sources.list",)}),
        FactSection("stage.hashes", fact.FileHashes, {"paths": ("/etc/apt/keyrings/docker.asc",)}),
        FactSection("stage.daemon", fact.DockerDaemonConfig),
        FactSection("stage.conda", fact.CondaState, {"prefix": "/opt/conda", "env": "/opt/conda/envs/vllm"}),
        FactSection("stage.pip", PipPackages, {"pip": "/opt/vllm/venv/bin/pip"}),
    )
    return InstallQuery(sections, lambda values, _os: InstallFacts(
        apt_files=values["stage.files"], docker_hashes=values["stage.hashes"],
        docker_daemon=values["stage.daemon"], conda=values["stage.conda"],
        venv_packages=values["stage.pip"]))


@pytest.mark.parametrize(("profile", "state"), [(p, s) for p in profiles() for s in states(p)])
def test_a_fake_host_answers_each_section_as_its_own_fact(profile: str, state: str) -> None:
    extra = {"fake_responses": {
        commands.LISTENING_TCP: ["LISTEN 0      4096         0.0.0.0:8000 0.0.0.0:*"],
        "/opt/vllm/venv/bin/pip freeze --all": ["vllm==0.11.0"],
        "cat /etc/os-release": {"stdout": [], "stderr": ["cat: /etc/os-release: Permission denied"]},
    }}
    host = make_fake_state([("h", fake_host_data(profile, state, extra))]).inventory.get_host("@fake/h")
    query = _install_query()
    sections = host_sections("/opt/models/a", ("/opt/models/a", "/opt/models/b")) + query.sections
    values = gather_sections(host, sections)
    assert len(host.connector.executed_commands) == 1
    for section in sections:
        assert values[section.key] == host.get_fact(section.fact, **section.kwargs), section.key
    assert values["listening"].in_use(8000) and not values["listening"].in_use(22)
    assert values["stage.pip"] == {"vllm": {"0.11.0"}}
    assert values["os"] is None  # stderr only: no output, the default

    before = len(host.connector.executed_commands)
    facts = gather_host_facts(host, "/opt/models/a", [8000], ("/opt/models/a", "/opt/models/b"), install=query)
    assert len(host.connector.executed_commands) == before + 1
    assert facts.install is not None and facts.install.venv_packages == {"vllm": {"0.11.0"}}
    assert facts.port_in_use(8000) and facts.cpu_count == host.get_fact(fact.CpuCount)


def test_a_failed_fake_answer_fails_the_host_as_a_failed_fact_does() -> None:
    extra = {"fake_responses": {commands.NPROC: {"success": False, "stderr": "nproc: broken"}}}
    state = make_fake_state([("h", fake_host_data("debian12-cpu", extra=extra)),
                             ("other", fake_host_data("debian12-cpu"))])
    host = state.inventory.get_host("@fake/h")
    values = gather_sections(host, host_sections("/opt/models/a"))
    assert host in state.failed_hosts
    assert values == {s.key: s.fact().default() for s in host_sections("/opt/models/a")}
