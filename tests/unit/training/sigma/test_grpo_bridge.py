"""The TRL bridge: verifier rewards on right / wrong / malformed answers, group advantages, one real GRPO update."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from cascadelab.config import GRPOParams, ReplayParams, TokenizerParams
from cascadelab.data.code_tasks import level_items
from cascadelab.data.tasks import get_family
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM, apply_instant_plan
from cascadelab.pipeline.sigma_rl import build_cascade, code_spec
from cascadelab.sandbox import Limits, Sandbox
from cascadelab.training.sigma.causal_replay import CausalReplay
from cascadelab.training.sigma.grpo_bridge import GRPOBridge, RLTask, VerifierReward, group_advantages

META = {"answer_format": "reversed"}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox(Limits(wall_seconds=5.0, cpu_seconds=2))
    box.warm_up()
    return box


def _code_record(prompt: str) -> dict:
    item = next(i for i in level_items(1) if i.prompt == prompt)
    return {"tests": [{"expression": e, "expected": v} for e, v in item.tests], "required": list(item.required)}


def test_rewards_for_right_wrong_and_malformed_math_and_code(sandbox: Sandbox) -> None:
    item = get_family("add").sample(random.Random(0), 2)
    reward = VerifierReward(build_cascade(META, ["add"], sandbox, format_weight=0.1, asymmetric=True))
    double = code_spec(_code_record("a lambda that doubles its argument="))
    wrong_math = item.response[:-1] + ("1" if item.response[-1] != "1" else "2")
    completions = [item.response, wrong_math, "xyz", "lambda x:x*2", "lambda x:x+2", "lambda x:"]
    kinds = ["add"] * 3 + ["code"] * 3
    refs: list[object] = [item.answer] * 3 + [double] * 3
    values = reward(["p"] * 6, completions, kind=kinds, reference=refs)
    assert values == pytest.approx([1.0, 0.1, 0.0, 1.0, 0.1 + 0.9 * 1 / 5, 0.0])  # x+2 = 2x only at x = 2
    counters = reward.cascade.counters()
    assert counters == {
        "feature_verifier_effective_calls": 6,
        "feature_verifier_cascade_effective_calls": 4,  # only the well-formed ones reach the full check
        "feature_asym_verify_effective_calls": 2,
    }
    assert reward(["p"], ["lambda x:x*2"], kind=["code"], reference=[double]) == [1.0]
    assert reward.memo_hits == 1 and reward.cascade.counters()["feature_verifier_effective_calls"] == 6


def test_group_advantages_centre_each_group() -> None:
    advantages = group_advantages([1.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 1.0], 4)
    assert advantages == [0.5, -0.5, 0.0, 0.0, -0.25, -0.25, -0.25, 0.75]


def _tiny_reverse_model() -> tuple[list[dict[str, str]], Any, SigmaForCausalLM]:
    """Seeded: four `rev` records, a char tokenizer on them and a tiny SigmaLLM with its INSTANT plan applied."""
    torch.manual_seed(0)
    records = [{"prompt": f"rev {w}=", "response": w[::-1]} for w in ("ab", "ba", "abc", "cab")]
    tokenizer = train_tokenizer([r["prompt"] + r["response"] for r in records], TokenizerParams(kind="char"))
    config = SigmaConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = SigmaForCausalLM(config)
    apply_instant_plan(model, 1024, checkpoint_blocks=False)
    return records, tokenizer, model


def test_one_grpo_update_through_trl_steps_the_callers_optimizer_and_fills_replay(tmp_path: Path) -> None:
    records, tokenizer, model = _tiny_reverse_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tasks = {"math": [RLTask("reverse", r["prompt"], r["response"]) for r in records]}
    cascade = build_cascade(META, ["reverse"], None, format_weight=0.1, asymmetric=True)
    replay = CausalReplay(16, seed=0)
    settings = GRPOParams(prompts_per_step=2, num_generations=4, max_completion_length=4, temperature=1.5)
    bridge = GRPOBridge(
        model,
        tokenizer,
        [optimizer],
        tasks,
        cascade,
        settings,
        0,
        tmp_path,
        replay=replay,
        replay_params=ReplayParams(per_step=1),
    )
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 4):
        bridge.step(step)
    assert bridge.steps == 3 and bridge.samples == 24
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert optimizer.state  # the update went through the caller's optimizer
    enabled, calls = bridge.features()
    assert enabled["grpo"] and not enabled["gspo"] and calls["grpo"] == 3
    assert calls["verifier"] == 24 - bridge.reward.memo_hits
    assert bridge.replay_adds == replay.admitted
    state = bridge.state_dict()
    assert bridge.batch(4) == (bridge.load_state_dict(state) or bridge.batch(4))  # same draws after a restore


class _LengthReward:
    """A stub cascade: reward = completion length / 4 (capped at 1), so every group has non-zero advantages."""

    asymmetric = False

    def reward(self, _kind: str, completion: str, _reference: object) -> SimpleNamespace:
        return SimpleNamespace(value=min(len(completion) / 4.0, 1.0))


def _after_updates(level: str, tmp_path: Path, updates: int) -> list[torch.Tensor]:
    """Parameters of a fixed tiny model after `updates` calls of a bridge re-using each batch twice."""
    records, tokenizer, model = _tiny_reverse_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    tasks = {"math": [RLTask("reverse", r["prompt"], r["response"]) for r in records]}
    settings = GRPOParams(
        prompts_per_step=2, num_generations=4, max_completion_length=6, temperature=1.5, epsilon=10.0,
        importance_sampling_level=level, num_iterations=2,
    )  # fmt: skip
    bridge = GRPOBridge(model, tokenizer, [optimizer], tasks, _LengthReward(), settings, 0, tmp_path)  # type: ignore[arg-type]
    for step in range(updates):
        bridge.step(step)
    assert bridge.steps == updates and bridge.updates_on_stored == updates // 2
    return [p.detach().clone() for p in model.parameters()]


def _largest_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def test_gspo_equals_grpo_on_policy_and_changes_the_update_on_stored_completions(tmp_path: Path) -> None:
    first = {level: _after_updates(level, tmp_path / level, 1) for level in ("token", "sequence")}
    # on-policy every ratio is 1: token- and sequence-level importance sampling give the same update
    assert _largest_gap(first["token"], first["sequence"]) < 1e-5  # float rounding only
    second = {level: _after_updates(level, tmp_path / f"{level}2", 2) for level in ("token", "sequence")}
    # the second update re-uses the stored completions: per-token ratios and GSPO's per-sequence ratio differ
    assert _largest_gap(second["token"], second["sequence"]) > 1e-3
    assert _largest_gap(first["token"], second["token"]) > 1e-3  # the update on the stored batch moved the model
