"""Parsers of the docker/conda install stages' facts, on the odd outputs real hosts print."""

from __future__ import annotations

from facts import commands
from facts import parsers as p


def test_daemon_json_states() -> None:
    assert p.parse_daemon_json("cat: /etc/docker/daemon.json: No such file or directory").status == "missing"
    assert p.parse_daemon_json("").status == "empty"
    assert p.parse_daemon_json("{\n  \"runtimes\": \n").status == "invalid"
    assert p.parse_daemon_json("[1]").status == "invalid"
    ok = p.parse_daemon_json('{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}')
    assert ok.status == "ok" and ok.nvidia_runtime
    assert not p.parse_daemon_json('{"runtimes": {"runc": {}}}').nvidia_runtime


def test_tail_files_with_errors_anywhere_and_separators_dropped() -> None:
    out = ("tail: cannot open '/etc/apt/sources.list' for reading: No such file or directory\n"
           "==> /a <==\nline 1\n\n\n==> /b <==\ntail: cannot open '/c' for reading: Permission denied\n"
           "x\n")
    assert p.parse_tail_files(out) == {"/etc/apt/sources.list": None, "/a": "line 1\n", "/b": "x\n", "/c": None}
    assert p.parse_tail_files("==> /empty <==\n") == {"/empty": ""}


def test_sha256sum_lines() -> None:
    digest = "9" * 64
    out = f"{digest}  /etc/apt/keyrings/docker.asc\nsha256sum: /etc/apt/keyrings/x.asc: No such file or directory\n"
    assert p.parse_sha256sum(out) == {"/etc/apt/keyrings/docker.asc": digest, "/etc/apt/keyrings/x.asc": None}


def test_conda_state_without_conda() -> None:
    out = ("sh: 1: /opt/vllm/miniconda3/bin/conda: not found\n"
           "sh: 1: /opt/vllm/miniconda3/envs/vllm/bin/python: not found\n"
           "sh: 1: /opt/vllm/miniconda3/envs/vllm/bin/python: not found\n")
    state = p.parse_conda_state(out)
    assert state == p.CondaState() and state.python_minor is None


def test_conda_state_reads_versions_and_normalises_names() -> None:
    state = p.parse_conda_state("conda 24.4.0\nPython 3.12.11\nFlash_Attn==2.7.4\n[notice] A new release\n")
    assert (state.conda_version, state.python_minor) == ("24.4.0", "3.12")
    assert state.packages == {"flash-attn": "2.7.4"}


def test_commands_quote_paths_and_never_fail() -> None:
    assert commands.text_files(["/a b"]) == "tail -v -n +1 -- '/a b' 2>&1 || true"
    assert commands.file_hashes(["/k"]).endswith("2>&1 || true")
    assert commands.CONDA_STATE_MARK in commands.conda_state("/opt/c", "/opt/c/envs/v")
