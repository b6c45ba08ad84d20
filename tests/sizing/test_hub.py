"""Sizing from hub metadata (sizing/hub.py) against a loopback server that speaks both hubs' APIs (tests/fakehub.py).

No test leaves 127.0.0.1. The server's answers are CONSTRUCTED from the documented / client-side shapes,
not recorded (this machine cannot reach the hubs):
- Hugging Face: huggingface_hub's model_info (``GET /api/models/{repo}/revision/{rev}``: ``sha``, ``siblings``
  [{rfilename}], ``safetensors`` {parameters, total}), hf_hub_url (``/{repo}/resolve/{rev}/{file}``, LFS files
  302 to a CDN on another host, which must get Range but no Authorization) and hf_raise_for_status
  (``X-Error-Code``: RepoNotFound as 401 without a token / 404 with one, RevisionNotFound, EntryNotFound,
  GatedRepo as 401 without a token / 403 with one).
- ModelScope: modelscope/hub/api.py (``/api/v1/models/{repo}/revisions`` -> Data.RevisionMap.Branches/Tags,
  ``/repo/files?Revision=&Recursive=`` -> Data.Files; the file entry copies the one recorded in the SDK's own
  tests/hub/test_hub_retry.py) and file_download.get_file_download_url (``/repo?Revision=&FilePath=``).
- The model is Qwen3-Coder-30B-A3B-Instruct's published config; its shards are virtual safetensors files:
  real headers (tensor names and shapes as the checkpoint has them) followed by data the server would make
  up on demand and counts, so a test sees any weight byte fetched.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sizing import cli
from sizing.catalog import find_model
from sizing.errors import SizingError
from sizing.hub import HubUnreachable, fetch_model, model_from_hub
from sizing.model import safetensors_bytes
from tests.fakehub import TOKEN, Blob, FakeHub, Repo

ST_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "F8_E4M3": 1, "U8": 1}
CODER = "Qwen/Qwen3-Coder-30B-A3B-Instruct"
CODER_CONFIG: dict[str, Any] = {  # constructed from the repository's published config.json
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5472,
    "max_position_embeddings": 262144, "max_window_layers": 28, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False,
    "qkv_bias": False, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000000, "router_aux_loss_coef": 0.0,
    "shared_expert_intermediate_size": 0, "sliding_window": None, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True, "use_qk_norm": True,
    "use_sliding_window": False, "vocab_size": 151936,
}  # fmt: skip


# ----------------------------------------------------------------------------- safetensors files


def st_header(tensors: list[tuple[str, str, list[int]]]) -> tuple[bytes, int]:
    """The exact bytes a safetensors writer puts before the data: u64 length, JSON padded to 8 with spaces."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        size = ST_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def coder_tensors() -> list[tuple[str, str, list[int]]]:
    """Every tensor of the Qwen3-MoE checkpoint, named and shaped as in its shards."""
    c = CODER_CONFIG
    h, e, mi, q, kv = c["hidden_size"], c["num_experts"], c["moe_intermediate_size"], 32 * 128, 4 * 128
    out = [("model.embed_tokens.weight", "BF16", [c["vocab_size"], h])]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", "BF16", [q, h]), (p + "self_attn.k_proj.weight", "BF16", [kv, h]),
                (p + "self_attn.v_proj.weight", "BF16", [kv, h]), (p + "self_attn.o_proj.weight", "BF16", [h, q]),
                (p + "self_attn.q_norm.weight", "BF16", [128]), (p + "self_attn.k_norm.weight", "BF16", [128]),
                (p + "input_layernorm.weight", "BF16", [h]), (p + "post_attention_layernorm.weight", "BF16", [h]),
                (p + "mlp.gate.weight", "BF16", [e, h])]  # fmt: skip
        for x in range(e):
            out += [(f"{p}mlp.experts.{x}.gate_proj.weight", "BF16", [mi, h]),
                    (f"{p}mlp.experts.{x}.up_proj.weight", "BF16", [mi, h]),
                    (f"{p}mlp.experts.{x}.down_proj.weight", "BF16", [h, mi])]  # fmt: skip
    return out + [("model.norm.weight", "BF16", [h]), ("lm_head.weight", "BF16", [c["vocab_size"], h])]


def coder_files(shards: int = 4) -> tuple[dict[str, Blob], int, int]:
    """The repository's files (config, index, virtual shards) and the tensor bytes and params it holds."""
    tensors = coder_tensors()
    per = -(-len(tensors) // shards)
    files: dict[str, Blob] = {"config.json": Blob(json.dumps(CODER_CONFIG).encode()), "README.md": Blob(b"# Coder")}
    weight_map, total, params = {}, 0, 0
    for n in range(shards):
        name = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        part = tensors[n * per:(n + 1) * per]
        head, data = st_header(part)
        files[name] = Blob(head, data, lfs=True)
        weight_map.update({t[0]: name for t in part})
        total += data
        for _, _, shape in part:
            count = 1
            for dim in shape:
                count *= dim
            params += count
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = Blob(json.dumps(index).encode())
    return files, total, params


CODER_FILES, CODER_BYTES, CODER_PARAMS = coder_files()
SHA = "b2d6cc0b1d2e5b4c8f0a7e9d3c1b5a4f6e8d2c0a"
SHA_OLD = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"


@pytest.fixture(autouse=True)
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real token, endpoint or cache of this machine leaks in; the cache lives in tmp."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "HF_ENDPOINT", "MODELSCOPE_DOMAIN",
                "MODELSCOPE_ENDPOINT",
                "HF_HUB_OFFLINE", "VLLM_DEPLOY_HUB_OFFLINE", "HF_HOME"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("VLLM_DEPLOY_HUB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub()
    server.hf[CODER] = Repo(dict(CODER_FILES), SHA, params={"BF16": CODER_PARAMS})
    server.ms[CODER] = Repo(dict(CODER_FILES), SHA, branches=("master",))
    yield server
    server.stop()


def fit_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = cli.main(["fit", "--gpu", "A10G", "--gpus", "2", "--json", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


# ----------------------------------------------------------------------------- tests


def test_bytes_come_from_the_headers_and_no_weight_byte_is_fetched(hub: FakeHub, hub_env: Path) -> None:
    found = fetch_model(CODER, "huggingface", endpoint=hub.url)
    assert found.sha == SHA and found.weight_bytes == CODER_BYTES
    assert found.weight_source == "safetensors headers of 4 shard(s)"
    assert found.params_by_dtype == {"BF16": CODER_PARAMS}
    # The same architecture as the catalog's Qwen3-30B-A3B, whose bytes were counted from the real checkpoint.
    assert CODER_BYTES == find_model("Qwen/Qwen3-30B-A3B").weight_bytes == 61_064_245_248
    assert hub.weight_bytes_served == 0
    metadata = sum(len(b.head) for b in CODER_FILES.values() if b.lfs or not b.virtual) - len(b"# Coder")
    assert 0 <= hub.bytes_served - metadata < 16 * 1024  # headers, config, index + the API answer: not 61 GB
    shard_reads = [r for r in hub.log if "/cdn/" in r["path"]]
    assert len(shard_reads) == 8 and all(r["range"] for r in shard_reads)  # two Range requests per shard
    assert all(r["host"].startswith("localhost") for r in shard_reads)  # followed the 302 to the "CDN"


def test_header_bytes_match_the_local_reader(tmp_path: Path, hub: FakeHub) -> None:
    """A real tiny safetensors file: the hub path and model.py's local reader agree with its data length."""
    head, data = st_header([("w", "F16", [3, 5]), ("b", "F32", [7]), ("q", "I32", [2, 2])])
    payload = bytes(range(data % 256)) + b"\x01" * (data - data % 256)
    (tmp_path / "model.safetensors").write_bytes(head + payload)
    files = {"config.json": Blob(json.dumps(CODER_CONFIG).encode()), "model.safetensors": Blob(head + payload)}
    hub.hf["acme/tiny"] = Repo(files, SHA)
    found = fetch_model("acme/tiny", endpoint=hub.url)
    assert found.weight_bytes == data == 3 * 5 * 2 + 7 * 4 + 4 * 4 == safetensors_bytes(tmp_path / "model.safetensors")
    assert hub.bytes_served - len(json.dumps(CODER_CONFIG)) < len(head) + 2048  # API answer, config, header


def test_cli_sizes_the_issue_example_from_the_hub(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    code, data, err = fit_json(capsys, "--model", CODER, "--hub-endpoint", hub.url)
    assert code == 3, err  # 57 GiB of bf16 weights on 2 x 24 GB
    assert data["outcome"] == "oom" and data["hub"]["sha"] == SHA and data["hub"]["weight_bytes"] == CODER_BYTES
    code_cat, catalog, _ = fit_json(capsys, "--model", "Qwen/Qwen3-30B-A3B", "--max-model-len", "40960")
    code, coder, _ = fit_json(capsys, "--model", CODER, "--hub-endpoint", hub.url, "--max-model-len", "40960")
    assert code == code_cat and coder["weights_gib"] == catalog["weights_gib"]  # same shapes, same bytes
    code = cli.main(["fit", "--model", CODER, "--hub-endpoint", hub.url, "--gpu", "H100", "--gpus", "2"])
    out = capsys.readouterr().out
    assert code == 0 and f"huggingface @main ({SHA[:12]}, cached), weights from safetensors headers" in out


def test_modelscope_api_and_cli(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    found = fetch_model(CODER, "modelscope", endpoint=hub.url)
    assert (found.sha, found.revision, found.weight_bytes) == (SHA, "master", CODER_BYTES)
    assert hub.weight_bytes_served == 0
    paths = [r["path"] for r in hub.log]
    assert f"/api/v1/models/{CODER}/revisions" in paths
    assert f"/api/v1/models/{CODER}/repo/files?Revision=master&Recursive=True" in paths
    assert f"/api/v1/models/{CODER}/repo?Revision=master&FilePath=config.json" in paths
    code, data, err = fit_json(capsys, "--model", CODER, "--hub", "modelscope", "--hub-endpoint", hub.url,
                               "--gpus", "4", "--max-model-len", "8192")  # fmt: skip
    assert code in (0, 3) and data["hub"]["hub"] == "modelscope", err
    code, _, err = fit_json(capsys, "--model", CODER, "--hub", "modelscope", "--hub-endpoint", hub.url,
                            "--revision", "v9")  # fmt: skip
    assert code == 2 and "--revision" in err and "master" in err


def test_catalog_model_stays_offline(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = fit_json(capsys, "--model", "Qwen/Qwen3-8B", "--hub-endpoint", hub.url)
    assert code == 0 and "hub" not in data and hub.log == []
    code, _, err = fit_json(capsys, "--model", "qwen3-8bb", "--hub-endpoint", hub.url)
    assert code == 2 and "unknown model" in err and hub.log == []  # a typo is not a hub id


def test_revision_goes_to_the_hub_even_for_a_catalog_model(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    hub.hf["Qwen/Qwen3-30B-A3B"] = Repo(dict(CODER_FILES), SHA_OLD, branches=("main", "v1.0"))
    code, data, err = fit_json(capsys, "--model", "Qwen/Qwen3-30B-A3B", "--revision", "v1.0", "--hub-endpoint", hub.url)
    assert data["hub"]["sha"] == SHA_OLD and data["hub"]["revision"] == "v1.0", err
    assert any(r["path"] == "/api/models/Qwen/Qwen3-30B-A3B/revision/v1.0" for r in hub.log)


def test_cache_answers_offline_once_seen(hub: FakeHub, hub_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, first, _ = fit_json(capsys, "--model", CODER, "--hub-endpoint", hub.url)
    assert first["hub"]["from_cache"] is False
    requests = len(hub.log)
    code2, again, _ = fit_json(capsys, "--model", CODER, "--hub-endpoint", hub.url)
    assert again["hub"]["from_cache"] is True and len(hub.log) == requests + 1  # only the revision lookup
    url = hub.url
    hub.stop()
    code3, offline, err = fit_json(capsys, "--model", CODER, "--hub-endpoint", url)
    assert (code3, offline["weights_gib"], offline["hub"]["sha"]) == (code, first["weights_gib"], SHA)
    assert "unreachable" in err and "last seen" in err and SHA[:12] in err
    pinned = fetch_model(CODER, revision=SHA, endpoint=url)  # a commit needs no request at all
    assert pinned.from_cache and pinned.weight_bytes == CODER_BYTES
    records = sorted(p.name for p in (hub_env / "huggingface" / "Qwen--Qwen3-Coder-30B-A3B-Instruct").iterdir())
    assert records == [f"{SHA}.json", "refs.json"]


def test_branch_moves_to_a_new_commit(hub: FakeHub) -> None:
    assert fetch_model(CODER, endpoint=hub.url).sha == SHA
    hub.hf[CODER] = Repo(dict(CODER_FILES), SHA_OLD)
    moved = fetch_model(CODER, endpoint=hub.url)
    assert moved.sha == SHA_OLD and not moved.from_cache


def test_gated_repo_needs_the_token_which_is_never_printed_or_cached(
    hub: FakeHub, hub_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.hf["meta-llama/Gated-8B"] = Repo(dict(CODER_FILES), SHA, gated=True)
    code, _, err = fit_json(capsys, "--model", "meta-llama/Gated-8B", "--hub-endpoint", hub.url)
    assert code == 2 and err.startswith("error: --model:") and "gated" in err
    assert f"accept the licence on {hub.url}/meta-llama/Gated-8B" in err and "HF_TOKEN" in err

    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_value_0000")
    code, _, err = fit_json(capsys, "--model", "meta-llama/Gated-8B", "--hub-endpoint", hub.url)
    assert code == 2 and "no access" in err and "hf_wrong_token_value_0000" not in err

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.log.clear()
    code, data, err = fit_json(capsys, "--model", "meta-llama/Gated-8B", "--hub-endpoint", hub.url)
    assert data["hub"]["weight_bytes"] == CODER_BYTES, err
    own = [r for r in hub.log if "/cdn/" not in r["path"]]
    cdn = [r for r in hub.log if "/cdn/" in r["path"]]
    assert own and all(r["auth"] == f"Bearer {TOKEN}" for r in own)
    assert cdn and all(r["auth"] is None for r in cdn)  # not carried to another host on the redirect
    text = json.dumps(data) + err + "".join(p.read_text() for p in hub_env.rglob("*") if p.is_file())
    assert TOKEN not in text


def test_token_file_and_modelscope_token(
    hub: FakeHub, hub_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    hub.hf["acme/private"] = Repo(dict(CODER_FILES), SHA, private=True)
    assert fetch_model("acme/private", endpoint=hub.url).weight_bytes == CODER_BYTES
    hub.ms["acme/private"] = Repo(dict(CODER_FILES), SHA, private=True, branches=("master",))
    with pytest.raises(SizingError, match="MODELSCOPE_API_TOKEN") as info:
        fetch_model("acme/private", "modelscope", endpoint=hub.url)
    assert "private" in info.value.message
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", TOKEN)
    assert fetch_model("acme/private", "modelscope", endpoint=hub.url).weight_bytes == CODER_BYTES
    assert TOKEN not in "".join(p.read_text() for p in hub_env.rglob("*") if p.is_file())


def test_errors_name_the_field(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fit_json(capsys, "--model", "acme/does-not-exist", "--hub-endpoint", hub.url)
    assert code == 2 and "--model" in err and "not found" in err and "HTTP 401" in err and "HF_TOKEN" in err
    code, _, err = fit_json(capsys, "--model", CODER, "--hub-endpoint", hub.url, "--revision", "nope")
    assert code == 2 and err.startswith("error: --revision:")
    code, _, err = fit_json(capsys, "--model", "acme/nothing", "--hub", "modelscope", "--hub-endpoint", hub.url)
    assert code == 2 and "--model" in err and "not found" in err and "HTTP 404" in err
    hub.ms["acme/withdrawn"] = Repo(dict(CODER_FILES), SHA, private=None)
    code, _, err = fit_json(capsys, "--model", "acme/withdrawn", "--hub", "modelscope", "--hub-endpoint", hub.url)
    assert code == 2 and "--model" in err and "offline for review" in err
    code, _, err = fit_json(capsys, "--model", CODER, "--hub-endpoint", "ftp://mirror")
    assert code == 2 and err.startswith("error: --hub-endpoint:")
    hub.hf["acme/gguf"] = Repo({"model-Q4_K_M.gguf": Blob(b"GGUF")}, SHA)
    code, _, err = fit_json(capsys, "--model", "acme/gguf", "--hub-endpoint", hub.url)
    assert code == 2 and "no config.json" in err and "GGUF" in err


def test_unreachable_and_nothing_cached(capsys: pytest.CaptureFixture[str]) -> None:
    closed = FakeHub()
    url = closed.url
    closed.stop()  # the port is now closed: connection refused
    code, _, err = fit_json(capsys, "--model", CODER, "--hub-endpoint", url)
    assert code == 2 and err.startswith("error: --model:") and "unreachable" in err and url in err
    assert "--hub-endpoint" in err and "local copy" in err


def test_every_request_has_a_timeout(hub: FakeHub) -> None:
    hub.delay = 1.0
    started = time.monotonic()
    with pytest.raises(HubUnreachable, match="unreachable"):
        fetch_model(CODER, endpoint=hub.url, timeout=0.2)
    assert time.monotonic() - started < 0.9


def test_quantize_config_beside_config_json(hub: FakeHub) -> None:
    files = dict(CODER_FILES)
    files["quantize_config.json"] = Blob(json.dumps({"bits": 4, "group_size": 128, "desc_act": False}).encode())
    hub.hf["someone/coder-gptq"] = Repo(files, SHA)
    spec = model_from_hub("someone/coder-gptq", endpoint=hub.url)
    assert spec.quantization == "gptq" and spec.quant_bits == 4


def test_deploy_plan_sizes_a_hub_model_before_any_change(hub: FakeHub) -> None:
    from facts.model import HostFacts
    from plan.service import PlanError, resolve_model_spec
    from plan.settings import load_settings

    no_host_copy = HostFacts(model_config=None)
    settings = load_settings({"model": CODER, "model_source": "huggingface", "hf_endpoint": hub.url})
    spec = resolve_model_spec(settings, no_host_copy)
    assert spec.name == CODER and spec.weight_bytes == CODER_BYTES and spec.num_experts == 128
    assert resolve_model_spec(load_settings({"model": CODER, "model_source": "modelscope"}), HostFacts(
        model_config=CODER_CONFIG)).weight_bytes is None  # the host's config.json still comes first
    # The ModelScope endpoint setting (the download unit's MODELSCOPE_ENDPOINT): the planner reads the same hub.
    hub.log.clear()
    spec = resolve_model_spec(load_settings({"model": CODER, "model_source": "modelscope",
                                             "modelscope_endpoint": hub.url}), no_host_copy)
    assert spec.weight_bytes == CODER_BYTES
    assert hub.log and all(r["path"].startswith((f"/api/v1/models/{CODER}/", f"/cdn/ms/{CODER}/")) for r in hub.log)
    url = hub.url
    hub.stop()
    assert resolve_model_spec(settings, no_host_copy).weight_bytes == CODER_BYTES  # --dry offline, once seen
    fresh = load_settings({"model": "acme/never-seen", "model_source": "huggingface", "hf_endpoint": url})
    with pytest.raises(PlanError, match=r"^model: hub .* unreachable"):
        resolve_model_spec(fresh, no_host_copy)
    # A catalog model with a revision falls back to the catalog when the hub is away.
    pinned = load_settings({"model": "Qwen/Qwen3-8B", "model_source": "huggingface", "hf_endpoint": url,
                            "model_revision": "main"})  # fmt: skip
    assert resolve_model_spec(pinned, no_host_copy).name == "Qwen/Qwen3-8B"


def test_modelscope_endpoint_variables_as_the_modelscope_client_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """MODELSCOPE_ENDPOINT first, then the deprecated MODELSCOPE_DOMAIN (a bare domain meaning https)."""
    from sizing.hub import MS_DEFAULT_ENDPOINT, default_endpoint

    assert default_endpoint("modelscope") == MS_DEFAULT_ENDPOINT
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "www.modelscope.cn")
    assert default_endpoint("modelscope") == "https://www.modelscope.cn"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://10.0.0.5:8080/")
    assert default_endpoint("modelscope") == "http://10.0.0.5:8080"
    assert default_endpoint("huggingface") == "https://huggingface.co"
