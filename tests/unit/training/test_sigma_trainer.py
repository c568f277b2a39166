"""SigmaTrainer: phase timings, feature counters, metrics.jsonl, INSTANT applied, learning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from cascadelab.config import InstantParams, SigmaOptimizerParams, SigmaTrainParams
from cascadelab.data.batches import Batch
from cascadelab.models.sigma import FEATURES, SigmaConfig, SigmaForCausalLM
from cascadelab.training.optimizers.factory import build_optimizers
from cascadelab.training.schedules import wsd_factor
from cascadelab.training.sigma_loop import SigmaTrainer
from cascadelab.training.trainer import PHASES, TRAINER_FEATURES, PhaseTimer, mean_loss

VOCAB = 64


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def counting_batches(n: int, seed: int = 0, batch_size: int = 8, length: int = 12) -> list[Batch]:
    """Sequences that count up modulo the vocabulary (learnable); loss on the second half, last rows padded."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        start = torch.randint(3, VOCAB, (batch_size, 1), generator=generator)
        ids = 3 + (start - 3 + torch.arange(length)) % (VOCAB - 3)
        labels = ids.clone()
        labels[:, : length // 2] = -100
        ids[-1, -2:], labels[-1, -2:] = 0, -100  # right padding (pad id 0)
        batches.append({"input_ids": ids, "labels": labels})
    return batches


def tiny_sigma(**overrides: object) -> SigmaForCausalLM:
    torch.manual_seed(0)
    return SigmaForCausalLM(SigmaConfig.from_preset("tiny", vocab_size=VOCAB, **overrides))


def train_params(**overrides: object) -> SigmaTrainParams:
    base: dict[str, object] = {"max_steps": 12, "batch_size": 8, "warmup_steps": 2, "logging_steps": 4}
    return SigmaTrainParams.model_validate({**base, **overrides})


def fit(model: torch.nn.Module, out: Path, steps: int = 12, **kwargs: object) -> tuple[SigmaTrainer, list[dict]]:
    params = train_params(max_steps=steps)
    optimizers = build_optimizers(model, SigmaOptimizerParams(learning_rate=3e-3))
    trainer = SigmaTrainer(model, optimizers, params, out, **kwargs)  # type: ignore[arg-type]
    result = trainer.fit(counting_batches(steps))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history
    return trainer, lines


def test_metrics_jsonl_has_phase_timings_throughput_and_one_bottleneck(tmp_path: Path) -> None:
    _, rows = fit(tiny_sigma(), tmp_path)
    assert [row["step"] for row in rows] == [4, 8, 12]
    for row in rows:
        for phase in PHASES:
            assert row[f"phase_{phase}_s"] >= 0
        assert all(row[f"phase_{p}_s"] > 0 for p in ("data", "forward", "backward", "optimizer"))
        assert sum(row[f"perf_bottleneck_{p}"] for p in PHASES) == 1
        assert row["core_tokens_per_s"] > row["effective_tokens_per_s"] > 0
    assert rows[-1]["tokens"] == sum(int((b["input_ids"] != 0).sum()) for b in counting_batches(12))


def test_feature_counters_count_enabled_features_only(tmp_path: Path) -> None:
    _, rows = fit(tiny_sigma(), tmp_path)
    last = rows[-1]
    flags = {key.removeprefix("feature_").removesuffix("_enabled") for key in last if key.endswith("_enabled")}
    assert flags == set(FEATURES) | set(TRAINER_FEATURES)
    assert not any(last[f"feature_{name}_enabled"] for name in TRAINER_FEATURES)  # none configured here
    enabled = {name for name in FEATURES if last[f"feature_{name}_enabled"] == 1}
    assert enabled == {"mamba", "mla", "diff_attn", "moe", "instant"}  # triton needs CUDA; no BitLinear family
    for name in FEATURES:
        calls = last[f"feature_{name}_effective_calls"]
        assert calls > 0 if name in enabled else calls == 0, name
    assert last["feature_instant_effective_calls"] == 12  # one chunked loss per training forward
    assert rows[0]["feature_mamba_effective_calls"] == 4  # one Mamba block, 4 steps


def test_disabled_moe_and_diff_attention_stay_at_zero_and_bitlinear_counts(tmp_path: Path) -> None:
    model = tiny_sigma(use_diff_attn=False, moe_num_routed_experts=0, bitlinear_families=["mamba_out"])
    _, rows = fit(model, tmp_path, steps=4)
    last = rows[-1]
    assert last["feature_diff_attn_enabled"] == 0 and last["feature_diff_attn_effective_calls"] == 0
    assert last["feature_moe_enabled"] == 0 and last["feature_moe_effective_calls"] == 0
    assert last["feature_bitlinear_enabled"] == 1 and last["feature_bitlinear_effective_calls"] > 0
    assert "moe_load_max_over_mean" not in last


def test_instant_plan_is_applied_before_the_first_forward(tmp_path: Path) -> None:
    model = tiny_sigma()
    assert model.instant_plan is None
    fit(model, tmp_path, steps=4, instant=InstantParams(chunk_size=7, checkpoint_blocks=True))
    assert model.instant_plan is not None
    assert (model.instant_plan.chunk_size, model.instant_plan.checkpoint_blocks) == (7, True)


def test_block_checkpointing_gives_the_same_training_run(tmp_path: Path) -> None:
    _, plain = fit(tiny_sigma(), tmp_path / "a", steps=4, instant=InstantParams(checkpoint_blocks=False))
    _, ckpt = fit(tiny_sigma(), tmp_path / "b", steps=4, instant=InstantParams(checkpoint_blocks=True))
    assert ckpt[-1]["loss"] == pytest.approx(plain[-1]["loss"], rel=1e-5)
    assert ckpt[-1]["feature_mamba_effective_calls"] == plain[-1]["feature_mamba_effective_calls"]


def test_loss_falls_on_a_tiny_model(tmp_path: Path) -> None:
    model = tiny_sigma()
    val = counting_batches(2, seed=1)
    before = mean_loss(model, val)
    _, rows = fit(model, tmp_path, steps=40)
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"]
    assert mean_loss(model, val) < 0.7 * before


def test_plain_llama_goes_through_the_same_loop_without_model_feature_columns(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    _, rows = fit(LlamaForCausalLM(config), tmp_path, steps=8)
    features = {key for key in rows[-1] if key.startswith("feature_")}
    assert features == {f"feature_{n}_{k}" for n in TRAINER_FEATURES for k in ("enabled", "effective_calls")}
    assert rows[-1]["moe_aux_loss"] == 0
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_eval_and_checkpoint_callbacks_run_when_due_and_are_timed(tmp_path: Path) -> None:
    evals: list[int] = []
    saved: list[int] = []
    logged: list[int] = []

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        evals.append(len(evals) + 1)
        return {"val_loss": float(evals[-1])}

    model = tiny_sigma()
    trainer = SigmaTrainer(
        model,
        build_optimizers(model, SigmaOptimizerParams()),
        train_params(max_steps=10, eval_steps=4, logging_steps=5),
        tmp_path,
        eval_fn=evaluate,
        checkpoint_fn=lambda m, step: saved.append(step),
        log_fn=lambda row, step: logged.append(step),
    )
    rows = trainer.fit(counting_batches(10)).history
    assert evals == [1, 2, 3] and saved == [10] and logged == [5, 10]
    assert [row["val_loss"] for row in rows] == [1.0, 3.0]  # evals at steps 4, 8, 10: the window's last
    assert rows[-1]["phase_checkpoint_s"] > 0 and rows[0]["phase_checkpoint_s"] == 0
    assert rows[0]["phase_eval_s"] > 0


def test_muon_optimizer_pair_trains(tmp_path: Path) -> None:
    model = tiny_sigma()
    optimizers = build_optimizers(model, SigmaOptimizerParams(name="muon"))
    assert [type(o).__name__ for o in optimizers] == ["MuonFP32", "AdamW"]
    trainer = SigmaTrainer(model, optimizers, train_params(max_steps=8), tmp_path)
    rows = trainer.fit(counting_batches(8)).history
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_running_out_of_batches_names_the_step(tmp_path: Path) -> None:
    model = tiny_sigma()
    trainer = SigmaTrainer(model, build_optimizers(model, SigmaOptimizerParams()), train_params(), tmp_path)
    with pytest.raises(ValueError, match=r"^batches: ran out at step 4 of 12$"):
        trainer.fit(counting_batches(3))


def test_wsd_schedule_warms_up_holds_then_decays_to_zero() -> None:
    factors = [wsd_factor(step, 10, 2, 0.5) for step in range(10)]
    assert factors == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]


def test_phase_timer_rejects_unknown_phases_and_resets_windows() -> None:
    timer = PhaseTimer()
    with timer.phase("data"):
        pass
    assert timer.take()["data"] > 0 and timer.take()["data"] == 0
    assert timer.totals["data"] > 0
    with pytest.raises(ValueError, match="unknown phase 'bogus'"), timer.phase("bogus"):
        pass
