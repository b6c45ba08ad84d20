"""Every free-text setting fed hostile values: each is refused with the field's name, or taken verbatim and inert.

The inventory may one day be generated from less trusted input. A value that could change the
meaning of a shell command, a unit file, an environment file or an nginx configuration must stop
the run before any change (naming the field), unless the setting is free text by nature (a prompt,
vLLM's own flags, environment values); those are taken exactly as written and shown inert here
through a real shell, and through systemd's and nginx's parsers in tests/plan/test_quoting.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from plan import schema
from plan.quoting import env_file_line
from plan.settings import SettingsError, load_instances, load_settings
from plan.validators import Invalid
from tests.deploy.fakeserver import host_plan_for

HOSTILE = (";", "; touch /tmp/pwned;", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "'", '"', "\n",
           "\nExecStart=/bin/x", "%h", "%%", " ", "a b", "ü", "\\", "\r", "\t", "\x00",
           "{", "}", "#", "$HOME", "&", "|", ">", "<")

# One valid value per free-text setting; the hostile ones are built around it.
EXAMPLES: dict[str, Any] = {
    "model": "Qwen/Qwen3-8B",
    "model_revision": "main",
    "model_dir": "/srv/models/x",
    "hf_endpoint": "https://hf-mirror.example",
    "vllm_docker_image": "vllm/vllm-openai:v0.32.0",
    "vllm_version": "0.32.0",
    "vllm_package": "vllm",
    "vllm_user": "vllm",
    "vllm_prefix": "/opt/vllm",
    "vllm_pip_extra_packages": ["hf-transfer==0.1.9"],
    "vllm_pip_remove_packages": ["torchvision"],
    "conda_prefix": "/opt/conda",
    "conda_installer": "Miniconda3-py312_24.4.0-0-Linux-x86_64.sh",
    "conda_installer_sha256": "b6597785e6b071f1ca69cf7be6d0161015b96340b9a9e132215d5713408c3a7c",
    "conda_python": "3.12",
    "mirror_preset": "tuna",
    "pip_index_url": "https://pip.example/simple",
    "apt_mirror": "https://apt.example",
    "conda_installer_url": "https://conda.example/miniconda/",
    "conda_channels": ["conda-forge"],
    "conda_default_channels": ["https://conda.example/pkgs/main"],
    "docker_ce_repo": "https://docker.example/linux",
    "nvidia_container_repo": "https://nvidia.example/libnvidia-container",
    "docker_registry_mirrors": ["https://registry.example"],
    "vllm_host": "0.0.0.0",
    "vllm_served_model_name": "qwen3-8b",
    "vllm_chat_template": "qwen3-programming",
    "vllm_extra_args": ["--seed", "0"],
    "vllm_env": {"VLLM_LOGGING_LEVEL": "INFO"},
    "vllm_quantization": "awq",
    "vllm_kv_cache_dtype": "fp8",
    "vllm_tool_call_parser": "hermes",
    "vllm_reasoning_parser": "qwen3",
    "vllm_cpu_kv_cache_memory": "1G",
    "vllm_deployment": "vllm",
    "vllm_api_key": "k" * 32,
    "vllm_advertise_address": "gpu1.example",
    "vllm_gateway_server_name": "llm.example",
    "vllm_verify_prompt": "Hello",
    "nvidia_driver_branch": "570",
    "grafana_apt_repo": "https://grafana.example/apt",
    "vllm_alert_webhook": "https://alerts.example/hook",
    "vllm_bench_target": "gateway",
    "vllm_bench_report_dir": "bench-reports",
    "vllm_cluster": "r1",
    "vllm_cluster_address": "10.0.0.1",
    "vllm_cluster_interface": "eth0",
}
# Controller-side paths: they must exist on the controller, and reach hosts only as file contents.
CONTROLLER_PATHS = ("model_local_path", "vllm_wheelhouse", "vllm_gateway_tls_cert", "vllm_gateway_tls_key",
                    "vllm_api_key_file")
# Free text by nature: taken verbatim when one line; shown inert below.
VERBATIM = {"vllm_extra_args", "vllm_env", "vllm_verify_prompt"}
# Checked as a whole elsewhere (tests/plan/test_instances.py, test_mirror_settings.py).
STRUCTURED = ("vllm_instances", "mirror_presets")


def _takes_text(setting: schema.Setting) -> bool:
    try:
        setting.check("plain")
        return True
    except Invalid:
        try:
            setting.check(["plain"])
            return True
        except (Invalid, TypeError):
            return False


def test_every_text_setting_has_an_example_here() -> None:
    texty = {s.name for s in schema.SETTINGS if _takes_text(s)} - set(CONTROLLER_PATHS) - set(STRUCTURED)
    assert texty <= set(EXAMPLES), f"add examples for {sorted(texty - set(EXAMPLES))}"
    for name, example in EXAMPLES.items():
        load_settings({name: example})  # the example itself is valid


def _variants(example: Any, hostile: str) -> list[Any]:
    if isinstance(example, dict):
        (name, value), = example.items()
        return [{name: value + hostile}, {name + hostile: value}]
    if isinstance(example, list):
        return [[example[0] + hostile, *example[1:]], [hostile + example[0], *example[1:]]]
    return [example + hostile, hostile + example]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_hostile_values_are_refused_naming_the_field_or_kept_verbatim(name: str) -> None:
    for hostile in HOSTILE:
        for value in _variants(EXAMPLES[name], hostile):
            try:
                settings = load_settings({name: value})
            except SettingsError as error:
                fields = [field for field, _ in error.problems]
                assert fields and all(f == name or f.startswith(f"mirror_presets['{value}']") for f in fields), (
                    value, error.problems)
                continue
            assert name in VERBATIM, f"{name} = {value!r} was accepted"
            got = getattr(settings, name)
            assert got == (tuple(value) if isinstance(value, list) else value), "accepted means taken as written"


def test_every_line_break_is_refused_even_in_free_text() -> None:
    for name in sorted(VERBATIM):
        for value in _variants(EXAMPLES[name], "\nExecStart=/bin/x"):
            with pytest.raises(SettingsError) as info:
                load_settings({name: value})
            assert [f for f, _ in info.value.problems] == [name]


def test_instance_values_pass_the_same_validators() -> None:
    with pytest.raises(SettingsError) as info:
        load_instances({"vllm_instances": [{"name": "a", "port": 8001, "model_dir": "/srv/m; rm -rf /",
                                            "served_model_name": "x\ny", "env": {"A": "1\n2"}}]})
    fields = {f for f, _ in info.value.problems}
    assert fields == {"vllm_instances[0] (a).model_dir", "vllm_instances[0] (a).served_model_name",
                      "vllm_instances[0] (a).env"}


def test_controller_paths_must_exist(tmp_path: Path) -> None:
    for name in CONTROLLER_PATHS[:4]:
        with pytest.raises(SettingsError) as info:
            load_settings({name: str(tmp_path / "missing; touch x")})
        assert name in dict(info.value.problems)


def _shell_words(command: str, cwd: Path) -> list[str]:
    """The argv a POSIX shell makes of `command`, run with printf in place of the program."""
    program, _, rest = command.partition(" ")
    out = subprocess.run(["sh", "-c", f"printf '%s\\0' {rest}"], cwd=cwd, capture_output=True, check=True)
    return out.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("hostile", ["$(touch pwned)", "`touch pwned`", "'; touch pwned; '", '"; touch pwned; "',
                                     "%h $HOME \\ ü"])
def test_a_hostile_prompt_reaches_curl_as_one_json_argument(hostile: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from tasks import verify

    seen: list[str] = []
    monkeypatch.setattr(verify, "_run", lambda command: seen.append(command) or (True, "{}\n200"))
    verify.curl("http://127.0.0.1:8000/v1/completions", {"prompt": hostile}, "/etc/vllm/api-key.header")
    words = _shell_words(seen[0].removesuffix(" 2>/dev/null || true"), tmp_path)
    assert json.loads(words[words.index("--data") + 1]) == {"prompt": hostile}
    assert not (tmp_path / "pwned").exists()


def test_hostile_extra_args_and_env_values_are_inert_in_the_plan() -> None:
    arg, value = "--served-model-name=$(touch /tmp/pwned) %h `x`", "a \"b\" $HOME `c` %h \\ ü"
    plan = host_plan_for("h100-x1-ubuntu2404", {"model": "Qwen/Qwen3-8B", "vllm_max_model_len": 8192,
                                                "vllm_extra_args": [arg], "vllm_env": {"MY_VAR": value}}).first
    assert arg in plan.argv, "taken as one argument"
    assert plan.env["MY_VAR"] == value
    assert env_file_line("MY_VAR", value, "systemd") == 'MY_VAR="a \\"b\\" \\$HOME \\`c\\` %h \\\\ ü"'


def test_a_hand_written_key_file_is_held_to_the_key_pattern(tmp_path: Path) -> None:
    from plan.keys import resolve_api_key

    key_file = tmp_path / "vllm.key"
    key_file.write_text("sk-" + "a" * 20 + "\nExecStartPre=/usr/bin/touch /tmp/pwned\n")
    with pytest.raises(ValueError, match="16-256 characters") as info:
        resolve_api_key(load_settings({"vllm_api_key_file": str(key_file)}))
    assert "a" * 20 not in str(info.value), "the message must not show the key"
    key_file.write_text("sk-" + "a" * 20 + "\n")
    assert resolve_api_key(load_settings({"vllm_api_key_file": str(key_file)})) == "sk-" + "a" * 20


def test_a_refused_key_is_not_shown() -> None:
    key = "sk-secret-" + "x" * 10 + "\n"
    with pytest.raises(SettingsError) as info:
        load_settings({"vllm_api_key": key})
    assert "16-256 characters" in dict(info.value.problems)["vllm_api_key"]
    assert "sk-secret" not in str(info.value)
