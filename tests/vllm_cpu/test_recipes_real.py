"""The recipes' parser names against the real vLLM 0.32 CPU build: its registries, its classes, its serve parser.

A parser name that vLLM does not know is only refused when the server starts (the serve parser takes any
string), so the lists in plan/recipes.py are compared with the installed build's own registries, and every
name a recipe emits is loaded as a class.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from plan.recipes import PINNED_REASONING_PARSERS, PINNED_TOOL_PARSERS, REASONING_PARSERS, TOOL_PARSERS
from plan.recipes import resolve_recipe as recipe
from tests.vllm_cpu.realparser import check_many_with_real_parser, require_controller_python, vllm_env

REGISTRIES = """
import json, sys
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager
tools, reasoning = json.loads(sys.argv[1]), json.loads(sys.argv[2])
loaded = [ToolParserManager.get_tool_parser(n).__name__ for n in tools]
loaded += [ReasoningParserManager.get_reasoning_parser(n).__name__ for n in reasoning]
json.dump({"tools": ToolParserManager.list_registered(), "reasoning": ReasoningParserManager.list_registered(),
           "loaded": loaded}, open(sys.argv[3], "w"))
"""


def test_parser_names_are_the_real_builds() -> None:
    python = require_controller_python()
    with tempfile.TemporaryDirectory(prefix="vllm-parsers-") as tmp:
        out = Path(tmp) / "out.json"
        proc = subprocess.run([str(python), "-c", REGISTRIES, json.dumps(sorted(TOOL_PARSERS)),
                               json.dumps(sorted(REASONING_PARSERS)), str(out)],
                              env=vllm_env(Path(tmp)), capture_output=True, text=True, timeout=300, cwd=tmp)
        assert proc.returncode == 0, proc.stderr[-3000:]
        found = json.loads(out.read_text())
    assert set(found["tools"]) == PINNED_TOOL_PARSERS
    assert set(found["reasoning"]) == PINNED_REASONING_PARSERS
    assert len(found["loaded"]) == len(TOOL_PARSERS) + len(REASONING_PARSERS), "every recipe's parser class loads"


FAMILIES = [
    ("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM"),
    ("Qwen/QwQ-32B", "qwen2", "Qwen2ForCausalLM"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3_moe", "Qwen3MoeForCausalLM"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "qwen2", "Qwen2ForCausalLM"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama", "LlamaForCausalLM"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral", "MistralForCausalLM"),
    ("openai/gpt-oss-20b", "gpt_oss", "GptOssForCausalLM"),
]


def test_rendered_recipe_flags_pass_the_real_serve_parser() -> None:
    require_controller_python()
    lines = [["--model", "/srv/models/m", *recipe(model, kind, (arch,), "0.32.0").args]
             for model, kind, arch in FAMILIES]
    assert all(len(line) > 2 for line in lines), "every family gets flags"
    results = check_many_with_real_parser(lines + [["--model", "/m", "--enable-auto-tool-choice"]])
    for line, (ok, message) in zip(lines, results[:-1], strict=True):
        assert ok, (line, message)
    ok, message = results[-1]
    assert not ok and "requires --tool-call-parser" in message, "the control: the real check does refuse"


@pytest.mark.parametrize("flag", ["--enable-reasoning"])
def test_the_old_enable_flag_is_not_emitted_for_the_pinned_version(flag: str) -> None:
    assert all(flag not in recipe(m, k, (a,), "0.32.0").args for m, k, a in FAMILIES)
