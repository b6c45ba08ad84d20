"""The offline GPU and model catalogs: every entry loads, look-ups forgive the way people write names,
unknown names fail with suggestions, and every model config is structurally a real checkpoint's."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import yaml

from sizing import catalog
from sizing.catalog import CatalogError, CatalogModel, GpuSpec, find_gpu, find_model, gpu_names, model_ids

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def text(config: dict) -> dict:
    return config.get("text_config", config)


def catalog_ids() -> list[str]:
    """Model ids for parametrizing; a catalog that fails to load fails these tests one by one, with its error."""
    try:
        return model_ids()
    except CatalogError:
        return ["(the model catalog does not load)"]


# --------------------------------------------------------------------------- GPUs


def test_every_gpu_loads_with_consistent_capabilities() -> None:
    names = gpu_names()
    assert len(names) == len(set(names)) >= 30
    for name in names:
        spec = find_gpu(name)
        assert isinstance(spec, GpuSpec) and spec.name == name
        major, minor = spec.compute_capability
        assert spec.bf16 == ((major, minor) >= (8, 0))
        assert spec.fp8 == ((major, minor) >= (8, 9))
        if spec.form_factor == "sxm":
            assert spec.nvlink, f"{name}: SXM boards come with NVLink"
        if "GeForce" in name:
            assert not spec.p2p and not spec.nvlink, f"{name}: the driver disables P2P on GeForce cards"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # nvidia-smi names, current and older drivers (without the "NVIDIA " prefix)
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("GeForce RTX 2080 Ti", "NVIDIA GeForce RTX 2080 Ti"),
        ("NVIDIA GeForce RTX 2080 Ti", "NVIDIA GeForce RTX 2080 Ti"),
        ("Tesla T4", "Tesla T4"),
        ("Tesla V100-SXM2-32GB", "Tesla V100-SXM2-32GB"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"),
        ("NVIDIA A100 80GB PCIe", "NVIDIA A100 80GB PCIe"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA A10G", "NVIDIA A10G"),
        # aliases, any case, with or without spaces and dashes
        ("4090", "NVIDIA GeForce RTX 4090"),
        ("rtx4090", "NVIDIA GeForce RTX 4090"),
        ("RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("rtx-4090", "NVIDIA GeForce RTX 4090"),
        ("2080 Ti", "NVIDIA GeForce RTX 2080 Ti"),
        ("t4", "Tesla T4"),
        ("A100-80GB", "NVIDIA A100-SXM4-80GB"),
        ("a100 40gb", "NVIDIA A100-SXM4-40GB"),
        ("H100", "NVIDIA H100 80GB HBM3"),
        ("h20", "NVIDIA H20"),
        ("L40S", "NVIDIA L40S"),
        ("A10", "NVIDIA A10"),
        ("4060 Ti", "NVIDIA GeForce RTX 4060 Ti"),
        ("RTX PRO 6000 Blackwell", "NVIDIA RTX PRO 6000 Blackwell Workstation Edition"),
    ],
)
def test_gpu_lookup_forgives_spelling(query: str, expected: str) -> None:
    assert find_gpu(query).name == expected


def test_brief_gpus_are_all_present() -> None:
    wanted = [
        "T4", "V100-PCIE-16GB", "V100-PCIE-32GB", "V100-16GB", "V100-32GB", "2080Ti", "3060", "3090", "4060",
        "4060Ti", "4080", "4090", "5090", "A10", "A10G", "A30", "A40", "L4", "L20", "L40", "L40S",
        "A100-PCIE-40GB", "A100-40GB", "A100-PCIE-80GB", "A100-80GB", "H20", "H100-PCIE", "H100", "H200",
        "A5000", "A6000", "RTX6000Ada", "RTXPRO6000",
    ]
    for alias in wanted:
        find_gpu(alias)


def test_memory_is_what_torch_reports_not_the_marketing_size() -> None:
    # GPU memory is sold in binary GB; torch's total_memory sits up to ~9% below that, never above
    expectations = {"4090": 24, "T4": 16, "2080Ti": 11, "A100-80GB": 80, "H100": 80, "L4": 24, "5090": 32}
    for alias, nominal in expectations.items():
        assert 0.9 * nominal < find_gpu(alias).memory_gib < nominal, alias
    assert find_gpu("4090").memory_gib == pytest.approx(23.64, abs=0.05)
    assert find_gpu("H100").memory_gib == pytest.approx(79.19, abs=0.1)


def test_modded_2080ti_is_the_same_entry_with_its_memory() -> None:
    stock = find_gpu("NVIDIA GeForce RTX 2080 Ti")
    modded = find_gpu("NVIDIA GeForce RTX 2080 Ti", memory_gib=21.48)  # what the 22 GB card logs (seed 000)
    assert modded.memory_gib == 21.48 and stock.memory_gib < 11
    assert dataclasses.replace(modded, memory_gib=stock.memory_gib) == stock
    assert not modded.bf16 and modded.compute_capability == (7, 5)
    assert find_gpu("NVIDIA GeForce RTX 2080 Ti").memory_gib == stock.memory_gib  # the override did not leak


@pytest.mark.parametrize("bad", [0, -1, True, "22", float("nan")])
def test_bad_memory_override_is_refused(bad: object) -> None:
    with pytest.raises(CatalogError, match="memory_gib"):
        find_gpu("4090", memory_gib=bad)  # type: ignore[arg-type]


def test_unknown_gpu_names_the_query_and_suggests() -> None:
    with pytest.raises(CatalogError) as caught:
        find_gpu("RTX 4099")
    assert "RTX 4099" in str(caught.value) and "NVIDIA GeForce RTX 4090" in str(caught.value)


def test_ambiguous_gpu_lists_every_size() -> None:
    with pytest.raises(CatalogError) as caught:
        find_gpu("A100")
    message = str(caught.value)
    assert "NVIDIA A100-SXM4-40GB" in message and "NVIDIA A100-SXM4-80GB" in message
    assert "--gpu-memory-gib" in message


def test_empty_gpu_name_is_an_error() -> None:
    with pytest.raises(CatalogError, match="empty"):
        find_gpu("  ")


# --------------------------------------------------------------------------- models


def test_every_model_loads() -> None:
    ids = model_ids()
    assert len(ids) == len(set(ids)) >= 50
    for model_id in ids:
        model = find_model(model_id)
        assert isinstance(model, CatalogModel) and model.id == model_id
        if model.base is not None:
            assert find_model(model.base).quantization is None or model.base == model.id
        if model.quantization is not None:
            qconfig = text(model.config).get("quantization_config", model.config.get("quantization_config"))
            assert qconfig["quant_method"] == model.quantization


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B"),
        ("qwen/qwen3-8b", "Qwen/Qwen3-8B"),
        ("qwen3-8b", "Qwen/Qwen3-8B"),
        ("Qwen3-8B", "Qwen/Qwen3-8B"),
        ("Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B"),
        ("qwen/qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B"),  # seed 004's local path, ModelScope spelling
        ("Qwen/QwQ-32B", "Qwen/QwQ-32B"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
        ("Valdemardi/DeepSeek-R1-Distill-Llama-70B-AWQ", "Valdemardi/DeepSeek-R1-Distill-Llama-70B-AWQ"),
        ("DeepSeek-R1-0528-Qwen3-8B", "deepseek-ai/DeepSeek-R1-0528-Qwen3-8B"),
        ("LLM-Research/Meta-Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),  # ModelScope id
        ("meta-llama/Meta-Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"),  # the repo's old name
        ("gpt-oss-20b", "openai/gpt-oss-20b"),
        ("Qwen/Qwen3-8B/", "Qwen/Qwen3-8B"),
    ],
)
def test_model_lookup(query: str, expected: str) -> None:
    assert find_model(query).id == expected


def test_seed_models_resolve() -> None:
    """Every hub id the seed posts download or serve is in the catalog."""
    if not SEEDS.is_dir():
        pytest.skip(f"seed posts not present at {SEEDS}")
    found = set()
    for post in SEEDS.glob("*.txt"):
        found |= set(re.findall(r"--model '([\w.-]+/[\w.-]+)'", post.read_text(encoding="utf-8")))
    assert found, "the seeds download models with `modelscope download --model '...'`"
    for model_id in found:
        assert find_model(model_id).id.lower() == model_id.lower()
    for name in ("DeepSeek-R1-0528-Qwen3-8B", "Qwen3-30B-A3B", "Qwen/QwQ-32B"):
        find_model(name)


def test_bare_name_shared_by_two_organizations_is_not_guessed() -> None:
    # Valdemardi's and casperhansen's AWQ builds have the same repo name: the bare name must not pick one
    with pytest.raises(CatalogError) as caught:
        find_model("DeepSeek-R1-Distill-Llama-70B-AWQ")
    assert "Valdemardi/DeepSeek-R1-Distill-Llama-70B-AWQ" in str(caught.value)


def test_unknown_model_suggests_close_ids() -> None:
    with pytest.raises(CatalogError) as caught:
        find_model("Qwen/Qwen3-9B")
    message = str(caught.value)
    assert "Qwen/Qwen3-9B" in message and "Qwen/Qwen3-8B" in message and "config.json" in message


def test_returned_config_is_a_private_copy() -> None:
    first = find_model("Qwen/Qwen3-8B")
    first.config["num_hidden_layers"] = 1
    first.config.setdefault("rope_scaling", {})
    assert find_model("Qwen/Qwen3-8B").config["num_hidden_layers"] == 36
    awq = find_model("Qwen/Qwen3-8B-AWQ")
    awq.config["quantization_config"]["bits"] = 8
    assert find_model("Qwen/Qwen3-14B-AWQ").config["quantization_config"]["bits"] == 4


@pytest.mark.parametrize("model_id", catalog_ids())
def test_config_structure(model_id: str) -> None:
    """What any real checkpoint satisfies; a typo in a catalog config breaks one of these."""
    config = find_model(model_id).config
    t = text(config)
    heads, kv = t["num_attention_heads"], t.get("num_key_value_heads", t["num_attention_heads"])
    assert heads % kv == 0
    assert t["num_hidden_layers"] > 0 and t["vocab_size"] >= 32000 and t["max_position_embeddings"] >= 8192
    model_type = t["model_type"] if "model_type" in t else config["model_type"]
    if "kv_lora_rank" in t:  # MLA: one latent per token instead of per-head K/V
        assert t["qk_nope_head_dim"] + t["qk_rope_head_dim"] == 192 and t["kv_lora_rank"] == 512
    elif "head_dim" in t:
        assert t["head_dim"] % 8 == 0
        if model_type in ("llama", "mistral", "qwen2"):
            assert heads * t["head_dim"] == t["hidden_size"]
    else:  # head_dim implied: hidden_size must split evenly over the heads
        assert t["hidden_size"] % heads == 0 and (t["hidden_size"] // heads) % 8 == 0
    experts = t.get("num_experts") or t.get("num_local_experts") or t.get("n_routed_experts")
    if model_type.endswith("moe") or "n_routed_experts" in t or model_type == "gpt_oss":
        assert experts and 0 < t["num_experts_per_tok"] < experts
        if model_type != "gpt_oss":
            assert t["moe_intermediate_size"] < t["intermediate_size"]
    else:
        assert experts is None
    if "layer_types" in t:
        assert len(t["layer_types"]) == t["num_hidden_layers"]
        assert set(t["layer_types"]) <= {"sliding_attention", "full_attention"}
    if t.get("use_sliding_window") is False:
        assert "sliding_window" in t  # vLLM reads both; keep them together
    assert config.get("torch_dtype", "bfloat16") in ("bfloat16", "float16", "float32")


def _count_bf16_bytes(config: dict) -> int:
    """Exact checkpoint bytes for architectures whose tensor list the config fully determines."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config["num_key_value_heads"]
    head_dim = config.get("head_dim") or h // heads
    attn = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    if config["model_type"] == "qwen2":
        attn += heads * head_dim + 2 * kv * head_dim  # q/k/v bias
    if config["model_type"] in ("qwen3", "qwen3_moe"):
        attn += 2 * head_dim  # q_norm, k_norm
    if config["model_type"] == "qwen3_moe":
        experts = config["num_experts"]
        mlp = experts * 3 * h * config["moe_intermediate_size"] + experts * h  # experts + router
    else:
        mlp = 3 * h * config["intermediate_size"]
    embeddings = config["vocab_size"] * h * (1 if config["tie_word_embeddings"] else 2)
    return 2 * (layers * (attn + mlp + 2 * h) + embeddings + h)


COUNTABLE = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe")


def test_counting_reproduces_published_totals() -> None:
    """The count reproduces metadata.total_size of published index files byte for byte."""
    published = {
        "meta-llama/Llama-3.1-8B-Instruct": 16060522496,
        "meta-llama/Llama-3.1-70B-Instruct": 141107412992,
        "mistralai/Mistral-7B-Instruct-v0.3": 14496047104,
        "Qwen/Qwen2.5-7B-Instruct": 15231233024,
        "Qwen/Qwen2.5-32B-Instruct": 65527752704,
        "Qwen/Qwen2.5-72B-Instruct": 145412407296,
        "Qwen/Qwen3-8B": 16381470720,
        "Qwen/Qwen3-30B-A3B": 61064245248,
    }
    for model_id, total_size in published.items():
        assert _count_bf16_bytes(find_model(model_id).config) == total_size, model_id


@pytest.mark.parametrize("model_id", catalog_ids())
def test_weight_bytes_match_the_config(model_id: str) -> None:
    model = find_model(model_id)
    if model.weight_bytes is None:
        return
    config = model.config
    assert model.quantization is None, "quantized checkpoints have no exact count here"
    if config["model_type"] in COUNTABLE and config["torch_dtype"] == "bfloat16":
        assert model.weight_bytes == _count_bf16_bytes(config)
    else:
        pytest.fail(f"{model_id}: weight_bytes given for an architecture the test cannot recount")


def test_dense_bf16_models_of_countable_families_carry_weight_bytes() -> None:
    missing = [
        m for m in model_ids()
        if (cfg := find_model(m).config).get("model_type") in COUNTABLE
        and find_model(m).quantization is None and cfg.get("torch_dtype") == "bfloat16"
        and find_model(m).weight_bytes is None
    ]
    assert not missing


def test_quantized_entries_point_at_their_base() -> None:
    for model_id in model_ids():
        model = find_model(model_id)
        if model.base is None:
            continue
        base = find_model(model.base)
        for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "vocab_size"):
            assert text(model.config).get(key) == text(base.config).get(key), (model_id, key)
    padded = find_model("Qwen/Qwen2.5-72B-Instruct-AWQ").config
    assert padded["intermediate_size"] == 29696 and padded["intermediate_size"] % (128 * 8) == 0


def test_seed_worked_kv_figures() -> None:
    """The KV bytes per token the seed logs imply (field notes): 144 KiB for Qwen3-8B, 96 KiB for Qwen3-30B-A3B."""
    for model_id, kib in (("deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", 144), ("Qwen/Qwen3-30B-A3B", 96)):
        c = find_model(model_id).config
        per_token = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * c["head_dim"] * 2
        assert per_token == kib * 1024, model_id


def test_multimodal_and_mla_keys_are_where_the_real_files_put_them() -> None:
    gemma = find_model("google/gemma-3-27b-it").config
    assert gemma["architectures"] == ["Gemma3ForConditionalGeneration"] and "hidden_size" not in gemma
    assert gemma["text_config"]["num_hidden_layers"] == 62 and gemma["vision_config"]["num_hidden_layers"] == 27
    r1 = find_model("deepseek-ai/DeepSeek-R1").config
    assert r1["quantization_config"]["weight_block_size"] == [128, 128] and r1["first_k_dense_replace"] == 3
    oss = find_model("openai/gpt-oss-120b").config
    assert oss["num_local_experts"] == 128 and len(oss["layer_types"]) == 36 and "torch_dtype" not in oss


# --------------------------------------------------------------------------- loader validation


def _entry(gpu_yaml: str) -> list:
    return yaml.safe_load(gpu_yaml)["gpus"]


GOOD_GPU = """
gpus:
  - {name: "NVIDIA Test", aliases: [T1], memory_gib: 10.0, compute_capability: [8, 0], architecture: ampere,
     p2p: true, nvlink: false, form_factor: pcie}
"""


def test_gpu_parser_accepts_a_good_entry() -> None:
    specs, index = catalog._parse_gpus(_entry(GOOD_GPU), "test.yaml")
    assert specs[0].bf16 and not specs[0].fp8 and index["t1"] == "NVIDIA Test"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("memory_gib: 10.0", "memory_gib: ten"), "memory_gib"),
        (("memory_gib: 10.0", "memory_gib: 0"), "memory_gib"),
        (("[8, 0]", "[8]"), "compute_capability"),
        (("architecture: ampere", "architecture: pascal"), "architecture"),
        (("form_factor: pcie", "form_factor: oam"), "form_factor"),
        (("p2p: true", "p2p: yes please"), "p2p"),
        (("nvlink: false,", "nvlnk: false,"), "nvlnk"),
        (("aliases: [T1]", "aliases: [T1, '']"), "aliases"),
    ],
)
def test_gpu_parser_names_the_bad_field(edit: tuple[str, str], field: str) -> None:
    broken = GOOD_GPU.replace(*edit)
    assert broken != GOOD_GPU
    with pytest.raises(CatalogError) as caught:
        catalog._parse_gpus(_entry(broken), "test.yaml")
    assert "test.yaml" in str(caught.value) and "NVIDIA Test" in str(caught.value) and field in str(caught.value)


def test_gpu_parser_rejects_an_alias_used_twice() -> None:
    twice = _entry(GOOD_GPU) + [dict(_entry(GOOD_GPU)[0], name="NVIDIA Other")]
    with pytest.raises(CatalogError, match="already names 'NVIDIA Test'"):
        catalog._parse_gpus(twice, "test.yaml")


GOOD_MODEL = {
    "id": "org/model",
    "aliases": ["m"],
    "modelscope_id": None,
    "weight_bytes": None,
    "config": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 128,
    },
}


def _model(**changes: object) -> dict:
    entry = {**GOOD_MODEL, "config": dict(GOOD_MODEL["config"])}
    for key, value in changes.items():
        if key.startswith("config__"):
            entry["config"][key[len("config__"):]] = value
        else:
            entry[key] = value
    return entry


def test_model_parser_accepts_a_good_entry() -> None:
    records, index = catalog._parse_models([_model()], "m.yaml")
    assert records[0]["id"] == "org/model" and index["model"] == index["m"] == "org/model"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "no-organization"}, "id"),
        ({"config__num_key_value_heads": 3}, "num_key_value_heads"),
        ({"config__hidden_size": 0}, "hidden_size"),
        ({"config__architectures": "LlamaForCausalLM"}, "architectures"),
        ({"weight_bytes": -5}, "weight_bytes"),
        ({"quantization": "awq"}, "quant_method"),
        ({"quantization": "int3"}, "quantization"),
        ({"config__quantization_config": {"quant_method": "awq"}}, "quantization"),
        ({"base": "org/missing"}, "base"),
        ({"weights": 5}, "weights"),
    ],
)
def test_model_parser_names_the_bad_field(changes: dict, field: str) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog._parse_models([_model(**changes)], "m.yaml")
    assert "m.yaml" in str(caught.value) and field in str(caught.value)


def test_model_parser_rejects_a_duplicate_alias() -> None:
    with pytest.raises(CatalogError, match="already names 'org/model'"):
        catalog._parse_models([_model(), _model(id="org/other")], "m.yaml")


def test_broken_yaml_file_is_reported_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "gpus.yaml"
    bad.write_text("gpus: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=re.escape(str(bad))):
        catalog._load_yaml(bad, "gpus")
    bad.write_text("models: []\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="'gpus:'"):
        catalog._load_yaml(bad, "gpus")


def test_catalog_files_are_parsed_once() -> None:
    catalog._gpu_catalog.cache_clear()
    for _ in range(3):
        find_gpu("4090")
    assert catalog._gpu_catalog.cache_info().misses == 1


def test_no_pyinfra_in_sizing() -> None:
    for source in Path(catalog.__file__).parent.rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+pyinfra", source.read_text(encoding="utf-8"), re.M), source


def test_memory_figures_are_finite() -> None:
    assert all(math.isfinite(find_gpu(n).memory_gib) for n in gpu_names())
