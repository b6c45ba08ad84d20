"""Builds a tiny random Llama model that vLLM can serve: build_tiny_model.py OUT_DIR.

Tests and the quick-start need a real model directory without any model hub, so this trains a
byte-level BPE tokenizer on text that is always on disk (the Python standard library sources),
wraps it as a fast tokenizer with a ChatML chat template (so /v1/chat/completions works), and
saves a randomly initialised LlamaForCausalLM as safetensors. Seeds, the training text and its
order are fixed, so runs with the same library versions and Python give the same bytes.

Run it with the controller vLLM venv (scripts/controller-vllm.sh prints its python): it needs
tokenizers, transformers and torch. Idempotent: OUT_DIR holding the marker file is left alone;
the model is built in a sibling temp dir and renamed into place, so a crash leaves no half model.
"""

from __future__ import annotations

import os

# Single-threaded BPE training: the merge order must not depend on thread scheduling.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

MARKER = ".tiny-model-complete"
VOCAB_SIZE = 2048
TEXT_BUDGET = 8 * 1024 * 1024  # bytes of training text: enough for 2048 merges, trains in seconds
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MODEL_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
SEED = 0


def training_files(budget: int = TEXT_BUDGET) -> list[Path]:
    """The stdlib's top-level .py files in name order, up to `budget` bytes: always present, stable."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chosen: list[Path] = []
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        size = path.stat().st_size
        if total + size > budget:
            break
        chosen.append(path)
        total += size
    if not chosen:
        sys.exit(f"build_tiny_model: no .py files under {stdlib} to train the tokenizer on")
    return chosen


def texts(files: list[Path]) -> Iterator[str]:
    for path in files:
        yield path.read_text(encoding="utf-8", errors="replace")


def build_tokenizer(files: list[Path]):  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts(files), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHATML_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )


def build_model(tokenizer, out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
        **MODEL_SHAPE,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)


def digest(out: Path) -> dict[str, str]:
    """sha256 of every file, recorded in the marker so runs can be compared byte for byte."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.iterdir())
        if p.is_file() and p.name != MARKER
    }


def build(out: Path) -> Path:
    """Build the model into `out` unless it is already complete; returns `out`."""
    out = out.resolve()
    if (out / MARKER).is_file():
        return out
    if out.exists() and any(out.iterdir()):
        sys.exit(f"build_tiny_model: {out} exists without {MARKER} (an unfinished or foreign dir); remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = training_files()
        tokenizer = build_tokenizer(files)
        tokenizer.save_pretrained(work)
        build_model(tokenizer, work)
        marker = {"training_files": len(files), "vocab_size": len(tokenizer), **MODEL_SHAPE, "sha256": digest(work)}
        (work / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
        # Readable by the service user that vLLM runs as (mkdtemp and safetensors create owner-only).
        work.chmod(0o755)
        for p in work.iterdir():
            p.chmod(0o644)
        if out.exists():
            out.rmdir()
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to create (skipped when already complete)")
    args = parser.parse_args(argv)
    print(build(args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
