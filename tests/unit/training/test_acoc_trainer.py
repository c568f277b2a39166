import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from cascadelab.config import ACOCParams, TokenizerParams
from cascadelab.data.task_streams import build_task_batches
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.acoc.accounting import count_parameters
from cascadelab.models.acoc.growth import split_expert, widen_expert
from cascadelab.training.acoc_trainer import (
    ACOCController,
    CycleEngine,
    bars,
    build_model,
    comparison,
    history_rows,
    run_acoc,
    task_schedule,
)

LETTERS = "abcdefgh"


def _lookup_records(task: str, seed: int) -> list[dict]:
    """A memorisation task: 64 two-letter keys mapped to random two-letter values (capacity-bound)."""
    rng = random.Random(seed)
    records = []
    for a in LETTERS:
        for b in LETTERS:
            value = rng.choice(LETTERS) + rng.choice(LETTERS)
            records.append(
                {
                    "id": f"{task}-{a}{b}",
                    "task": task,
                    "difficulty": 1,
                    "prompt": f"{a}{b}=",
                    "response": value,
                    "answer": value,
                }
            )
    return records


@pytest.fixture(scope="module")
def data():
    records = _lookup_records("map", 0) + _lookup_records("alt", 1)
    tokenizer = train_tokenizer([r["prompt"] + r["response"] for r in records], TokenizerParams(kind="char"))
    train = build_task_batches(records, tokenizer, ["map", "alt"], batch_size=16)
    val = build_task_batches(records, tokenizer, ["map", "alt"], batch_size=64)
    return records, tokenizer, train, val


def _verify(task: str, output: str, answer: str) -> bool:
    return output.strip() == answer


def _settings(**overrides) -> ACOCParams:
    base = {
        "tasks": {"map": 0},
        "cycles": 4,
        "steps_per_cycle": 40,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "lr_warmup_steps": 5,
        "num_threads": 1,
        "baselines": False,
        "val_items_per_task": 64,
        "test_items_per_task": 16,
        "max_new_tokens": 3,
        "model": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "initial_experts": 1, "expert_width": 4},
        "warmup": {"steps": 10},
        "vote": {"variants": 3},
        "saturation": {"batches": 1},
    }
    base.update(overrides)
    return ACOCParams(**base)


def test_schedule_is_deterministic_and_keeps_old_tasks_in_the_mix():
    settings = _settings(tasks={"map": 0, "alt": 2}, continual={"old_task_share": 0.25}, steps_per_cycle=400)
    first = task_schedule(settings, 1, seed=3)
    assert first == task_schedule(settings, 1, seed=3) and set(first) == {"map"}
    later = task_schedule(settings, 2, seed=3)
    assert 0.18 < later.count("map") / len(later) < 0.32


def test_warmup_multiplies_exactly_the_new_parameters_learning_rate(data):
    _, tokenizer, train, val = data
    settings = _settings(warmup={"steps": 3, "lr_multiplier": 10.0})
    model = build_model(settings.model, tokenizer, seed=0)
    engine = CycleEngine("acoc", model, settings, train, {"map": val["map"].fixed()}, seed=0)
    old = {id(p) for p in model.parameters()}
    changes = [split_expert(model, 0, 0), widen_expert(model, 0, 0, extra=2)]
    new = [p for change in changes for p in change.new_params]
    engine.start_warmup(changes)
    base_group, new_group = engine.optimizer.param_groups
    assert {id(p) for p in new_group["params"]} == {id(p) for p in new} and not old & {id(p) for p in new}
    assert {id(p) for p in base_group["params"]} == {id(p) for p in model.parameters()} - {id(p) for p in new}
    assert new_group["lr"] == 10.0 * base_group["lr"]
    assert model.moe_layers[0].force_experts == [1] and model.moe_layers[0].force_share == 0.3
    engine.step = 37
    engine._apply_lr()
    assert new_group["lr"] == 10.0 * base_group["lr"] == 10.0 * engine.lr_at(37)
    engine.warmup_left = 1
    engine.end_warmup()
    assert engine.optimizer.param_groups[1]["lr"] == engine.optimizer.param_groups[0]["lr"]
    assert model.moe_layers[0].force_experts == []


def test_forced_routing_sends_the_share_of_tokens_to_the_new_expert(data):
    _, tokenizer, _, _ = data
    settings = _settings(
        model={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "initial_experts": 2, "expert_width": 4, "top_k": 1}
    )
    model = build_model(settings.model, tokenizer, seed=0).train()
    moe = model.moe_layers[0]
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    moe.force_experts, moe.force_share, moe.force_generator = [1], 0.3, torch.Generator().manual_seed(1)
    natural = (moe.router_logits(x).argmax(-1) == 1).float().mean().item()
    forced = (moe.routing_weights(x)[:, 1] > 0).float().mean().item()
    assert forced == pytest.approx(natural + 0.3 * (1 - natural), abs=0.04)


def test_a_tiny_cycle_loop_grows_a_saturated_one_expert_model(data, tmp_path):
    records, tokenizer, train, val = data
    # A 4-unit expert cannot memorise 64 random pairs: its loss flattens (< 15 % per cycle) while saturated.
    settings = _settings(cycles=5, learning_rate=1e-2, growth={"stagnation_tol": 0.15})
    result = run_acoc(settings, train, val, records, tokenizer, _verify, seed=0, checkpoint_dir=tmp_path)
    splits = [e for e in result.events if e["type"] == "split"]
    assert splits, [e for e in result.events if e["type"] == "decision"]
    assert result.history[-1]["params"] > result.history[0]["params_start"]
    decisions = [e for e in result.events if e["type"] == "decision"]
    assert len(decisions) == settings.cycles and all(e["reasons"] for e in decisions)
    for split in splits:  # dense mixing: the split itself does not move the validation loss
        assert abs(split["relative_change"]) < 1e-4
    assert [row["cycle"] for row in result.history] == list(range(settings.cycles))
    counts = count_parameters(result.model)
    assert result.metrics["params"] == counts.total
    assert result.metrics["parameter_steps"] < settings.total_steps * counts.total
    result.model.save_pretrained(tmp_path / "final")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert loaded.config.expert_widths == result.model.config.expert_widths
    assert (tmp_path / "cycle_00" / "model.safetensors").is_file()


def test_baselines_train_on_the_same_budget_and_are_compared(data):
    records, tokenizer, train, val = data
    settings = _settings(tasks={"map": 0, "alt": 2}, baselines=True, cycles=3, steps_per_cycle=20)
    result = run_acoc(settings, train, val, records, tokenizer, _verify, seed=0)
    rows = {row["model"]: row for row in comparison(result)}
    assert set(rows) == {"acoc", "static_initial", "static_final"}
    assert {row["train_steps"] for row in rows.values()} == {settings.total_steps}
    assert len({row["train_tokens"] for row in rows.values()}) == 1  # the very same batches
    assert rows["static_final"]["params"] == rows["acoc"]["params"]
    assert rows["static_initial"]["params"] == result.metrics["params_initial"]
    assert all("forgetting" in row and "em_map" in row and "ppl_alt" in row for row in rows.values())
    flat = history_rows(result.history)
    assert [r["cycle"] for r in flat] == [0.0, 1.0, 2.0] and "val_acc_alt" in flat[2] and "experts" in flat[0]
    assert "val_loss_map" in history_rows(result.baselines["static_final"].history)[0]
    measured = bars(result)
    assert {"beats_initial", "within_1_point_of_final", "fewer_parameter_steps", "forgetting_ok"} <= set(measured)


def test_settings_reject_a_schedule_without_a_first_task():
    with pytest.raises(ValueError, match="at least one task must start at cycle 0"):
        _settings(tasks={"map": 1})
    with pytest.raises(ValueError, match=r"tasks.map: first cycle must be in \[0, 3\]"):
        _settings(tasks={"map": 4})


def test_controller_records_the_loss_around_each_expansion(data):
    _, tokenizer, train, val = data
    settings = _settings()
    model = build_model(settings.model, tokenizer, seed=0)
    engine = CycleEngine("acoc", model, settings, train, {"map": val["map"].fixed()}, seed=0)
    controller = ACOCController(engine, seed=0)
    changes = controller.expand(controller._saturation(["map"]), ["map"], 0, reason="test")
    assert [c.kind for c in changes] == ["split"]
    event = next(e for e in controller.events if e["type"] == "split")
    assert event["reason"] == "test" and event["val_loss_before"] == pytest.approx(event["val_loss_after"], rel=1e-5)
    assert engine.warmup_left == settings.warmup.steps


def test_controller_prunes_an_unused_expert_after_patience_and_merges_twins(data):
    _, tokenizer, train, val = data
    settings = _settings(
        model={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "initial_experts": 3, "expert_width": 4},
        growth={"prune_patience": 2, "consolidate_min_age": 1},
    )
    model = build_model(settings.model, tokenizer, seed=0)
    engine = CycleEngine("acoc", model, settings, train, {"map": val["map"].fixed()}, seed=0)
    controller = ACOCController(engine, seed=0)
    with torch.no_grad():
        model.moe_layers[0].expert(2).gate_logit.fill_(-20.0)  # the penalty drove this gate to ~0
    sat = controller._saturation(["map"])
    assert controller.prune(sat, ["map"], cycle=0) == []  # first low-usage cycle: patience not reached
    pruned = controller.prune(sat, ["map"], cycle=1)
    assert [(c.kind, c.experts) for c in pruned] == [("prune", [2])]
    assert model.config.expert_widths == [[[4], [4]]] and count_parameters(model).total == model.num_parameters()
    split_expert(model, 0, 1, noise=0.0)
    controller.born[id(model.moe_layers[0].expert(2))] = 1
    controller._after_structure_change()
    sat = controller._saturation(["map"])
    assert controller.consolidate(sat, ["map"], cycle=1) == []  # the copy is too young to merge
    merged = controller.consolidate(sat, ["map"], cycle=2)
    assert [(c.kind, c.experts) for c in merged] == [("merge", [1, 2])]
    event = next(e for e in controller.events if e["type"] == "merge")
    assert event["similarity"] == pytest.approx(1.0) and abs(event["relative_change"]) < 1e-5
