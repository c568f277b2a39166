"""Fractal NAS: variant configs, budgets per round, ranking by score, MLflow child runs, a real tiny trial."""

from __future__ import annotations

import math

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from cascadelab import tracking
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM
from cascadelab.training.sigma.fractal_nas import (
    AXES,
    NASSettings,
    run_nas,
    sigma_trial,
    variant_config,
    variant_overrides,
)

BASE = SigmaConfig.from_preset("small", vocab_size=64)


class _Cheap:
    """Deterministic train_and_eval: wider and more attention is better; compute ∝ hidden² · layers · steps."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, int], int]] = []

    def __call__(self, config: SigmaConfig, steps: int) -> tuple[float, float]:
        share = config.attention_ratio / (config.mamba_ratio + config.attention_ratio)
        self.calls.append(({"hidden": config.hidden_size, "layers": config.num_hidden_layers}, steps))
        loss = 3.0 - 0.3 * math.log2(config.hidden_size / 128) - 0.2 * share + 0.01 * config.num_hidden_layers
        return loss, float(config.hidden_size**2 * config.num_hidden_layers * steps)


def test_variant_overrides_follow_the_axes() -> None:
    assert variant_overrides(BASE, dict.fromkeys(AXES, 0.0)) == {}
    assert variant_overrides(BASE, {"width": 1.0}) == {
        "hidden_size": 256,
        "moe_intermediate_size": 128,
        "moe_shared_intermediate_size": 512,
    }
    assert variant_overrides(BASE, {"width": -0.5}) == {  # 128 / √2 = 90.5 -> 96 (multiple of 16)
        "hidden_size": 96,
        "moe_intermediate_size": 48,
        "moe_shared_intermediate_size": 192,
    }
    assert variant_overrides(BASE, {"depth": -1.0}) == {"num_hidden_layers": 2}
    assert variant_overrides(BASE, {"mix": 1.0}) == {"attention_ratio": 3}  # 4/8 -> 6/8: 1:3 (mamba_ratio kept)
    assert variant_overrides(BASE, {"mix": -0.5}) == {"mamba_ratio": 5, "attention_ratio": 3}  # 4/8 -> 3/8
    assert variant_overrides(BASE, {"experts": 0.5}) == {"moe_num_routed_experts": 6}  # round(4·√2)
    assert variant_overrides(BASE, {"experts": -1.0}) == {"moe_num_routed_experts": 2}
    assert variant_overrides(BASE, {"experts": -2.0}) == {"moe_num_routed_experts": 2}  # never below top_k
    config = variant_config(BASE, {"num_hidden_layers": 8, "mamba_ratio": 3, "attention_ratio": 1})
    assert config.block_types == ["mamba", "mamba", "mamba", "mla"] * 2
    assert BASE.num_hidden_layers == 4  # the base is never changed


def test_rounds_respect_their_budgets_and_the_winner_is_the_best_of_the_last_round() -> None:
    cheap = _Cheap()
    settings = NASSettings(coarse_trials=8, coarse_steps=10, budget_growth=3.0, rounds=2)
    result = run_nas(BASE, settings, cheap)
    rounds = [t.round for t in result.trials]
    assert rounds.count(0) == 8 and 1 <= rounds.count(1) <= 9
    assert [steps for _, steps in cheap.calls] == [10 if r == 0 else 30 for r in rounds]
    assert result.total_steps == sum(steps for _, steps in cheap.calls)
    assert result.effective_calls == len(cheap.calls) == len(result.trials)
    assert result.base.overrides == {} and result.base.index == 0 and result.base.score == result.base.val_loss
    for round_index, order in enumerate(result.ranking):
        scores = [result.trials[i].score for i in order]
        assert scores == sorted(scores) and {result.trials[i].round for i in order} == {round_index}
    assert result.winner.index == result.ranking[-1][0] and result.adopted is False
    best_coarse = result.trials[result.ranking[0][0]]
    assert result.trials[result.ranking[1][0]].score <= min(
        t.score for t in result.trials if t.round == 1 and t.point == best_coarse.point
    )
    assert result.trials[8].point == best_coarse.point  # the finer round is centred on the coarse winner
    trial = result.trials[3]
    per_step = trial.compute / trial.steps / (result.base.compute / result.base.steps)
    assert trial.score == pytest.approx(trial.val_loss + 0.05 * math.log2(per_step))


def test_the_compute_penalty_changes_the_winner() -> None:
    free = run_nas(BASE, NASSettings(axes=("width",), rounds=1, coarse_trials=3), _Cheap())
    assert free.winner.overrides["hidden_size"] == 256  # wider is better when compute is almost free
    costly = run_nas(BASE, NASSettings(axes=("width",), rounds=1, coarse_trials=3, compute_penalty=1.0), _Cheap())
    assert costly.winner.overrides["hidden_size"] == 64  # 0.3 nats per doubling of width < 2 × 1.0 penalty


def test_same_seed_same_search() -> None:
    first = run_nas(BASE, NASSettings(seed=4), _Cheap()).to_dict()
    assert first == run_nas(BASE, NASSettings(seed=4), _Cheap()).to_dict()
    assert first != run_nas(BASE, NASSettings(seed=5), _Cheap()).to_dict()


def test_each_trial_is_an_mlflow_child_run_of_the_stage(tmp_path, monkeypatch) -> None:
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    for var in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", tracking.PIPELINE_ID_ENV):
        monkeypatch.delenv(var, raising=False)
    try:
        with tracking.stage_run("sigma_rl", {"seed": 1}, experiment="nas") as parent:
            result = run_nas(BASE, NASSettings(rounds=1, coarse_trials=3), _Cheap(), tracking_parent=parent)
            assert mlflow.active_run().info.run_id == parent.run_id  # children never replace the stage run
        client = MlflowClient(tracking.tracking_uri())
        children = client.search_runs(
            [parent.experiment_id], filter_string=f"tags.`{tracking.TAG_PARENT}` = '{parent.run_id}'"
        )
        assert sorted(run.info.run_id for run in children) == sorted(t.run_id for t in result.trials if t.run_id)
        by_id = {run.info.run_id: run for run in children}
        for trial in result.trials:
            run = by_id[trial.run_id]
            assert run.data.metrics["val_loss"] == trial.val_loss and run.data.metrics["score"] == trial.score
            assert run.data.params["steps"] == "30"
            assert run.data.tags[tracking.TAG_ROLE] == "nas_trial" and run.data.tags[tracking.TAG_STAGE] == "sigma_rl"
            assert run.info.status == "FINISHED"
        tags = client.get_run(parent.run_id).data.tags
        assert tags["fractal_nas.adopted"] == "false" and tags["fractal_nas.winner"] == repr(result.winner.overrides)
    finally:
        mlflow.set_tracking_uri(None)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"fractal_nas\.axes: unknown or empty \['heads'\]"):
        NASSettings(axes=("width", "heads"))
    with pytest.raises(ValueError, match=r"fractal_nas\.budget_growth: must be >= 1, got 0.5"):
        NASSettings(budget_growth=0.5)


def test_every_axis_variant_of_the_tiny_config_builds_and_the_corners_run() -> None:
    base = SigmaConfig.from_preset("tiny")
    points = [{axis: offset} for axis in AXES for offset in (-1.0, -0.5, 0.5, 1.0)]
    corners = [dict.fromkeys(AXES, -1.0), dict.fromkeys(AXES, 1.0)]
    for point in points + corners:
        model = SigmaForCausalLM(variant_config(base, variant_overrides(base, point))).eval()
        assert model.config.vocab_size == 64
    ids = torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    for point in corners:
        model = SigmaForCausalLM(variant_config(base, variant_overrides(base, point))).eval()
        with torch.no_grad():
            assert model(input_ids=ids).logits.shape == (2, 8, 64)


def test_a_real_tiny_sigma_search_trains_its_trials() -> None:
    base = SigmaConfig.from_preset("tiny")
    gen = torch.Generator().manual_seed(0)
    pattern = torch.randint(3, 64, (1, 6), generator=gen).repeat(4, 2)  # a repeated sequence: learnable in a few steps
    batch = {"input_ids": pattern, "labels": pattern.clone()}
    trial = sigma_trial([batch], [batch], learning_rate=1e-2, seed=0)
    settings = NASSettings(axes=("depth",), rounds=1, coarse_trials=2, coarse_steps=2)
    result = run_nas(base, settings, trial)
    assert len(result.trials) == 2 and {t.steps for t in result.trials} == {2}
    assert all(t.val_loss < math.log(64) - 0.1 for t in result.trials)  # below the uniform guess: it trained
    shallow, deep = sorted(result.trials, key=lambda t: t.compute)
    assert deep.compute > shallow.compute > 0  # compute follows the variant's size


def test_a_trial_whose_loss_diverges_scores_infinity_instead_of_ending_the_search(monkeypatch) -> None:
    from cascadelab.training.sigma import fractal_nas

    def nan_loss(model, batch):
        loss = model(**batch).loss * float("nan")
        return loss, {"tokens": batch["input_ids"].numel()}

    monkeypatch.setattr(fractal_nas, "_trial_loss", nan_loss)
    pattern = torch.randint(3, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": pattern, "labels": pattern.clone()}
    val_loss, compute = sigma_trial([batch], [batch], seed=0)(SigmaConfig.from_preset("tiny"), 2)
    assert val_loss == math.inf and compute > 0
