"""Settings validation: every bad value is named with its fix, defaults come from group_data/all.py."""

import runpy

import pytest

from plan.settings import DEFAULTS_FILE, SettingsError, load_settings, parse_size


def _problems(data: dict) -> dict[str, str]:
    with pytest.raises(SettingsError) as info:
        load_settings(data)
    assert "nothing was changed" in str(info.value)
    return dict(info.value.problems)


def test_defaults_are_valid_and_come_from_group_data():
    settings = load_settings({})
    documented = runpy.run_path(str(DEFAULTS_FILE))
    assert settings.model == documented["model"]
    assert settings.vllm_port == documented["vllm_port"]
    assert settings.model_dir == "/srv/models/" + documented["model"].split("/")[-1]
    assert settings.vllm_served_model_name == documented["model"].split("/")[-1]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("vllm_port", 70000, "1..65535"),
        ("vllm_port", "8000", "integer"),
        ("vllm_gpu_memory_utilization", 1.5, "(0, 1]"),
        ("vllm_gpu_memory_utilization", 0, "(0, 1]"),
        ("vllm_device", "tpu", "auto, cuda, cpu"),
        ("model_source", "s3", "modelscope, huggingface, local"),
        ("vllm_extra_args", "--enforce-eager", "list of strings"),
        ("vllm_dtype", "fp64", "float16"),
        ("vllm_tensor_parallel_size", 0, "out of range"),
        ("vllm_user", "Root User", "valid user name"),
        ("model_dir", "models/x", "absolute path"),
        ("mirror_preset", "nowhere", "upstream"),
        ("vllm_cpu_kv_cache_memory", "lots", "size"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(field, value, fragment):
    problems = _problems({field: value})
    assert field in problems
    assert fragment in problems[field]


def test_all_problems_are_reported_at_once():
    problems = _problems({"vllm_port": -1, "vllm_device": "x", "vllm_enforce_eager": "yes"})
    assert set(problems) == {"vllm_port", "vllm_device", "vllm_enforce_eager"}


def test_local_source_needs_a_model_directory(tmp_path):
    assert "required" in _problems({"model_source": "local"})["model_local_path"]
    assert "config.json" in _problems({"model_source": "local", "model_local_path": str(tmp_path)})[
        "model_local_path"]
    (tmp_path / "config.json").write_text("{}")
    settings = load_settings({"model_source": "local", "model_local_path": str(tmp_path), "model": "tiny"})
    assert settings.model_dir == "/srv/models/tiny"


def test_mirror_preset_sets_pip_index_and_hf_endpoint_unless_overridden():
    tuna = load_settings({"mirror_preset": "tuna"})
    assert "tsinghua" in tuna.pip_index_url
    assert tuna.hf_endpoint.startswith("https://")
    own = load_settings({"mirror_preset": "tuna", "pip_index_url": "https://pip.example.internal/simple"})
    assert own.pip_index_url == "https://pip.example.internal/simple"
    assert "pip_index_url" in _problems({"mirror_preset": "custom"})
    assert load_settings({}).pip_index_url is None


def test_unknown_keys_are_ignored_and_sizes_parse():
    assert load_settings({"ssh_user": "root"}).vllm_runtime == "venv"
    assert parse_size("64M") == 64 << 20
    assert parse_size("1.5G") == 3 << 29
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size(True)
