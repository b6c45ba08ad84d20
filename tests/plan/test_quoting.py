"""Hostile values through plan/quoting.py and then through the real parser of each language.

No reimplementation decides what a value means; each language's own reader does:
- shell: `sh` (dash) and `bash` run the quoted commands, with recording stand-ins (shims) for
  programs that would touch the machine, and a side-effect file that must never appear;
- systemd: `systemd --test --system` (as an unprivileged user, which test mode requires) loads
  the rendered unit files and dumps what it parsed: Exec argv, Environment=, Description=,
  paths, and every complaint about the file. `$` expansion in Exec lines happens at exec time,
  which test mode does not reach, so Exec words are compared with `$` still doubled;
- systemd's env-file reader: the environment.d generator reads the file with the same tokenizer
  as EnvironmentFile= (it then expands `$NAME`, so values that would expand are left out there);
- docker's --env-file: the docker CLI parses the file and sends it to a recording fake daemon;
- nginx: `nginx -t` on a configuration of nginx_string outputs, then nginx serves them back.
A tool that is missing skips the test saying so, and fails it with CI=true.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import socketserver
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyinfra.api.util import get_template

from plan import conda as cd
from plan import quoting
from plan.docker_engine import KeyDownload, key_command
from plan.service import ModelPlan, ServicePlan
from remote.model_check import MANIFEST, MARKER
from tasks.install_venv import pip_install_args
from tasks.model_files import download_unit_values, verify_command

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
SIDE = "/tmp/vllm-deploy-quoting-pwned"  # a hostile value that runs would create it
ENV_GENERATOR = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"

HOSTILE = [
    "plain", "a;b", f"; touch {SIDE}", f"$(touch {SIDE})", f"`touch {SIDE}`", f"&& touch {SIDE}",
    f"| touch {SIDE}", f"> {SIDE}", "it's", 'say "hi"', "'", '"', "two\nlines", "tab\there", "esc\x1b[0m",
    "%h", "%%", "100%", "a b", "  outer  ", "back\\slash", "trail\\", "\\", "\\n", "ünïcødé ☃ 模型",
    "$HOME", "${HOME}", "$$", "-flag", "", "*", "#hash", "a=b", "--x=y z",
]
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(tool: str | None, what: str) -> str:
    """The tool's path; without it the test skips (fails under CI=true, where a skip would hide a gap)."""
    if tool and (path := shutil.which(tool) or (tool if os.access(tool, os.X_OK) else None)):
        return path
    reason = f"{what} is not installed here"
    if _ci():
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def no_side_effect() -> Iterator[None]:
    """Every test: the side-effect file is absent before and after."""
    Path(SIDE).unlink(missing_ok=True)
    yield
    assert not Path(SIDE).exists(), f"a hostile value ran a command: {SIDE} exists"


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A temporary directory the unprivileged systemd test mode can read."""
    path = Path(tempfile.mkdtemp(prefix="vllm-deploy-quoting-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---- shell ------------------------------------------------------------------------------------

def _shims(bin_dir: Path, log_dir: Path, names: dict[str, str]) -> None:
    """Stand-ins that record their argv (NUL-separated, one file per call, in call order)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    for name, extra in names.items():
        shim = bin_dir / name
        shim.write_text(
            "#!/bin/sh\n"
            f"n=$(ls '{log_dir}' | wc -l); f='{log_dir}'/$(printf %04d \"$n\")\n"
            "printf '%s\\0' \"$0\" \"$@\" > \"$f\"\n"
            f"{extra}\n"
        )
        shim.chmod(0o755)


def _calls(log_dir: Path) -> list[list[str]]:
    return [(log_dir / f).read_bytes().decode().split("\0")[:-1] for f in sorted(os.listdir(log_dir))]


def _run_sh(command: str, cwd: Path, path_dirs: list[Path] = (), shell: str = "sh", stdin: str = "") -> str:
    env = {"PATH": ":".join([*map(str, path_dirs), "/usr/bin", "/bin"]), "HOME": str(cwd)}
    proc = subprocess.run([shell, "-c", command], cwd=cwd, env=env, capture_output=True, text=True, input=stdin,
                          timeout=30)
    assert proc.returncode == 0, f"{command!r}: {proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_sh_join_gives_the_shell_exactly_these_words(tmp_path: Path, shell: str) -> None:
    out = _run_sh("printf '%s\\0' " + quoting.sh_join(HOSTILE), tmp_path, shell=shell)
    assert out.split("\0")[:-1] == HOSTILE
    assert os.listdir(tmp_path) == []


def _hostile_dir(base: Path) -> Path:
    """A directory whose name holds shell syntax (a `/` cannot be in a name)."""
    path = base / "d ;$(touch pwned)`touch pwned`'q\"\n%h$HOME&|>x"
    path.mkdir(parents=True)
    return path


def test_pip_index_url_stays_one_argument(tmp_path: Path) -> None:
    url = f"https://mirror/simple; touch {SIDE}; $(touch {SIDE}) `touch {SIDE}` 'q\"\n"
    plan = SimpleNamespace(install=SimpleNamespace(wheelhouse_remote=None, index_url=url))
    _shims(tmp_path / "bin", tmp_path / "log", {"pip": ""})
    _run_sh(f"pip install {pip_install_args(plan)}", tmp_path, [tmp_path / "bin"])
    plan.install.wheelhouse_remote = str(_hostile_dir(tmp_path))
    _run_sh(f"pip install {pip_install_args(plan)}", tmp_path, [tmp_path / "bin"])
    assert [c[1:] for c in _calls(tmp_path / "log")] == [
        ["install", "--index-url", url], ["install", "--no-index", "--find-links", plan.install.wheelhouse_remote]]
    assert not (tmp_path / "pwned").exists()


def _conda_plan(tmp_path: Path, **changes: Any) -> cd.CondaPlan:
    prefix = _hostile_dir(tmp_path / "prefix")
    env = _hostile_dir(tmp_path / "env")
    for program in (prefix / "bin" / "conda", env / "bin" / "python"):
        program.parent.mkdir()
        _shims(program.parent, tmp_path / "log", {program.name: ""})
    base = cd.CondaPlan(prefix=str(prefix), env=str(env), python="3.12; touch pwned", condarc="", pip_conf=None,
                        installer_url="https://m/a b/Mini;touch pwned;`touch pwned`$(touch pwned) 'q\".sh",
                        installer_sha256="abc; touch pwned")
    return dataclasses.replace(base, **changes)


def test_conda_commands_keep_paths_versions_and_requirements_whole(tmp_path: Path) -> None:
    reqs = ("vllm==0.32.0", f"x; touch {SIDE}", "$(touch pwned)", "a b")
    plan = _conda_plan(tmp_path, recreate_env=True, pip_install=reqs, pip_remove=("torchvision", "`touch pwned`"))
    _shims(tmp_path / "bin", tmp_path / "log", {"rm": ""})  # rm -rf of the environment: recorded, not run
    install = SimpleNamespace(install=SimpleNamespace(wheelhouse_remote=None, index_url="https://m/s;touch pwned"))
    for command in (cd.create_env_command(plan), cd.pip_command(plan, pip_install_args(install)),
                    cd.pip_remove_command(plan)):
        _run_sh(command, tmp_path, [tmp_path / "bin"])
    assert _calls(tmp_path / "log") == [
        [f"{tmp_path}/bin/rm", "-rf", plan.env],
        [f"{plan.prefix}/bin/conda", "create", "-y", "-q", "-p", plan.env, "python=3.12; touch pwned", "pip"],
        [f"{plan.env}/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "--index-url",
         "https://m/s;touch pwned", *reqs],
        [f"{plan.env}/bin/python", "-m", "pip", "uninstall", "-y", "torchvision", "`touch pwned`"],
    ]
    assert not (tmp_path / "pwned").exists()


def test_conda_installer_command_downloads_checks_and_runs_the_one_file(tmp_path: Path) -> None:
    plan = _conda_plan(tmp_path)
    name = plan.installer_url.rsplit("/", 1)[-1]
    curl_writes = 'while [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done'
    keep_stdin = "cat >> \"$f\"; printf '\\0' >> \"$f\""
    _shims(tmp_path / "bin", tmp_path / "log", {"curl": curl_writes, "sha256sum": keep_stdin, "bash": ""})
    _run_sh(cd.installer_command(plan), tmp_path, [tmp_path / "bin"])
    curl, check, run = _calls(tmp_path / "log")
    path = curl[5]
    assert curl[1:5] == ["-fsSL", "--retry", "3", "-o"] and curl[6:] == [plan.installer_url]
    assert Path(path).name == name
    assert check[1:] == ["-c", "--quiet", "-", f"{plan.installer_sha256}  {path}\n"]
    assert run[1:] == [path, "-b", "-p", plan.prefix]
    assert not (tmp_path / "pwned").exists()


def test_apt_key_command_keeps_url_and_path_whole(tmp_path: Path) -> None:
    key = KeyDownload(f"https://m/gpg; touch {SIDE} $(touch pwned)", str(_hostile_dir(tmp_path) / "k.asc"))
    _shims(tmp_path / "bin", tmp_path / "log", {n: "" for n in ("install", "curl", "chmod", "mv")})
    _run_sh(key_command(key), tmp_path, [tmp_path / "bin"])
    assert [c[1:] for c in _calls(tmp_path / "log")] == [
        ["-d", "-m", "0755", "/etc/apt/keyrings"],
        ["-fsSL", "--retry", "3", "-o", f"{key.path}.part", key.url],
        ["0644", f"{key.path}.part"],
        [f"{key.path}.part", key.path],
    ]


def test_local_model_checksum_command_runs_in_a_hostile_model_dir(tmp_path: Path) -> None:
    model_dir = _hostile_dir(tmp_path)
    (model_dir / "w.bin").write_bytes(b"weights")
    (model_dir / MANIFEST).write_text(f"{hashlib.sha256(b'weights').hexdigest()}  w.bin\n")
    _run_sh(verify_command(str(model_dir), "digest; touch pwned"), tmp_path)
    assert (model_dir / MARKER).read_text() == "digest; touch pwned\n"
    assert not (tmp_path / "pwned").exists() and not (model_dir / "pwned").exists()


def _plan(**changes: Any) -> ServicePlan:
    from tests.deploy.fakeserver import plan_for
    return dataclasses.replace(plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B"}), **changes)


def test_docker_run_script_runs_exactly_the_planned_argv(tmp_path: Path) -> None:
    docker = _hostile_dir(tmp_path) / "docker"
    _shims(docker.parent, tmp_path / "log", {"docker": ""})
    _shims(tmp_path / "bin", tmp_path / "log", {"docker": ""})
    plan = _plan(runtime="docker", argv=(str(docker), "run", *HOSTILE))
    script = tmp_path / "docker-run.sh"
    script.write_text(get_template(str(TEMPLATES / "docker-run.sh.j2")).render(plan=plan))
    _run_sh(f"sh {quoting.sh(str(script))}", tmp_path, [tmp_path / "bin"])
    assert _calls(tmp_path / "log") == [[f"{tmp_path}/bin/docker", "rm", "-f", plan.unit],
                                        [str(docker), "run", *HOSTILE]]
    assert not (tmp_path / "pwned").exists()


# ---- systemd units ----------------------------------------------------------------------------

def _systemd_units(unit_dir: Path, units: list[str]) -> dict[str, tuple[list[str], str]]:
    """Load units from unit_dir in systemd's test mode, all in one run (a target wants them all).

    Per unit: (the dump of what systemd parsed, systemd's complaints that name its file).
    """
    systemd = _need("/usr/lib/systemd/systemd" if Path("/usr/lib/systemd/systemd").exists() else "systemd",
                    "systemd (its test mode parses unit files)")
    (unit_dir / "quoting-test.target").write_text("[Unit]\nWants=" + " ".join(units) + "\n")
    command = [systemd, "--test", "--system", "--unit=quoting-test.target", "--log-level=notice",
               "--log-target=console", "--no-pager"]
    if os.geteuid() == 0:  # "Don't run test mode as root."
        command = [_need("setpriv", "setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    for path in unit_dir.iterdir():
        path.chmod(0o644)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "HOME": "/tmp", "PATH": "/usr/bin:/bin",
                               "SYSTEMD_COLORS": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    said = [line for line in (proc.stderr + proc.stdout).split("\n") if "Fragment Path" not in line]
    parsed = {}
    for unit in units:
        start = lines.index(f"\t-> Unit {unit}:")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("\t-> Unit ")), len(lines))
        parsed[unit] = (lines[start + 1:end], "\n".join(line for line in said if f"{unit_dir}/{unit}" in line))
    return parsed


def _systemd_test(unit_dir: Path, unit: str) -> tuple[list[str], str]:
    """One unit through `_systemd_units`."""
    return _systemd_units(unit_dir, [unit])[unit]


def _dump_words(text: str) -> list[str]:
    """Words of the dump's `Command Line:` (systemd prints argv shell-quoted, control bytes C-escaped)."""
    words, i = [], 0
    named = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        word, quoted = "", False
        while i < len(text) and (quoted or text[i] != " "):
            c = text[i]
            if c == '"':
                quoted = not quoted
            elif c == "\\":
                n = text[i + 1]
                if n in named:
                    word += named[n]
                elif n == "x":
                    word += chr(int(text[i + 2:i + 4], 16))
                    i += 2
                elif n.isdigit():
                    word += chr(int(text[i + 1:i + 4], 8))
                    i += 2
                else:
                    word += n
                i += 1
            else:
                word += c
            i += 1
        words.append(word)
    return words


def _dump_fields(block: list[str], name: str) -> list[str]:
    """Values of `name: value` in a unit's dump; a value's own line breaks continue it on untabbed lines."""
    out: list[str] = []
    current: str | None = None
    for line in block:
        if line.startswith("\t"):
            if current is not None:
                out.append(current)
                current = None
            if line.startswith(f"\t\t{name}: "):
                current = line.split(": ", 1)[1]
        elif current is not None:
            current += "\n" + line
    if current is not None:
        out.append(current)
    return out


def _dump_commands(block: list[str], kind: str) -> list[list[str]]:
    """Each command of ExecStart (or ExecStartPre, ...) as the argv systemd parsed."""
    commands, inside = [], False
    for line in block:
        if line.startswith("\t\t-> "):
            inside = line == f"\t\t-> {kind}:"
        elif inside and line.startswith("\t\t\tCommand Line: "):
            commands.append(_dump_words(line.split(": ", 1)[1]))
    return commands


def _as_parsed(argv: list[str]) -> list[str]:
    """What systemd's parser leaves of an Exec argv before exec time: `$$` is undone only when it runs."""
    return [word.replace("$", "$$") for word in argv]


def test_exec_line_reaches_systemd_as_exactly_these_words(world_dir: Path) -> None:
    argv = ["/usr/bin/printf", *HOSTILE]
    (world_dir / "q.service").write_text(f"[Service]\nType=oneshot\nExecStart={quoting.systemd_exec(argv)}\n")
    block, complaints = _systemd_test(world_dir, "q.service")
    assert complaints == ""
    assert _dump_commands(block, "ExecStart") == [_as_parsed(argv)]


@pytest.mark.parametrize("first", ["-/bin/true", "@/bin/true", "+/bin/true", "!/bin/true", ":/bin/true", ""])
def test_exec_line_refuses_a_program_systemd_would_read_as_prefixes(first: str) -> None:
    with pytest.raises(quoting.QuotingError):
        quoting.systemd_exec([first, "x"])


def test_environment_assignments_reach_systemd_as_these_values(world_dir: Path) -> None:
    lines = [quoting.systemd_environment(f"V{i}", value) for i, value in enumerate(HOSTILE)]
    (world_dir / "e.service").write_text("[Service]\nExecStart=/bin/true\n" + "\n".join(lines) + "\n")
    block, complaints = _systemd_test(world_dir, "e.service")
    assert complaints == ""
    parsed = dict(field.split("=", 1) for field in _dump_fields(block, "Environment"))
    assert parsed == {f"V{i}": value for i, value in enumerate(HOSTILE)}


def test_single_values_and_paths_reach_systemd_verbatim(world_dir: Path) -> None:
    """Description= (systemd_value) and ReadOnlyPaths= (systemd_path), one unit per value."""
    taken = [v for v in HOSTILE if not CONTROL.search(v) and not v.endswith("\\") and v.strip()
             and v not in ("*",)]
    for i, value in enumerate(taken):
        (world_dir / f"v{i}.service").write_text(
            f"[Unit]\nDescription={quoting.systemd_value(value)}\n[Service]\nExecStart=/bin/true\n"
            f"ReadOnlyPaths={quoting.systemd_path(f'/srv/{value}')}\n")
    parsed = _systemd_units(world_dir, [f"v{i}.service" for i in range(len(taken))])
    for i, value in enumerate(taken):
        block, complaints = parsed[f"v{i}.service"]
        assert complaints == ""
        assert _dump_fields(block, "Description") == [value.strip()]
        assert _dump_fields(block, "ReadOnlyPaths") == [f"/srv/{value}".rstrip("/")]
    for value in ("two\nlines", "esc\x1b", "trail\\"):
        with pytest.raises(quoting.QuotingError):
            quoting.systemd_value(value)
    with pytest.raises(quoting.QuotingError):
        quoting.systemd_path("/srv/two\nlines")


@pytest.mark.parametrize("source", ["huggingface", "modelscope"])
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_download_unit_runs_the_planned_commands_with_hostile_settings(world_dir: Path, value: str,
                                                                       source: str) -> None:
    """Each hub's CLI with its own endpoint variable (the other hub's endpoint setting is not used)."""
    revision = ["--revision", value] if value else []  # an empty revision is no revision
    model = ModelPlan(name=f"org/{value}", source=source, local_path=None, revision=value,
                      hf_endpoint=f"https://mirror/{value}", modelscope_endpoint=f"http://ms-mirror:8080/{value}",
                      host_dir=f"/srv/models/{value}", weight_bytes=None)
    values = download_unit_values(f"host {value}", model, "/opt/vllm/hub-venv", "/opt/vllm/model-check.py")
    (world_dir / "d.service").write_text(
        get_template(str(TEMPLATES / "model-download.service.j2")).render(**values))
    block, complaints = _systemd_test(world_dir, "d.service")
    assert complaints == ""
    assert _dump_fields(block, "Description") == [
        quoting.comment_text(f"Download {model.name} from {source}").strip().rstrip("\\")]
    env = dict(field.split("=", 1) for field in _dump_fields(block, "Environment"))
    endpoint = model.hf_endpoint if source == "huggingface" else model.modelscope_endpoint
    assert endpoint is not None
    assert env == {"HF_ENDPOINT" if source == "huggingface" else "MODELSCOPE_ENDPOINT": endpoint,
                   "HF_HUB_ENABLE_HF_TRANSFER": "0", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    assert _dump_commands(block, "ExecStartPre") == [
        _as_parsed(["/bin/mkdir", "-p", model.host_dir]),
        _as_parsed(["/bin/rm", "-f", f"{model.host_dir.rstrip('/')}/{MARKER}"])]
    cli = ["hf", "download"] if source == "huggingface" else ["modelscope", "download"]
    assert _dump_commands(block, "ExecStart") == [
        _as_parsed([f"/opt/vllm/hub-venv/bin/{cli[0]}", cli[1], model.name, "--local-dir", model.host_dir,
                    *revision]),
        _as_parsed(["/opt/vllm/hub-venv/bin/python", "/opt/vllm/model-check.py", "--source", source,
                    "--model", model.name, "--dir", model.host_dir, *revision, "--endpoint", endpoint])]


def test_vllm_unit_execstart_is_exactly_the_planned_argv(world_dir: Path) -> None:
    plan = _plan()
    plan = dataclasses.replace(plan, argv=(*plan.argv, "--served-model-name", *HOSTILE))
    (world_dir / "vllm.service").write_text(get_template(str(TEMPLATES / "vllm.service.j2")).render(plan=plan))
    block, complaints = _systemd_test(world_dir, "vllm.service")
    assert complaints == ""
    assert _dump_commands(block, "ExecStart") == [_as_parsed(list(plan.argv))]


def _bare_unit(plan: ServicePlan) -> str:
    return f"[Unit]\nDescription={plan.description}\n[Service]\nExecStart=/bin/true\n"


def _vllm_unit(plan: ServicePlan) -> str:
    return get_template(str(TEMPLATES / "vllm.service.j2")).render(plan=plan)


@pytest.mark.parametrize("render", [_bare_unit, _vllm_unit], ids=["description", "vllm.service.j2"])
def test_unit_description_holds_a_hostile_served_name(world_dir: Path, render: Callable[[ServicePlan], str]) -> None:
    plan = _plan()
    for i, value in enumerate(HOSTILE):
        (world_dir / f"s{i}.service").write_text(render(dataclasses.replace(plan, served_name=value)))
    parsed = _systemd_units(world_dir, [f"s{i}.service" for i in range(len(HOSTILE))])
    for i, value in enumerate(HOSTILE):
        block, complaints = parsed[f"s{i}.service"]
        assert complaints == ""
        assert _dump_fields(block, "Description") == [
            quoting.comment_text(f"vLLM OpenAI-compatible server ({value})")]


# ---- environment files ------------------------------------------------------------------------

ENV_VALUES = [v for v in HOSTILE if not CONTROL.search(v)]


def _env_plan(runtime: str) -> ServicePlan:
    return _plan(runtime=runtime, env={f"VDTEST_{i}": value for i, value in enumerate(ENV_VALUES)})


def _unquote_generator_line(line: str) -> tuple[str, str]:
    name, value = line.split("=", 1)
    words = _dump_words(value) if value else [""]
    assert len(words) == 1, line
    return name, words[0]


def test_env_file_reaches_systemd_as_these_values(world_dir: Path) -> None:
    """systemd's env-file tokenizer (through the environment.d generator, which then expands `$NAME`)."""
    generator = _need(ENV_GENERATOR, "systemd's environment.d generator")
    plan = _env_plan("venv")
    conf = world_dir / "environment.d"
    conf.mkdir()
    (conf / "50-vllm.conf").write_text(get_template(str(TEMPLATES / "vllm.env.j2")).render(plan=plan))
    proc = subprocess.run(["env", "-i", f"XDG_CONFIG_HOME={world_dir}", generator], capture_output=True,
                          text=True, timeout=30, check=True)
    parsed = dict(_unquote_generator_line(line) for line in proc.stdout.splitlines()
                  if line.startswith("VDTEST_"))
    # Left out, where the generator differs from EnvironmentFile=: it expands `$NAME` afterwards,
    # and refuses an empty value ("invalid syntax") that EnvironmentFile= reads as empty.
    expands = re.compile(r"\$[A-Za-z_{$]")
    want = {name: value for name, value in plan.env.items() if value and not expands.search(value)}
    assert [line for line in proc.stderr.splitlines()
            if not any(f'"{name}"' in line for name in plan.env if not plan.env[name])] == []
    assert {name: parsed.get(name) for name in want} == want


class _FakeDocker(BaseHTTPRequestHandler):
    """Answers the docker CLI like a daemon, keeping the container-create request it sent."""

    bodies: list[bytes] = []

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", "1.45")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._reply(200, b"")

    def do_GET(self) -> None:  # noqa: N802
        self._reply(200, b"OK")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "/containers/create" in self.path:
            self.bodies.append(body)
        self._reply(500, json.dumps({"message": "recorded by the test"}).encode())

    def address_string(self) -> str:
        return "test"

    def log_message(self, *args: Any) -> None:
        pass


def test_env_file_reaches_docker_as_these_values(tmp_path: Path) -> None:
    """docker's --env-file reader: the docker CLI parses the file and sends the result to a fake daemon."""
    docker = _need("docker", "the docker CLI")
    plan = _env_plan("docker")
    env_file = tmp_path / "vllm.env"
    env_file.write_text(get_template(str(TEMPLATES / "vllm.env.j2")).render(plan=plan))
    sock = tmp_path / "docker.sock"
    server = socketserver.UnixStreamServer(str(sock), _FakeDocker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeDocker.bodies = []
    try:
        subprocess.run([docker, "create", "--env-file", str(env_file), "image"], capture_output=True, timeout=60,
                       env={"DOCKER_HOST": f"unix://{sock}", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    finally:
        server.shutdown()
        server.server_close()
    assert len(_FakeDocker.bodies) == 1, "the docker CLI sent no container-create request"
    sent = json.loads(_FakeDocker.bodies[0])["Env"]
    assert sent == [f"{name}={value}" for name, value in sorted(plan.env.items())]


def test_env_file_line_for_both_readers_is_bare_or_refused() -> None:
    for value in ENV_VALUES:
        try:
            line = quoting.env_file_line("V", value)
        except quoting.QuotingError:
            assert quoting.env_file_line("V", value, "systemd") != quoting.env_file_line("V", value, "docker")
        else:
            assert line == f"V={value}"
    for value in ("two\nlines", "a\x00b", "tab\there"):
        for reader in ("systemd", "docker", "both"):
            with pytest.raises(quoting.QuotingError):
                quoting.env_file_line("V", value, reader)
    with pytest.raises(quoting.QuotingError):
        quoting.env_file_line("BAD NAME", "x")


# ---- nginx ------------------------------------------------------------------------------------

NGINX_VALUES = [v for v in HOSTILE if not CONTROL.search(v) and "$" not in v]


def _wait_listening(port: int, proc: subprocess.Popen, output: Callable[[], str], timeout: float = 10) -> None:
    """Until a server started as `proc` accepts connections on loopback `port`; fails with its output if it
    exits or does not listen within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, output()
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nginx_strings_are_read_back_by_nginx_as_these_values(tmp_path: Path) -> None:
    nginx = _need("nginx", "nginx")
    tmp_path.chmod(tmp_path.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    port = _free_port()
    locations = "\n".join(f"    location = /v{i} {{ default_type text/plain; return 200 {quoting.nginx_string(v)}; }}"
                          for i, v in enumerate(NGINX_VALUES))
    # server_name also gives `*` and `~` a meaning of their own (wildcards, regexes): not a quoting matter.
    names = " ".join(quoting.nginx_string(v) for v in NGINX_VALUES if v and not re.search(r"[*~]", v))
    temp = "\n".join(f"  {kind}_temp_path {tmp_path}/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n{temp}\n  access_log off;\n"
                    f"  server {{\n    listen 127.0.0.1:{port};\n    server_name {names};\n{locations}\n  }}\n}}\n")
    check = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-e", "stderr", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc, lambda: proc.stderr.read().decode())
        served = [urllib.request.urlopen(f"http://127.0.0.1:{port}/v{i}", timeout=5).read().decode()
                  for i in range(len(NGINX_VALUES))]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert served == NGINX_VALUES
    for value in ("a\nb", "$host", "x$"):
        with pytest.raises(quoting.QuotingError):
            quoting.nginx_string(value)


def test_verify_curl_keeps_url_and_header_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import verify
    _shims(tmp_path / "bin", tmp_path / "log", {"curl": "printf 'body\\n200'"})
    monkeypatch.setattr(verify, "_run", lambda command: (True, _run_sh(command, tmp_path, [tmp_path / "bin"])))
    url = f"http://h:1/v1/models?x=1;touch {SIDE}&$(touch pwned) `touch pwned`"
    header = str(_hostile_dir(tmp_path) / "key.header")
    assert verify.curl(url, {"prompt": "it's $(touch pwned)"}, header) == ("200", "body")
    (call,) = _calls(tmp_path / "log")
    assert call[1:] == ["-sS", "-m", "30", "-w", "\\n%{http_code}", "-H", f"@{header}", url,
                        "-H", "Content-Type: application/json", "--data", '{"prompt": "it\'s $(touch pwned)"}']
    assert not (tmp_path / "pwned").exists()
