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
from cascadelab.data.cell_batches import EncodedRecord
from cascadelab.models.lego import LEGOConfig, LEGOTransformer, build_lego_model
from cascadelab.models.lego.calibration import exit_confidences
from cascadelab.training.lego_trainer import (
    Trainer,
    create_hard_example_loader,
    deep_supervision_stages,
    evaluate_on_hard_examples,
    indexed_batches,
    load_hard_examples,
    prepare_hard_examples,
    save_hard_examples,
    standard_stages,
    train_phase2,
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


def items(words: list[str]) -> list[EncodedRecord]:
    """The toy words as encoded records (one cell)."""
    return [EncodedRecord(tuple(encode(w + "=", w[::-1])[0]), 1 + len(w) + 1, "rev") for w in words]


TRAIN_ITEMS, VAL_ITEMS = items(WORDS[:80]), items(WORDS[80:104])


def test_hard_examples_point_at_the_low_confidence_response_tokens(phase1: LEGOTransformer, tmp_path: Path) -> None:
    sets = prepare_hard_examples(phase1, TRAIN_ITEMS, VAL_ITEMS, hard_example_ratio=0.5, batch_size=16, pad_id=0)
    threshold, hard = sets["threshold"], sets["train"]
    conf = exit_confidences(phase1, list(indexed_batches(VAL_ITEMS, 16, 0)))
    assert float((conf < threshold).float().mean()) == pytest.approx(0.5, abs=0.02)
    assert hard["targets"].numel() > 0 and bool((hard["confidences"] < threshold).all())
    for seq, pos, target in zip(
        hard["seq"].tolist()[:20], hard["pos"].tolist()[:20], hard["targets"].tolist()[:20], strict=True
    ):
        item = TRAIN_ITEMS[seq]
        assert pos + 1 >= item.prompt_len and item.input_ids[pos + 1] == target  # a response token of its sequence
    save_hard_examples(tmp_path / "h.safetensors", sets)
    back = load_hard_examples(tmp_path / "h.safetensors")
    assert back["threshold"] == threshold and torch.equal(back["train"]["seq"], hard["seq"])
    loader = create_hard_example_loader(hard, TRAIN_ITEMS, batch_size=8, easy_weight=0.25, seed=0)
    batch = next(iter(loader))
    weights, labels = batch["loss_weights"], batch["labels"]
    supervised = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], 1) != -100
    assert set(weights[supervised].unique().tolist()) <= {0.25, 1.0} and bool((weights[~supervised] == 0).all())
    assert int((weights == 1.0).sum()) > 0
    assert [b["input_ids"].tolist() for b in loader] != [b["input_ids"].tolist() for b in loader]  # reshuffled


def test_phase2_trains_the_upper_block_only_and_evaluates(phase1: LEGOTransformer) -> None:
    sets = prepare_hard_examples(phase1, TRAIN_ITEMS, VAL_ITEMS, hard_example_ratio=0.5, batch_size=16, pad_id=0)
    params = LegoPhase2Params.model_validate(
        {"learning_rate": 3e-3, "batch_size": 8, "max_steps": 30, "eval_every": 10, "warmup_steps": 0}
    )
    model, result = train_phase2(phase1, sets, TRAIN_ITEMS, VAL, params, num_layers=4, pad_id=0)
    for name, p in phase1.state_dict().items():
        assert torch.equal(model.state_dict()[name], p)  # lower block, embeddings and first exit unchanged
    assert result["steps"] >= 10 and result["train_positions"] > 0
    assert result["trainable_params"] < result["params"]
    trainer = Trainer(standard_stages(4), len(VOCAB))
    full, routed = trainer.evaluate(model, TEST), trainer.evaluate(model, TEST, routing_threshold=0.0, exit_layer=2)
    assert set(full) == {"acc", "ppl", "shallow_ratio", "compute_cost"}
    assert routed["shallow_ratio"] == 1.0 and routed["compute_cost"] < 1.0
    hard_loader = create_hard_example_loader(sets["val"], VAL_ITEMS, batch_size=8, seed=None)
    stats = evaluate_on_hard_examples(model, hard_loader, len(VOCAB))
    assert math.isfinite(stats["ppl"]) and math.isfinite(stats["shallow_ppl"])
