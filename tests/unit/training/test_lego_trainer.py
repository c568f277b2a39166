"""LEGO training: stages, early stopping, hard examples, upper-block training, evaluation, entry points."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cascadelab.config import LegoLoopParams, LegoPhase2Params
from cascadelab.models.lego import LEGOConfig, LEGOTransformer, build_lego_model
from cascadelab.models.lego.calibration import exit_confidences
from cascadelab.training.lego_trainer import (
    HardExampleSets,
    Trainer,
    collect_hard_examples,
    create_hard_example_loader,
    deep_supervision_stages,
    evaluate_on_hard_examples,
    hard_examples_nbytes,
    load_hard_examples,
    prepare_hard_examples,
    save_hard_examples,
    standard_stages,
    train_full_depth,
    train_phase1,
    train_phase2,
    train_upper_layers,
)

torch.set_num_threads(1)

# --------------------------------------------------------------------------- toy corpus: "abc=" -> "cba"

CHARS = "abcde="
SPECIAL = ["<pad>", "<bos>", "<eos>"]
VOCAB = {tok: i for i, tok in enumerate(SPECIAL + list(CHARS))}


def encode(prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Char ids of ``<bos> prompt response <eos>`` and labels that keep the response and eos only."""
    ids = [VOCAB["<bos>"], *(VOCAB[c] for c in prompt + response), VOCAB["<eos>"]]
    labels = [-100] * (1 + len(prompt)) + ids[1 + len(prompt) :]
    return ids, labels


def toy_batches(words: list[str], batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(0, len(words), batch_size):
        pairs = [encode(w + "=", w[::-1]) for w in words[i : i + batch_size]]
        ids = torch.tensor([p[0] for p in pairs])
        out.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "labels": torch.tensor([p[1] for p in pairs]),
            }
        )
    return out


WORDS = ["".join(w) for w in itertools.product("abcde", repeat=3)]
random.Random(0).shuffle(WORDS)
TRAIN, VAL, TEST = toy_batches(WORDS[:80]), toy_batches(WORDS[80:104]), toy_batches(WORDS[104:])


def tiny_config(**overrides: object) -> LEGOConfig:
    base: dict[str, object] = dict(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        initializer_range=0.06,
    )
    return LEGOConfig(**{**base, **overrides})


def loop(**overrides: object) -> LegoLoopParams:
    """A causal loop that validates once per epoch, without warm-up (the section's defaults otherwise)."""
    return LegoLoopParams.model_validate({"eval_every": None, "warmup_steps": 0, **overrides})


@pytest.fixture(scope="module")
def phase1() -> LEGOTransformer:
    """A shallow model trained briefly, so confidences spread out."""
    model = build_lego_model(tiny_config(), seed=0)
    trainer = Trainer(standard_stages(2), len(VOCAB))
    trainer.train_with_early_stopping(
        model, TRAIN, VAL, trainer.create_optimizer(model, 3e-3), loop(max_epochs=6, patience=6)
    )
    return model.eval()


# --------------------------------------------------------------------------- settings


def test_stage_presets_and_validation() -> None:
    assert standard_stages(4) == [(4, 4, 1.0)]
    ds = deep_supervision_stages(4)
    assert [(first, last) for first, last, _ in ds] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert sum(weight for _, _, weight in ds) == pytest.approx(1.0)
    assert Trainer([(1, 2, 0.5), (2, 3, 0.5)]).loss_layers == [1, 2, 3]
    with pytest.raises(ValueError, match=r"layers: need 1 <= first <= last, got \(3, 2\)"):
        Trainer([(3, 2, 1.0)])
    with pytest.raises(ValueError, match=r"loss_weight: must be >= 0, got -1\.0"):
        Trainer([(1, 1, -1.0)])
    with pytest.raises(ValueError, match="stages: need at least one loss stage"):
        Trainer([])
    with pytest.raises(ValueError, match="extra_forbidden"):
        loop(learning_rate=1e-3, stages=[])


def test_stage_loss_averages_the_layers_of_each_stage() -> None:
    model = build_lego_model(tiny_config(num_hidden_layers=3, exit_layers=[3]), seed=0)
    batch = TRAIN[0]
    loss = Trainer([(1, 2, 0.7), (3, 3, 0.3)]).compute_loss(model, batch)
    logits = model.forward_all_layers(batch["input_ids"])
    ce = [F.cross_entropy(x[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten()) for x in logits]
    assert torch.allclose(loss, 0.7 * (ce[0] + ce[1]) / 2 + 0.3 * ce[2])


# --------------------------------------------------------------------------- early stopping


def test_training_lowers_the_loss_and_keeps_the_best_weights() -> None:
    model = build_lego_model(tiny_config(), seed=0)
    trainer = Trainer(standard_stages(2), len(VOCAB))
    before = trainer.validation_loss(model, VAL)
    logged: list[tuple[dict[str, float], int]] = []
    result = trainer.train_with_early_stopping(
        model,
        TRAIN,
        VAL,
        trainer.create_optimizer(model, 3e-3),
        loop(max_epochs=8, patience=8),
        log_fn=lambda m, s: logged.append((m, s)),
    )
    after = trainer.validation_loss(model, VAL)
    assert after < 0.7 * before
    assert after == pytest.approx(result["best_val_loss"])
    assert result["train_tokens"] == result["epochs"] * 80 * 4  # 80 words x (3 chars + eos)
    assert [s for m, s in logged if "val_loss" in m] == [10 * e for e in range(1, 9)]


def test_early_stopping_stops_when_val_stalls() -> None:
    model = build_lego_model(tiny_config(), seed=0)
    trainer = Trainer(standard_stages(2), len(VOCAB))
    frozen_lr = trainer.create_optimizer(model, base_lr=0.0)  # val never improves after the first check
    result = trainer.train_with_early_stopping(model, TRAIN, VAL, frozen_lr, loop(max_epochs=10, patience=1))
    assert (result["epochs"], result["stopped_early"], result["best_step"]) == (3.0, 1.0, 10.0)


def test_token_budget_stops_training() -> None:
    model = build_lego_model(tiny_config(), seed=0)
    trainer = Trainer(standard_stages(2), len(VOCAB))
    optimizer = trainer.create_optimizer(model)
    result = trainer.train_with_early_stopping(model, TRAIN, VAL, optimizer, loop(eval_every=2), max_train_tokens=100)
    assert result["train_tokens"] == 128.0 and result["steps"] == 4.0  # 32 tokens per batch


# --------------------------------------------------------------------------- hard examples


def test_hard_examples_are_exactly_the_low_confidence_response_tokens(phase1: LEGOTransformer) -> None:
    conf = exit_confidences(phase1, VAL)
    threshold = float(conf.median())
    hard = collect_hard_examples(phase1, VAL, threshold)
    expected_h, expected_t, expected_x = [], [], []
    for b in VAL:
        with torch.no_grad():
            h = phase1.exit_hidden_states(b["input_ids"])
        for r, t in itertools.product(range(b["input_ids"].shape[0]), range(b["input_ids"].shape[1] - 1)):
            target = int(b["labels"][r, t + 1])
            if target == -100:
                continue
            with torch.no_grad():
                c = float(F.softmax(phase1.exit_logits(h[r, t], 2), -1).max())
            if c < threshold:
                expected_h.append(h[r, t])
                expected_t.append(target)
                expected_x.append(int(b["input_ids"][r, t]))
    assert hard["targets"].tolist() == expected_t
    assert hard["inputs"].tolist() == expected_x
    assert hard["hidden_states"].dtype == torch.float16
    assert torch.equal(hard["hidden_states"], torch.stack(expected_h).half())
    assert bool((hard["confidences"] < threshold).all())
    assert len(expected_t) == int((conf < threshold).sum())
    capped = collect_hard_examples(phase1, VAL, threshold, max_examples=5)
    assert capped["targets"].tolist() == expected_t[:5] and capped["hidden_states"].shape == (5, 32)
    assert hard_examples_nbytes(capped) == 5 * (8 + 32 * 2 + 8 + 4)


def test_prepare_calibrates_on_val_and_collects_from_train(phase1: LEGOTransformer, tmp_path: Path) -> None:
    uncapped = prepare_hard_examples(phase1, TRAIN, VAL, hard_example_ratio=0.5)
    assert uncapped["train"]["targets"].numel() == 119  # golden: train is more confident than val (119/320)
    sets = prepare_hard_examples(phase1, TRAIN, VAL, hard_example_ratio=0.5, max_train_examples=50)
    val_conf = exit_confidences(phase1, VAL)
    assert int((val_conf < sets["threshold"]).sum()) == val_conf.numel() // 2
    assert sets["val"]["targets"].numel() == val_conf.numel() // 2
    assert sets["train"]["targets"].numel() == 50
    size = save_hard_examples(tmp_path / "hard.safetensors", sets)
    assert size == (tmp_path / "hard.safetensors").stat().st_size
    loaded = load_hard_examples(tmp_path / "hard.safetensors")
    assert loaded["threshold"] == sets["threshold"]
    for split in ("train", "val"):
        for key in ("inputs", "hidden_states", "targets", "confidences"):
            assert torch.equal(loaded[split][key], sets[split][key])  # type: ignore[literal-required]


def test_hard_example_loader_batches_and_shuffles_reproducibly(phase1: LEGOTransformer) -> None:
    hard = collect_hard_examples(phase1, TRAIN, 1.01, max_examples=20)
    batches = list(create_hard_example_loader(hard, batch_size=8, seed=3))
    assert [b["targets"].numel() for b in batches] == [8, 8, 4]
    assert batches[0]["hidden_states"].shape == (8, 32)
    again = list(create_hard_example_loader(hard, batch_size=8, seed=3))
    assert torch.equal(batches[0]["targets"], again[0]["targets"])
    assert sorted(torch.cat([b["targets"] for b in batches]).tolist()) == sorted(hard["targets"].tolist())


def test_train_upper_layers_learns_hard_tokens_with_lower_block_frozen(phase1: LEGOTransformer) -> None:
    model = LEGOTransformer.extend_from(phase1, 4, routing_threshold=0.5, freeze_lower=True, seed=0)
    lower = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    upper = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lower.keys() == {n for n, _ in phase1.named_parameters()}
    hard = collect_hard_examples(phase1, TRAIN, 1.01)  # every train token, to learn something measurable
    loader = create_hard_example_loader(hard, batch_size=32, seed=0)
    before = evaluate_on_hard_examples(model, loader, len(VOCAB), num_lower_layers=2)
    assert before["ppl"] == pytest.approx(before["shallow_ppl"], rel=1e-5)  # extension starts as the source
    optimizer = Trainer(standard_stages(4)).create_optimizer(model, 3e-3)
    for _ in range(5):
        train_upper_layers(model, loader, optimizer, len(VOCAB), num_lower_layers=2)
    after = evaluate_on_hard_examples(model, loader, len(VOCAB), num_lower_layers=2)
    assert after["loss"] < 0.9 * before["loss"]
    for n, p in model.named_parameters():
        if n in lower:
            assert p.grad is None and not p.requires_grad and torch.equal(p, lower[n]), n
    assert any(not torch.equal(p, upper[n]) for n, p in model.named_parameters() if n in upper)


# --------------------------------------------------------------------------- evaluation


def test_evaluate_returns_the_four_metrics(phase1: LEGOTransformer) -> None:
    model = LEGOTransformer.extend_from(phase1, 4, routing_threshold=0.5, seed=0)
    trainer = Trainer(standard_stages(4), len(VOCAB))
    plain = trainer.evaluate(model, TEST)
    assert plain.keys() == {"acc", "ppl", "shallow_ratio", "compute_cost"}
    assert (plain["shallow_ratio"], plain["compute_cost"]) == (0.0, 1.0)
    assert 0.0 <= plain["acc"] <= 1.0 and 1.0 <= plain["ppl"] < len(VOCAB)
    threshold = float(exit_confidences(phase1, TEST).median())
    routed = trainer.evaluate(model, TEST, routing_threshold=threshold, exit_layer=2)
    assert 0.45 <= routed["shallow_ratio"] <= 0.55
    assert routed["compute_cost"] == pytest.approx((2 + 2 * (1 - routed["shallow_ratio"])) / 4)
    # a freshly extended model predicts like its source, so routing changes nothing but the cost
    assert routed["ppl"] == pytest.approx(plain["ppl"], rel=1e-5) and routed["acc"] == plain["acc"]
    assert _close(plain, GOLDEN_EVAL)


# Seeded phase-1 model on the toy test split, recorded once; a change is a behaviour change.
GOLDEN_EVAL = {"acc": 76 / 84, "ppl": 1.5330724747501978}


def _close(got: dict[str, float], golden: dict[str, float]) -> bool:
    return all(math.isclose(got[k], v, rel_tol=1e-6) for k, v in golden.items())


# --------------------------------------------------------------------------- entry points


def test_entry_points_run_the_three_phases_and_the_baseline(tmp_path: Path) -> None:
    config = tiny_config()
    phase1 = loop(learning_rate=3e-3, max_epochs=3, warmup_steps=2)
    shallow, m1 = train_phase1(config, TRAIN, VAL, phase1, seed=0)
    assert shallow.config.num_hidden_layers == 2 and m1["val_ppl"] < len(VOCAB)
    sets: HardExampleSets = prepare_hard_examples(shallow, TRAIN, VAL, hard_example_ratio=0.5)
    save_hard_examples(tmp_path / "hard.safetensors", sets)
    hard = load_hard_examples(tmp_path / "hard.safetensors")
    phase2 = LegoPhase2Params(learning_rate=3e-3, patience=1, batch_size=16, max_epochs=3)
    deep, m2 = train_phase2(shallow, hard, TEST, phase2, num_layers=3)
    assert deep.config.exit_layers == [2, 3] and deep.config.routing_threshold == sets["threshold"]
    assert {
        "test_acc",
        "test_ppl",
        "test_shallow_ratio",
        "test_compute_cost",
        "best_val_hard_ppl",
    } <= m2.keys()
    assert m2["trainable_params"] < m2["params"]
    budget = int(m1["train_tokens"] + m2["train_tokens"])
    baseline = loop(learning_rate=3e-3, max_epochs=50)
    base, m3 = train_full_depth(config, TRAIN, VAL, baseline, num_layers=4, max_train_tokens=budget, seed=0)
    assert base.config.exit_layers == [4] and budget <= m3["train_tokens"] < budget + 32
