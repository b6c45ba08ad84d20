"""Re-sizing from a downloaded config.json (plan/replan.py) against recorded GPU servers, no host."""

from __future__ import annotations

import copy
from typing import Any

from pyinfra.context import ctx_host, ctx_state

from facts.gather import gather_host_facts
from plan.replan import plan_changes, replan_message
from plan.service import build_plan
from plan.settings import load_instances
from sizing.catalog import find_model
from tests.fakehosts import fake_host_data, make_fake_state

QWEN = "Qwen/Qwen3-8B"


def _planned(profile: str, data: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(plan, settings, facts) of the first instance, the plan sized from the catalog (no config.json on the host)."""
    fake = make_fake_state([("h", fake_host_data(profile))])
    host = fake.inventory.get_host("@fake/h")
    with ctx_state.use(fake), ctx_host.use(host):
        instance = load_instances(data)[0]
        facts = gather_host_facts(host, model_dir=instance.settings.model_dir, ports=[instance.settings.vllm_port])
    assert facts.model_config is None
    return build_plan(instance.settings, facts, "h", gpus=instance.gpus), instance.settings, facts


def _config(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(find_model(QWEN).config)
    config.update(changes)
    return config


def test_the_catalogs_own_config_changes_nothing() -> None:
    plan, settings, facts = _planned("h100-x1-ubuntu2404", {"model": QWEN, "model_source": "huggingface"})
    assert plan_changes(plan, settings, facts, _config()) == []


def test_a_shorter_context_in_the_real_config_is_named_with_both_values() -> None:
    plan, settings, facts = _planned("h100-x1-ubuntu2404", {"model": QWEN})
    changes = plan_changes(plan, settings, facts, _config(max_position_embeddings=8192))
    assert changes == [f"max model len: {plan.max_model_len} -> 8192"]
    assert plan.max_model_len > 8192


def test_a_different_dtype_is_named() -> None:
    plan, settings, facts = _planned("h100-x1-ubuntu2404", {"model": QWEN})
    changes = plan_changes(plan, settings, facts, _config(torch_dtype="float16"))
    assert any(change.startswith("dtype: bfloat16 -> float16") for change in changes), changes


def test_a_bigger_real_model_that_no_longer_fits_says_so() -> None:
    plan, settings, facts = _planned("4090-x2-ubuntu2204", {"model": QWEN, "vllm_tensor_parallel_size": 1,
                                                            "vllm_max_model_len": 32768})
    changes = plan_changes(plan, settings, facts, _config(num_hidden_layers=80, hidden_size=8192,
                                                          intermediate_size=28672, num_attention_heads=64))
    assert len(changes) == 1 and changes[0].startswith("it no longer fits"), changes


def test_an_unreadable_config_is_a_change_not_a_crash() -> None:
    plan, settings, facts = _planned("h100-x1-ubuntu2404", {"model": QWEN})
    changes = plan_changes(plan, settings, facts, {"model_type": "qwen3"})
    assert len(changes) == 1 and changes[0].startswith("it cannot be sized from its config.json"), changes


def test_message_names_each_instance_and_says_to_deploy_again() -> None:
    message = replan_message("gpu1", QWEN, {"vllm-a": ["max model len: 40960 -> 8192"]})
    assert "gpu1: the downloaded config.json of Qwen/Qwen3-8B changes the plan" in message
    assert "  vllm-a: max model len: 40960 -> 8192" in message
    assert message.splitlines()[-1].startswith("Run the deploy again")
