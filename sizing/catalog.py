"""Offline GPU and model catalogs, so a deployment can be sized before anything is downloaded.

The data lives in ``sizing/data/gpus.yaml`` and ``sizing/data/models.yaml``; each file's header documents its
fields and where the figures come from. Both are loaded once with ``yaml.safe_load``, validated entry by entry
(a bad entry fails loudly with the file, the entry and the field named), and indexed for forgiving look-ups:
a GPU by the exact ``nvidia-smi`` name or a short alias, a model by its Hugging Face id, an alias or its
ModelScope id.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"
GPU_CATALOG = DATA_DIR / "gpus.yaml"
MODEL_CATALOG = DATA_DIR / "models.yaml"

ARCHITECTURES = ("volta", "turing", "ampere", "ada", "hopper", "blackwell")
FORM_FACTORS = ("pcie", "sxm")
QUANTIZATIONS = ("awq", "gptq", "fp8", "bitsandbytes", "mxfp4", "compressed-tensors")
# Words nvidia-smi puts in front of a product name that users routinely leave out.
_GPU_NOISE_WORDS = ("nvidia", "geforce", "tesla")


class CatalogError(ValueError):
    """A name the catalogs do not know, or a catalog file that is malformed; the message says what to do."""


@dataclass(frozen=True)
class GpuSpec:
    """What sizing needs to know about one GPU model, keyed by the name nvidia-smi prints."""

    name: str
    aliases: tuple[str, ...]
    memory_gib: float
    compute_capability: tuple[int, int]
    architecture: str
    bf16: bool
    fp8: bool
    p2p: bool
    nvlink: bool
    form_factor: str
    pci_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogModel:
    """A published model: its real config.json (sizing keys) and, when known, the exact checkpoint size."""

    id: str
    aliases: tuple[str, ...]
    modelscope_id: str | None
    config: dict
    weight_bytes: int | None
    base: str | None
    quantization: str | None


# --------------------------------------------------------------------------- helpers


def _gpu_key(name: str) -> str:
    """Fold a GPU name so 'NVIDIA GeForce RTX 4090', 'rtx-4090' and 'RTX4090' compare equal."""
    words = re.split(r"[\s_\-/]+", name.strip().lower())
    kept = [w for w in words if w and w not in _GPU_NOISE_WORDS]
    return re.sub(r"[^0-9a-z.]", "", "".join(kept))


def _model_key(name: str) -> str:
    """Model ids are case-insensitive on both hubs; a trailing slash from a pasted path is ignored."""
    return name.strip().strip("/").lower()


class _EntryError:
    """Builds CatalogErrors that name the file, the entry and the field, so a bad edit is found at once."""

    def __init__(self, source: str, label: str) -> None:
        self.source = source
        self.label = label

    def __call__(self, field: str, problem: str, fix: str) -> CatalogError:
        return CatalogError(f"{self.source}: {self.label}: field '{field}' {problem}; {fix}")


def _require(entry: Mapping[str, Any], field: str, kinds: type | tuple[type, ...], err: _EntryError) -> Any:
    if field not in entry:
        raise err(field, "is missing", "add it (see the field list at the top of the file)")
    value = entry[field]
    # bool is an int subclass: never accept True/False where a number is meant.
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise err(field, f"is {value!r}, not a number", "write a number")
    if not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise err(field, f"is {value!r} ({type(value).__name__})", f"write a {names}")
    return value


def _string_list(entry: Mapping[str, Any], field: str, err: _EntryError) -> tuple[str, ...]:
    value = entry.get(field, [])
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise err(field, f"is {value!r}", "write a list of non-empty strings")
    return tuple(value)


def _reject_unknown(entry: Mapping[str, Any], allowed: Iterable[str], err: _EntryError) -> None:
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(allowed), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed fields: {', '.join(sorted(allowed))}"
        raise err(unknown[0], "is not a catalog field", hint)


def _load_yaml(path: Path, top_key: str) -> list[Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get(top_key), list):
        raise CatalogError(f"{path}: expected a top-level '{top_key}:' list of entries")
    return data[top_key]


def _suggest(query: str, index: Mapping[str, str], key: Callable[[str], str], labels: Mapping[str, str]) -> str:
    """Close matches for an unknown name: substring hits first (an ambiguous 'A100'), then difflib's."""
    folded = key(query)
    hits: list[str] = []
    if folded:
        hits = [index[k] for k in index if folded in k]
    hits += [index[k] for k in difflib.get_close_matches(folded, list(index), n=5, cutoff=0.6)]
    unique = list(dict.fromkeys(hits))[:5]
    return ", ".join(labels[h] for h in unique)


# --------------------------------------------------------------------------- GPUs

_GPU_FIELDS = ("name", "aliases", "memory_gib", "compute_capability", "architecture", "p2p", "nvlink", "form_factor",
               "pci_ids")
_PCI_ID_RE = re.compile(r"^[0-9a-f]{4}$")


def _parse_gpus(entries: list[Any], source: str) -> tuple[tuple[GpuSpec, ...], dict[str, str]]:
    """Validate raw GPU entries; return them and an index from folded names/aliases to canonical names."""
    specs: list[GpuSpec] = []
    index: dict[str, str] = {}
    pci_owner: dict[str, str] = {}
    for position, entry in enumerate(entries):
        label = f"gpus[{position}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{source}: {label} is {entry!r}; each GPU entry must be a mapping")
        if isinstance(entry.get("name"), str):
            label = f"GPU '{entry['name']}'"
        err = _EntryError(source, label)
        _reject_unknown(entry, _GPU_FIELDS, err)
        name = _require(entry, "name", str, err).strip()
        memory = float(_require(entry, "memory_gib", (int, float), err))
        if not 0.5 <= memory <= 1024:
            raise err("memory_gib", f"is {memory}", "give the GiB torch reports as total_memory (e.g. 23.64)")
        cc = _require(entry, "compute_capability", list, err)
        if len(cc) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in cc):
            raise err("compute_capability", f"is {cc!r}", "write [major, minor], e.g. [8, 9]")
        architecture = _require(entry, "architecture", str, err)
        if architecture not in ARCHITECTURES:
            raise err("architecture", f"is {architecture!r}", f"use one of {', '.join(ARCHITECTURES)}")
        form_factor = _require(entry, "form_factor", str, err)
        if form_factor not in FORM_FACTORS:
            raise err("form_factor", f"is {form_factor!r}", f"use one of {', '.join(FORM_FACTORS)}")
        major, minor = cc
        pci_ids = tuple(p.lower() for p in _string_list(entry, "pci_ids", err))
        if not all(_PCI_ID_RE.match(p) for p in pci_ids):
            raise err("pci_ids", f"is {list(pci_ids)!r}", "write 4-digit hex device ids as lspci -nn shows them, "
                      "e.g. [\"2684\"] for [10de:2684]")
        spec = GpuSpec(
            name=name,
            aliases=_string_list(entry, "aliases", err),
            memory_gib=memory,
            compute_capability=(major, minor),
            architecture=architecture,
            bf16=(major, minor) >= (8, 0),
            fp8=(major, minor) >= (8, 9),
            p2p=_require(entry, "p2p", bool, err),
            nvlink=_require(entry, "nvlink", bool, err),
            form_factor=form_factor,
            pci_ids=pci_ids,
        )
        for pci_id in pci_ids:
            if pci_owner.setdefault(pci_id, name) != name:
                raise err("pci_ids", f"has {pci_id!r}, which already names '{pci_owner[pci_id]}'", "remove it")
        for alias in (spec.name, *spec.aliases):
            folded = _gpu_key(alias)
            if not folded:
                raise err("aliases", f"has {alias!r}, which is empty once folded", "remove it")
            owner = index.get(folded)
            if owner is not None and owner != spec.name:
                raise err("aliases", f"has {alias!r}, which already names '{owner}'", "make every alias unique")
            index[folded] = spec.name
        specs.append(spec)
    if not specs:
        raise CatalogError(f"{source}: the 'gpus:' list is empty")
    return tuple(specs), index


@functools.lru_cache(maxsize=1)
def _gpu_catalog() -> tuple[dict[str, GpuSpec], dict[str, str]]:
    specs, index = _parse_gpus(_load_yaml(GPU_CATALOG, "gpus"), str(GPU_CATALOG))
    return {spec.name: spec for spec in specs}, index


def find_gpu(name: str, memory_gib: float | None = None) -> GpuSpec:
    """Look a GPU up by its nvidia-smi name or an alias (case, spaces, dashes and 'NVIDIA '/'GeForce ' ignored).

    ``memory_gib`` replaces the catalog's memory: modded cards (a 22 GB RTX 2080 Ti) and the figure a host
    actually reports are what sizing must use.
    """
    if not isinstance(name, str) or not name.strip():
        raise CatalogError("GPU name is empty; give the nvidia-smi name (e.g. 'NVIDIA GeForce RTX 4090') or '4090'")
    by_name, index = _gpu_catalog()
    canonical = index.get(_gpu_key(name))
    if canonical is None:
        labels = {n: f"'{by_name[n].aliases[0]}' ({n})" if by_name[n].aliases else f"'{n}'" for n in by_name}
        close = _suggest(name, index, _gpu_key, labels)
        folded = _gpu_key(name)
        # 'A100' alone is a real card name, but one sold in two memory sizes: say so rather than "unknown".
        contained = {index[k] for k in index if folded and folded in k}
        problem = f"GPU '{name}' is ambiguous" if len(contained) > 1 else f"unknown GPU '{name}'"
        hint = f"name one of: {close}" if close else "run `python -m sizing gpus` for the list"
        raise CatalogError(
            f"{problem}; {hint}. For a card not in the catalog, pass the nearest one and "
            "--gpu-memory-gib with the memory it reports"
        )
    spec = by_name[canonical]
    if memory_gib is None:
        return spec
    if isinstance(memory_gib, bool) or not isinstance(memory_gib, (int, float)) or not 0 < memory_gib <= 1024:
        raise CatalogError(f"gpu memory_gib={memory_gib!r} for '{canonical}' must be a number of GiB above 0")
    return dataclasses.replace(spec, memory_gib=float(memory_gib))


def find_gpu_by_pci(device_id: str) -> GpuSpec | None:
    """The catalog GPU with this PCI device id (lspci's [10de:XXXX]), or None: sizing before any driver."""
    wanted = device_id.strip().lower()
    return next((spec for spec in _gpu_catalog()[0].values() if wanted in spec.pci_ids), None)


def gpu_names() -> list[str]:
    """Every catalog GPU by its nvidia-smi name, in catalog order."""
    return list(_gpu_catalog()[0])


# --------------------------------------------------------------------------- models

_MODEL_FIELDS = ("id", "aliases", "modelscope_id", "config", "weight_bytes", "base", "quantization")
# quantization_config.quant_method values that mean each catalog quantization.
_QUANT_METHODS = {
    "awq": {"awq"},
    "gptq": {"gptq"},
    "fp8": {"fp8"},
    "bitsandbytes": {"bitsandbytes"},
    "mxfp4": {"mxfp4"},
    "compressed-tensors": {"compressed-tensors"},
}


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language-model part of a config: ``text_config`` for multimodal wrappers, else the config itself."""
    inner = config.get("text_config")
    return inner if isinstance(inner, Mapping) else config


def _check_config(config: dict, err: _EntryError) -> None:
    """Reject configs that cannot be a real checkpoint's: the core memory model trusts these numbers."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise err("config.architectures", f"is {archs!r}", "copy the list from the model's config.json")
    if not isinstance(config.get("model_type"), str):
        raise err("config.model_type", f"is {config.get('model_type')!r}", "copy it from the model's config.json")
    text = _text_config(config)
    where = "config.text_config" if text is not config else "config"
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings"):
        value = text.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise err(f"{where}.{field}", f"is {value!r}", "copy the positive integer from config.json")
    for field in ("num_key_value_heads", "head_dim", "intermediate_size"):
        value = text.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise err(f"{where}.{field}", f"is {value!r}", "copy the positive integer from config.json or omit it")
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise err(f"{where}.num_key_value_heads", f"({kv_heads}) does not divide {heads} heads", "check the config")


def _parse_models(entries: list[Any], source: str) -> tuple[tuple[dict[str, Any], ...], dict[str, str]]:
    """Validate raw model entries; return them (normalized) and an index from folded names to ids."""
    parsed: list[dict[str, Any]] = []
    index: dict[str, str] = {}
    explicit: set[str] = set()
    bare_names: dict[str, list[str]] = {}
    for position, entry in enumerate(entries):
        label = f"models[{position}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{source}: {label} is {entry!r}; each model entry must be a mapping")
        if isinstance(entry.get("id"), str):
            label = f"model '{entry['id']}'"
        err = _EntryError(source, label)
        _reject_unknown(entry, _MODEL_FIELDS, err)
        model_id = _require(entry, "id", str, err).strip()
        if model_id.count("/") != 1 or not all(model_id.split("/")):
            raise err("id", f"is {model_id!r}", "write the hub id as 'organization/name'")
        modelscope_id = entry.get("modelscope_id")
        if modelscope_id is not None and (not isinstance(modelscope_id, str) or modelscope_id.count("/") != 1):
            raise err("modelscope_id", f"is {modelscope_id!r}", "write 'organization/name' or null")
        config = _require(entry, "config", dict, err)
        _check_config(config, err)
        weight_bytes = entry.get("weight_bytes")
        if weight_bytes is not None and (isinstance(weight_bytes, bool) or not isinstance(weight_bytes, int)
                                         or weight_bytes <= 0):
            raise err("weight_bytes", f"is {weight_bytes!r}",
                      "copy metadata.total_size from model.safetensors.index.json, or write null")
        base = entry.get("base")
        quantization = entry.get("quantization")
        if base is not None and not isinstance(base, str):
            raise err("base", f"is {base!r}", "write the base model's id or null")
        qconfig = _text_config(config).get("quantization_config", config.get("quantization_config"))
        if quantization is not None:
            if quantization not in QUANTIZATIONS:
                raise err("quantization", f"is {quantization!r}", f"use one of {', '.join(QUANTIZATIONS)}")
            method = qconfig.get("quant_method") if isinstance(qconfig, Mapping) else None
            if method not in _QUANT_METHODS[quantization]:
                raise err("config.quantization_config.quant_method", f"is {method!r} for a '{quantization}' entry",
                          "copy quantization_config from the repo's config.json")
        elif qconfig is not None:
            raise err("quantization", "is missing although config has a quantization_config",
                      f"set it to the quant_method ({qconfig.get('quant_method')!r})")
        record = {
            "id": model_id,
            "aliases": _string_list(entry, "aliases", err),
            "modelscope_id": modelscope_id,
            "config": config,
            "weight_bytes": weight_bytes,
            "base": base,
            "quantization": quantization,
        }
        for name in (model_id, *record["aliases"], *([modelscope_id] if modelscope_id else [])):
            folded = _model_key(name)
            owner = index.get(folded)
            if owner is not None and owner != model_id:
                raise err("aliases", f"has {name!r}, which already names '{owner}'", "make every alias unique")
            index[folded] = model_id
            explicit.add(folded)
        bare_names.setdefault(_model_key(model_id.split("/")[1]), []).append(model_id)
        parsed.append(record)
    if not parsed:
        raise CatalogError(f"{source}: the 'models:' list is empty")
    ids = {record["id"] for record in parsed}
    for record in parsed:
        if record["base"] is not None and record["base"] not in ids:
            raise _EntryError(source, f"model '{record['id']}'")(
                "base", f"is '{record['base']}', which is not in the catalog", "add the base model or fix the id")
    # 'QwQ-32B' alone is enough when only one organization publishes that name in the catalog.
    for bare, owners in bare_names.items():
        if len(owners) == 1 and bare not in explicit:
            index[bare] = owners[0]
    return tuple(parsed), index


@functools.lru_cache(maxsize=1)
def _model_catalog() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    records, index = _parse_models(_load_yaml(MODEL_CATALOG, "models"), str(MODEL_CATALOG))
    return {record["id"]: record for record in records}, index


def find_model(name: str) -> CatalogModel:
    """Look a model up by Hugging Face id, alias, ModelScope id or bare repo name (case-insensitive).

    The returned config is a private copy, so callers may adjust it without touching the catalog.
    """
    if not isinstance(name, str) or not name.strip():
        raise CatalogError("model name is empty; give a hub id such as 'Qwen/Qwen3-8B' or a local model directory")
    by_id, index = _model_catalog()
    model_id = index.get(_model_key(name))
    if model_id is None:
        close = _suggest(name, index, _model_key, {i: i for i in by_id})
        hint = f"close matches: {close}" if close else "run `python -m sizing models` for the list"
        raise CatalogError(
            f"unknown model '{name}'; {hint}. A model outside the catalog can be sized from a local "
            "directory holding its config.json"
        )
    record = by_id[model_id]
    return CatalogModel(
        id=record["id"],
        aliases=record["aliases"],
        modelscope_id=record["modelscope_id"],
        config=copy.deepcopy(record["config"]),
        weight_bytes=record["weight_bytes"],
        base=record["base"],
        quantization=record["quantization"],
    )


def in_catalog(name: str) -> bool:
    """Whether `find_model` knows `name` (id, alias, ModelScope id or bare repo name)."""
    try:
        find_model(name)
    except CatalogError:
        return False
    return True


def sized_from_hub(name: str, revision: str | None) -> bool:
    """Whether `name` is sized from hub metadata rather than the catalog: any revision, or an ORG/NAME
    the catalog lacks. Anything else gets the catalog's answer (offline, or its "unknown model" with
    close matches for a name that is no hub id). One rule for the CLI and the deploy's plan."""
    return revision is not None or (not in_catalog(name) and name.count("/") == 1)


def model_ids() -> list[str]:
    """Every catalog model by its Hugging Face id, in catalog order."""
    return list(_model_catalog()[0])
