"""LEGO stage helpers: config from params, FLOP accounting, the one-pass trade-off curve, routed generation."""

import pytest
import torch

from cascadelab.config import LegoParams, TokenizerParams
from cascadelab.data.cell_batches import CellBatches, encode_records
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.eval.generation import greedy_outputs
from cascadelab.models.lego import LEGOConfig, LEGOTransformer, build_lego_model
from cascadelab.models.lego.calibration import exit_confidences, threshold_for_ratio
from cascadelab.models.lego.flops import full_depth_flops, routed_compute_cost, routed_flops
from cascadelab.pipeline.lego_common import causal_training_flops, forward_flops_per_token
from cascadelab.pipeline.lego_phase2 import choose_threshold, curve_thresholds, exit_curve, token_losses
from cascadelab.training.lego_trainer import Trainer, standard_stages

torch.set_num_threads(1)

RECORDS = [
    {"id": str(i), "task": "add" if i % 2 else "rev", "difficulty": 1, "prompt": f"{i}+{i % 7}=", "response": str(i)}
    for i in range(24)
]
PARAMS = LegoParams.model_validate(
    {
        "model": {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64},
        "phase1": {"learning_rate": 3e-3, "patience": 2},
        "phase2": {"learning_rate": 2e-3, "patience": 4},
    }
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([r["prompt"] + r["response"] for r in RECORDS], TokenizerParams(kind="char"))


@pytest.fixture(scope="module")
def grown(tokenizer):
    shallow = build_lego_model(PARAMS.to_config(tokenizer), seed=0)
    model = LEGOTransformer.extend_from(shallow, 4, routing_threshold=0.5, seed=1)
    with torch.no_grad():  # untrained but distinct upper layers, so shallow and deep predictions differ
        for p in model.model.layers[2:].parameters():
            p.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    return model.eval()


def test_config_is_the_shallow_architecture_and_the_section_keeps_the_training(tokenizer):
    shallow = PARAMS.to_config(tokenizer)
    assert (shallow.vocab_size, shallow.hidden_size, shallow.num_attention_heads) == (len(tokenizer), 32, 2)
    assert (shallow.depth, shallow.exit_layers, shallow.exit_layer) == (2, [2], 2)
    assert shallow.eos_token_id == tokenizer.eos_token_id and shallow.pad_token_id == tokenizer.pad_token_id
    assert not any(key.startswith("phase") or key == "hard_example_ratio" for key in shallow.to_dict())
    assert (PARAMS.phase1.learning_rate, PARAMS.phase1.patience) == (3e-3, 2)
    assert (PARAMS.phase2.learning_rate, PARAMS.phase2.patience, PARAMS.model.phase2_layers) == (2e-3, 4, 4)


def test_flop_accounting_on_a_hand_computed_tiny_case():
    # d=4, f=8, V=10, 1 lower + 1 upper layer: layer 2*(4*16 + 3*32) = 320, k/v 2*2*16 = 64, head 2*4*10 = 80
    config = LEGOConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_attention_heads=2, num_hidden_layers=2,
                        exit_layers=[1, 2])  # fmt: skip
    assert full_depth_flops(config) == 2 * 320 + 80
    assert routed_flops(config, 1, 1.0) == 320 + 80 + 64  # exited: lower layer, exit head, upper k/v projections
    assert routed_flops(config, 1, 0.0) == 320 + 80 + 64 + (320 - 64) + 80  # deep: the rest of the upper layer, head
    assert routed_compute_cost(config, 1, 0.5) == pytest.approx((464 + 0.5 * 336) / 720)
    assert causal_training_flops(5, 2, forward_flops_per_token(config)) == 3 * 5 * (2 * 320 + 80)


def test_one_pass_curve_equals_real_routed_evaluation(tokenizer, grown):
    batches = CellBatches(encode_records(RECORDS, tokenizer), 8, tokenizer.pad_token_id)
    confidences = exit_confidences(grown, batches, exit_layer=2)
    thresholds = [2.0, threshold_for_ratio(confidences, 0.3), threshold_for_ratio(confidences, 0.7), 0.0]
    rows = exit_curve(token_losses(grown, batches, 2), thresholds, grown.config, 2)
    assert [row["shallow_ratio"] for row in rows] == pytest.approx([0.0, 0.7, 0.3, 1.0], abs=0.02)
    for threshold, row in zip(thresholds, rows, strict=True):
        trainer = Trainer(standard_stages(4), grown.config.vocab_size)
        real = trainer.evaluate(grown, batches, routing_threshold=threshold, exit_layer=2)
        assert row["shallow_ratio"] == real["shallow_ratio"]
        assert row["compute_cost"] == pytest.approx(real["compute_cost"], abs=1e-12)
        assert row["acc"] == pytest.approx(real["acc"], abs=1e-12)
        assert row["ppl"] == pytest.approx(real["ppl"], rel=1e-5)


def test_threshold_is_chosen_on_the_val_curve_alone(tokenizer, grown):
    val = CellBatches(encode_records(RECORDS[:12], tokenizer), 8, tokenizer.pad_token_id)
    tokens = token_losses(grown, val, 2)
    curve = exit_curve(tokens, curve_thresholds(tokens["conf"], [0.25, 0.5, 0.75]), grown.config, 2)
    chosen = choose_threshold(curve, 1.02)
    assert chosen == min(r["threshold"] for r in curve if r["ppl"] <= 1.02 * curve[0]["ppl"])
    assert choose_threshold(curve, 1e9) == 0.0 and choose_threshold(curve, 1.0) <= 2.0
    # the test items do not enter: another split's curve at the same thresholds leaves the choice alone
    test = CellBatches(encode_records(RECORDS[12:], tokenizer), 8, tokenizer.pad_token_id)
    exit_curve(token_losses(grown, test, 2), [r["threshold"] for r in curve], grown.config, 2)
    assert choose_threshold(curve, 1.02) == chosen


def test_routed_greedy_outputs_at_threshold_zero_are_the_shallow_models(tokenizer, grown):
    prompts = [r["prompt"] for r in RECORDS[:6]]
    shallow = build_lego_model(PARAMS.to_config(tokenizer), seed=0)
    grown.config.routing_threshold = 0.0
    try:
        routed = greedy_outputs(grown, tokenizer, prompts, 4, batch_size=4, routed=True)
    finally:
        grown.config.routing_threshold = 0.5
    assert routed == greedy_outputs(shallow, tokenizer, prompts, 4, batch_size=4)
    assert greedy_outputs(grown, tokenizer, prompts, 4, batch_size=4) != routed  # full depth differs
