"""Model recipes: which tool-call and reasoning parsers each family gets, per vLLM version and after the settings."""

from __future__ import annotations

import json

import pytest

from plan.recipes import (
    PINNED_REASONING_PARSERS,
    PINNED_TOOL_PARSERS,
    PROBE_TOOL,
    REASONING_PARSERS,
    TOOL_PARSERS,
    RecipeError,
    resolve_recipe,
    tool_call_cut_off,
    tool_call_problem,
    tool_call_request,
)

PINNED = "0.32.0"


def recipe(model: str, model_type: str, arch: str, version: str = PINNED, **kw):  # noqa: ANN003, ANN201
    return resolve_recipe(model, model_type, (arch,), version, **kw)


@pytest.mark.parametrize(("model", "model_type", "arch", "tool", "think"), [
    ("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", "hermes", "qwen3"),
    ("Qwen/Qwen3-30B-A3B", "qwen3_moe", "Qwen3MoeForCausalLM", "hermes", "qwen3"),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3_moe", "Qwen3MoeForCausalLM", "hermes", None),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3_moe", "Qwen3MoeForCausalLM", "qwen3_coder", None),
    ("Qwen/QwQ-32B", "qwen2", "Qwen2ForCausalLM", "hermes", "deepseek_r1"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2", "Qwen2ForCausalLM", "hermes", None),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "qwen2", "Qwen2ForCausalLM", None, "deepseek_r1"),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "llama", "LlamaForCausalLM", None, "deepseek_r1"),
    ("deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", "qwen3", "Qwen3ForCausalLM", None, "deepseek_r1"),
    ("deepseek-ai/DeepSeek-R1", "deepseek_v3", "DeepseekV3ForCausalLM", "deepseek_v3", "deepseek_r1"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama", "LlamaForCausalLM", "llama3_json", None),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama", "LlamaForCausalLM", "llama3_json", None),
    ("mistralai/Mistral-7B-Instruct-v0.3", "mistral", "MistralForCausalLM", "mistral", None),
    ("openai/gpt-oss-20b", "gpt_oss", "GptOssForCausalLM", "openai", "openai_gptoss"),
])
def test_family_parsers_at_the_pinned_version(model: str, model_type: str, arch: str, tool: str | None,
                                              think: str | None) -> None:
    found = recipe(model, model_type, arch)
    assert (found.tool_call_parser, found.reasoning_parser) == (tool, think)
    expected = (["--enable-auto-tool-choice", "--tool-call-parser", tool] if tool else []) + (
        ["--reasoning-parser", think] if think else [])
    assert list(found.args) == expected
    assert tool is None or tool in TOOL_PARSERS, "every parser a family names has its version in the table"
    assert think is None or think in REASONING_PARSERS
    assert found.reasons and found.reasons[0].startswith(f"recipe {found.family}:"), "the plan says why"


def test_a_llama_that_is_not_llama_3_gets_nothing() -> None:
    """The lab's tiny model: a LlamaForCausalLM without Llama 3's tokenizer (no <|python_tag|>, which vLLM's
    llama3_json parser requires at start-up)."""
    found = resolve_recipe("tiny-llama", "llama", ("LlamaForCausalLM",), PINNED, vocab_size=2048)
    assert found.args == () and found.family is None and not found.tools
    assert resolve_recipe("my-finetune", "llama", ("LlamaForCausalLM",), PINNED,
                          vocab_size=128256).tool_call_parser == "llama3_json", "Llama 3's vocabulary"


def test_mistral_explains_the_tokenizer_mode() -> None:
    found = recipe("mistralai/Mistral-Small-24B-Instruct-2501", "mistral", "MistralForCausalLM")
    assert "--tokenizer-mode mistral" in found.reasons[0] and "--tokenizer-mode" not in found.args


def test_versions_decide_what_is_emitted() -> None:
    old = recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", "0.8.4")
    assert old.reasoning_parser == "deepseek_r1" and "--enable-reasoning" in old.args, "0.8 needed both flags"
    assert any("qwen3 needs vLLM 0.8.5+" in r for r in old.reasons)
    mid = recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", "0.9.2")
    assert "--enable-reasoning" not in mid.args and mid.reasoning_parser == "qwen3"
    assert recipe("openai/gpt-oss-20b", "gpt_oss", "GptOssForCausalLM", "0.10.1").args == ()
    ancient = recipe("Qwen/Qwen2.5-7B-Instruct", "qwen2", "Qwen2ForCausalLM", "0.5.4")
    assert ancient.args == () and "needs vLLM 0.6.0+" in ancient.reasons[-1]
    with pytest.raises(RecipeError, match="vllm_tool_calling: .*0.6.0"):
        recipe("Qwen/Qwen2.5-7B-Instruct", "qwen2", "Qwen2ForCausalLM", "0.5.4", tool_calling=True)


def test_settings_override_the_family() -> None:
    off = recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", tool_calling=False)
    assert off.args == ("--reasoning-parser", "qwen3") and "tool calling off" in off.reasons[-1]
    no_think = recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", reasoning_parser=False)
    assert "--reasoning-parser" not in no_think.args and no_think.tool_call_parser == "hermes"
    forced = resolve_recipe("tiny-llama", "llama", ("LlamaForCausalLM",), PINNED, tool_calling=True,
                            tool_call_parser="hermes")
    assert forced.args == ("--enable-auto-tool-choice", "--tool-call-parser", "hermes") and forced.tools
    with pytest.raises(RecipeError, match="vllm_tool_calling: True, but no tool-call parser is known"):
        resolve_recipe("tiny-llama", "llama", ("LlamaForCausalLM",), PINNED, tool_calling=True)
    with pytest.raises(RecipeError, match="vllm_tool_call_parser: 'hermess' is no tool-call parser .* hermes"):
        recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", tool_call_parser="hermess")
    with pytest.raises(RecipeError, match="vllm_reasoning_parser: 'qwen' .*qwen3"):
        recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", reasoning_parser="qwen")
    # Another version's registry is not known here: its own server checks the name.
    assert recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM", "0.11.0",
                  tool_call_parser="future_parser").tool_call_parser == "future_parser"


def test_flags_in_extra_args_win() -> None:
    found = recipe("Qwen/Qwen3-8B", "qwen3", "Qwen3ForCausalLM",
                   extra_args=("--enable-auto-tool-choice", "--tool-call-parser", "qwen3_xml", "--reasoning-parser",
                               "deepseek_r1"))
    assert found.args == () and found.tool_call_parser is None
    assert "tool-call parser from vllm_extra_args" in found.reasons


def test_every_parser_the_recipes_name_is_in_the_pinned_registry() -> None:
    assert set(TOOL_PARSERS) <= PINNED_TOOL_PARSERS and set(REASONING_PARSERS) <= PINNED_REASONING_PARSERS


def test_tool_call_probe_and_its_check() -> None:
    request = tool_call_request("tiny", "Hello")
    assert request["tool_choice"] == {"type": "function", "function": {"name": PROBE_TOOL}}
    assert [t["function"]["name"] for t in request["tools"]] == [PROBE_TOOL]

    def answer(name: str, arguments: str) -> str:
        call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
        return json.dumps({"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [call]}}]})

    assert tool_call_problem("200", answer(PROBE_TOOL, "{}")) is None
    assert tool_call_problem("200", answer(PROBE_TOOL, '{"ok": true}')) is None
    assert "names 'other'" in tool_call_problem("200", answer("other", "{}"))
    assert "not JSON" in tool_call_problem("200", answer(PROBE_TOOL, '{"ok": tr'))
    assert "not a JSON object" in tool_call_problem("200", answer(PROBE_TOOL, "[1]"))
    assert "no tool_calls" in tool_call_problem("200", json.dumps({"choices": [{"message": {"content": "hi"}}]}))
    assert tool_call_problem("400", '{"error": "auto tool choice requires --enable-auto-tool-choice"}').startswith(
        "HTTP 400")


def test_a_call_cut_at_max_tokens_is_no_verdict_but_a_stop_without_calls_fails() -> None:
    """What the lab's random model does with most prompts (whitespace until max_tokens), recorded on the CPU build."""
    cut = json.dumps({"choices": [{"finish_reason": "length", "message": {
        "content": '<tool_call>{"name": "vllm_deploy_probe", "arguments": {\n           \n', "tool_calls": []}}]})
    assert tool_call_cut_off("200", cut)
    stopped = json.dumps({"choices": [{"finish_reason": "stop",
                                       "message": {"content": "<tool_call>{}", "tool_calls": []}}]})
    assert not tool_call_cut_off("200", stopped) and "no tool_calls" in tool_call_problem("200", stopped)
    assert not tool_call_cut_off("400", cut)
    assert "strict" not in tool_call_request("tiny", "x")["tools"][0]["function"], "see tool_call_request"
