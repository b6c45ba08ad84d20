"""Settings validation: every bad value is named with its fix; every setting is declared once, in plan/schema.py."""

import dataclasses
import runpy
from pathlib import Path

import pytest

from plan import schema
from plan.settings import Settings, SettingsError, load_instances, load_settings, parse_size

ROOT = Path(__file__).resolve().parents[2]


def _problems(data: dict) -> dict[str, str]:
    with pytest.raises(SettingsError) as info:
        load_settings(data)
    assert "nothing was changed" in str(info.value)
    return dict(info.value.problems)


def test_defaults_are_valid_and_come_from_the_schema():
    settings = load_settings({})
    declared = schema.defaults()
    assert settings.model == declared["model"]
    assert settings.vllm_port == declared["vllm_port"]
    assert settings.model_dir == "/srv/models/" + declared["model"].split("/")[-1]
    assert settings.vllm_served_model_name == declared["model"].split("/")[-1]


def test_every_setting_is_declared_once_and_is_a_field():
    names = [s.name for s in schema.SETTINGS]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(Settings)}
    derived = {"conda_env_prefix"}
    assert fields - derived == set(names) - {"vllm_instances", "mirror_presets"}
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Settings)), "defaults live in the schema"


def test_group_data_sets_only_known_names_and_restates_no_default():
    site = {k: v for k, v in runpy.run_path(str(ROOT / "group_data" / "all.py")).items() if not k.startswith("_")}
    assert set(site) <= set(schema.BY_NAME)
    assert not {k for k, v in site.items() if v == schema.BY_NAME[k].default}


def test_readme_reference_is_generated_from_the_schema():
    readme = (ROOT / "README.md").read_text()
    assert schema.reference_markdown() in readme, "run `python -m plan.schema readme`"
    for setting in schema.SETTINGS:
        assert f"| `{setting.name}` |" in readme


def test_a_typo_is_refused_with_the_closest_name():
    problems = _problems({"vllm_gpu_memory_utilisation": 0.5})
    assert problems == {"vllm_gpu_memory_utilisation": "is not a setting; did you mean vllm_gpu_memory_utilization?"}
    assert "did you mean vllm_port?" in _problems({"vllm_prot": 8001})["vllm_prot"]
    assert "README" in _problems({"completely_unrelated": 1})["completely_unrelated"]


def test_pyinfra_names_and_underscore_names_pass_only_when_declared_foreign():
    assert "ssh_user" in _problems({"ssh_user": "root"})
    assert load_settings({"ssh_user": "root", "_sudo": True}, foreign={"ssh_user"}).vllm_runtime == "venv"


def test_instance_keys_use_one_naming_scheme():
    base = {"name": "a", "port": 8001}
    with pytest.raises(SettingsError) as info:
        load_instances({"vllm_instances": [{**base, "vllm_served_model_name": "x"}, {**base, "name": "b", "port": 8002,
                                                                                    "gpu_memory_utilisation": 0.4}]})
    problems = dict(info.value.problems)
    assert "use 'served_model_name'" in problems["vllm_instances[0].vllm_served_model_name"]
    assert "did you mean gpu_memory_utilization?" in problems["vllm_instances[1].gpu_memory_utilisation"]
    with pytest.raises(SettingsError) as info:
        load_instances({"vllm_instances": [{**base, "vllm_runtime": "docker"}]})
    assert "the host's" in dict(info.value.problems)["vllm_instances[0].vllm_runtime"]
    (a,) = load_instances({"vllm_instances": [{**base, "served_model_name": "x", "max_model_len": 512}]})
    assert (a.settings.vllm_served_model_name, a.settings.vllm_max_model_len, a.settings.vllm_port) == ("x", 512, 8001)
    with pytest.raises(SettingsError) as info:
        load_instances({"vllm_instances": [{**base, "max_model_len": 4}]})
    assert "vllm_instances[0] (a).max_model_len" in dict(info.value.problems)


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


def test_sizes_parse():
    assert parse_size("64M") == 64 << 20
    assert parse_size("1.5G") == 3 << 29
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size(True)


def test_bench_values_as_pyinfra_data_passes_them() -> None:
    """`pyinfra --data` turns digits into integers and '1,2,4' stays a string: all are taken."""
    assert load_settings({"vllm_bench_concurrency": 4}).vllm_bench_concurrency == (4,)
    assert load_settings({"vllm_bench_concurrency": "4,1,2"}).vllm_bench_concurrency == (1, 2, 4)
    assert load_settings({"vllm_bench_report_dir": 2024}).vllm_bench_report_dir == "2024"
    with pytest.raises(SettingsError, match="vllm_bench_concurrency"):
        load_settings({"vllm_bench_concurrency": "1,x"})
