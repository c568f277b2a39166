"""LMTrainer with a toy model and its own compute_loss: learning, early stopping, schedules, exact resume."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from cascadelab.data.curriculum import LoopCurriculum
from cascadelab.training.callbacks import CurriculumSwitch, EarlyStopping, TrainerCallback, clone_state
from cascadelab.training.checkpoint_folders import CheckpointError
from cascadelab.training.run_checkpoints import CheckpointStore
from cascadelab.training.schedules import (
    GroupRateSchedule,
    constant_schedule,
    decay_factor,
    warmup_factor,
    wsd_factor,
    wsd_schedule,
)
from cascadelab.training.trainer import LMTrainer, StepSettings

Batch = dict[str, torch.Tensor]


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))


def regression_batches(n: int, seed: int = 0) -> list[Batch]:
    """Targets a fixed linear function of the inputs (learnable)."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    batches = []
    for _ in range(n):
        x = torch.randn(8, 4, generator=generator)
        batches.append({"x": x, "y": x @ weights})
    return batches


def mse_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return loss, {"tokens": float(batch["x"].shape[0])}


def trainer_for(model: nn.Module, steps: int, **kwargs: object) -> LMTrainer:
    settings = kwargs.pop("settings", None) or StepSettings(max_steps=steps, max_grad_norm=1.0, logging_steps=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return LMTrainer(model, [optimizer], settings, None, compute_loss=mse_loss, **kwargs)  # type: ignore[arg-type]


def test_loss_falls_with_a_custom_compute_loss() -> None:
    result = trainer_for(toy_model(), 60).fit(regression_batches(60))
    losses = [row["loss"] for row in result.history]
    assert [row["step"] for row in result.history] == [float(s) for s in range(5, 61, 5)]
    assert losses[-1] < 0.5 * losses[0]
    assert result.train_tokens == 60 * 8 and result.metrics_file is None and result.steps == 60


def test_schedule_values_are_exact() -> None:
    assert [wsd_factor(step, 10, 2, 0.5) for step in range(10)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    assert constant_schedule(0) == constant_schedule(10**9) == 1.0
    assert [decay_factor(step, 10, 0.3) for step in (0, 6, 7, 8, 9)] == [1.0, 1.0, 1.0, 2 / 3, 1 / 3]
    settings = StepSettings(max_steps=10, max_grad_norm=1.0, logging_steps=1, warmup_steps=2, decay_fraction=0.5)
    seen: list[float] = []

    class LearningRates(TrainerCallback):
        def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer_for(toy_model(), 10, settings=settings, callbacks=[LearningRates()]).fit(regression_batches(10))
    schedule = wsd_schedule(10, 2, 0.5)
    assert seen == [1e-2 * schedule(step) for step in range(1, 11)]  # the rate of the next step


def test_early_stopping_stops_and_restores_the_best_state() -> None:
    model = toy_model()
    scripted = iter([3.0, 2.0, 2.5, 4.0, 1.0])
    states: list[dict[str, torch.Tensor]] = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        states.append(clone_state(m))
        return {"val_loss": next(scripted)}

    stopping = EarlyStopping(patience=2)
    settings = StepSettings(max_steps=50, max_grad_norm=1.0, logging_steps=5, eval_steps=2)
    result = trainer_for(model, 50, settings=settings, eval_fn=evaluate, callbacks=[stopping]).fit(
        regression_batches(50)
    )
    assert stopping.stopped_early and result.steps == 8  # evaluations at 2, 4, 6, 8: two without improvement
    assert stopping.best_step == 4 and stopping.best_value == 2.0
    assert result.history[-1]["step"] == 8.0 and result.history[-1]["val_loss"] == 4.0  # the stop step's row
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, states[1][key], atol=0, rtol=0)


def test_early_stopping_counts_only_while_counting() -> None:
    stopping = EarlyStopping(patience=1, counting=False)
    model = toy_model()
    trainer = trainer_for(model, 1)
    stopping.on_train_begin(trainer)
    for value in (1.0, 2.0, 3.0):
        stopping.on_evaluate(trainer, 1, {"val_loss": value})
    assert not trainer.should_stop and stopping.bad_evals == 0
    stopping.restart()
    stopping.on_evaluate(trainer, 2, {"val_loss": 5.0})  # a new objective: the first value is the best
    stopping.on_evaluate(trainer, 3, {"val_loss": 6.0})
    assert trainer.should_stop and stopping.best_value == 5.0


def test_resume_continues_to_identical_weights(tmp_path: Path) -> None:
    settings = StepSettings(max_steps=12, max_grad_norm=1.0, logging_steps=2, eval_steps=3, checkpoint_steps=4)

    def run(batches: list[Batch], store: CheckpointStore | None) -> tuple[nn.Module, EarlyStopping]:
        model = toy_model()
        torch.manual_seed(7)  # dropout draws: restored from the checkpoint on resume
        stopping = EarlyStopping(patience=100)

        @torch.no_grad()
        def evaluate(m: nn.Module) -> dict[str, float]:
            return {"val_loss": float(mse_loss(m, regression_batches(1, seed=9)[0])[0])}

        trainer = trainer_for(model, 12, settings=settings, eval_fn=evaluate, callbacks=[stopping], checkpoints=store)
        trainer.fit(batches)
        return model, stopping

    straight, straight_stopping = run(regression_batches(12), None)
    store = CheckpointStore(tmp_path / "checkpoints")
    with pytest.raises(ValueError, match=r"^batches: ran out at step 10 of 12$"):
        run(regression_batches(9), store)  # interrupted after the checkpoint of step 8
    assert store.steps() == [4, 8]
    resumed, resumed_stopping = run(regression_batches(12), store)
    assert resumed_stopping.best_step == straight_stopping.best_step
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, atol=0, rtol=0)


def _interrupted_store(tmp_path: Path, callbacks: list[TrainerCallback]) -> CheckpointStore:
    """A store holding the checkpoint of step 4 of a 12-step run that ran out of data at step 5."""
    settings = StepSettings(max_steps=12, max_grad_norm=1.0, logging_steps=2, checkpoint_steps=4)
    store = CheckpointStore(tmp_path / "checkpoints")
    with pytest.raises(ValueError, match=r"^batches: ran out at step 5 of 12$"):
        trainer_for(toy_model(), 12, settings=settings, checkpoints=store, callbacks=callbacks).fit(
            regression_batches(4)
        )
    assert store.steps() == [4]
    return store


def test_a_checkpoint_without_its_data_position_is_refused(tmp_path: Path) -> None:
    store = _interrupted_store(tmp_path, [])
    payload = store.load(4)
    del payload["data"]  # e.g. written by an older version
    store.save(4, payload)  # a whole checkpoint (its manifest matches), only the state is missing
    settings = StepSettings(max_steps=12, max_grad_norm=1.0, logging_steps=2, checkpoint_steps=4)
    with pytest.raises(CheckpointError) as caught:
        trainer_for(toy_model(), 12, settings=settings, checkpoints=store).fit(regression_batches(12))
    assert str(caught.value) == (
        f"checkpoint {store.path(4)}: no data state, so it cannot resume this run exactly; "
        f"delete {store.folder} to train from step 0"
    )


def test_a_checkpoint_without_the_curriculum_switch_is_refused(tmp_path: Path) -> None:
    tasks = ["add"] * 8 + ["sub"] * 8
    curriculum = LoopCurriculum(tasks, {"add": 1, "sub": 1}, ["add"], 0.1, 6, 12, 8, seed=0)
    switch = CurriculumSwitch(curriculum, EarlyStopping(patience=100))
    store = _interrupted_store(tmp_path, [switch])
    payload = store.load(4)
    assert payload["callbacks"][0] == {"mixing": False, "switch_step": None}
    payload["callbacks"][0] = {"mixing": False}  # the state of an older CurriculumSwitch
    store.save(4, payload)
    settings = StepSettings(max_steps=12, max_grad_norm=1.0, logging_steps=2, checkpoint_steps=4)
    with pytest.raises(CheckpointError, match=r": no switch_step state for CurriculumSwitch, so it cannot resume"):
        trainer_for(toy_model(), 12, settings=settings, checkpoints=store, callbacks=[switch]).fit(
            regression_batches(12)
        )


def test_until_data_ends_stops_at_the_last_batch() -> None:
    trainer = trainer_for(toy_model(), 20, until_data_ends=True)
    result = trainer.fit(regression_batches(7))
    assert result.steps == 7 and trainer.step == 7 and result.train_tokens == 7 * 8
    with pytest.raises(ValueError, match=r"^batches: ran out at step 8 of 20$"):
        trainer_for(toy_model(), 20).fit(regression_batches(7))


def test_no_max_grad_norm_means_plain_unclipped_steps() -> None:
    settings = StepSettings(max_steps=6, max_grad_norm=None, logging_steps=3)
    model = toy_model()
    torch.manual_seed(3)
    rows = trainer_for(model, 6, settings=settings, schedule=lambda step: 1.0).fit(regression_batches(6)).history
    assert [row["grad_norm"] for row in rows] == [0.0, 0.0]  # not measured
    reference = toy_model()
    torch.manual_seed(3)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    for batch in regression_batches(6):
        mse_loss(reference, batch)[0].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0, rtol=0)


def test_group_rate_schedule_scales_each_group_and_continues_from_start_step() -> None:
    model = toy_model()
    params = list(model.parameters())
    groups = [{"params": params[:1], "lr_mult": 1.0}, {"params": params[1:], "lr_mult": 4.0}]
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    rate = wsd_schedule(10, 3, 0.5)
    schedule = GroupRateSchedule(optimizer, rate, start_step=2)
    assert [g["lr"] for g in optimizer.param_groups] == [rate(2), rate(2) * 4.0] and schedule.position == 2
    optimizer.step()
    schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == [rate(3), rate(3) * 4.0]
    optimizer.param_groups[1]["lr_mult"] = 1.0
    schedule.seek(7)
    assert [g["lr"] for g in optimizer.param_groups] == [rate(7), rate(7)] and schedule.position == 7
    assert "rate" not in schedule.state_dict() and schedule.state_dict()["last_epoch"] == 5


def test_a_run_continued_from_start_step_matches_one_straight_run() -> None:
    rate = wsd_schedule(12, 4, 0.5)
    batches = regression_batches(12)

    def run(parts: list[tuple[int, int]]) -> tuple[nn.Module, list[int]]:
        model = toy_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
        schedule = GroupRateSchedule(optimizer, rate)
        steps: list[int] = []

        class Steps(TrainerCallback):
            def on_step_end(self, trainer: LMTrainer, step: int, loss: float) -> None:
                steps.append(step)

        for start, stop in parts:
            settings = StepSettings(max_steps=stop, max_grad_norm=1.0, logging_steps=5)
            trainer = LMTrainer(
                model,
                [optimizer],
                settings,
                None,
                compute_loss=mse_loss,  # type: ignore[arg-type]
                schedulers=[schedule],
                callbacks=[Steps()],
                start_step=start,
            )
            result = trainer.fit(batches[start:stop])
            assert result.steps == stop and [row["step"] for row in result.history][-1] == float(stop)
        return model, steps

    straight, straight_steps = run([(0, 12)])
    cycled, cycled_steps = run([(0, 5), (5, 12)])
    assert straight_steps == cycled_steps == list(range(1, 13))
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(cycled.state_dict()[key], value, atol=0, rtol=0)


def test_an_update_between_steps_is_clipped_and_guarded_and_leaves_the_schedule() -> None:
    from cascadelab.config import SigmaFeatureParams

    settings = StepSettings(max_steps=8, max_grad_norm=0.5, logging_steps=2, decay_fraction=0.5)
    model = toy_model()
    features = SigmaFeatureParams(integrity_guards=True)
    trainer = trainer_for(model, 8, settings=settings, features=features, until_data_ends=True)
    trainer.fit(regression_batches(4))
    rate = trainer.optimizers[0].param_groups[0]["lr"]
    assert rate == 1e-2  # the next step's rate would be 0.75e-2
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.update_between_steps(mse_loss(model, regression_batches(1)[0])[0] * float("nan")) == "skip"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
    assert all(p.grad is None for p in model.parameters())
    assert trainer.guards is not None and trainer.guards.counts["nonfinite_skips"] == 1
    batch = regression_batches(1, seed=5)[0]
    clone = toy_model()
    clone.load_state_dict(reference)
    optimizer = torch.optim.AdamW(clone.parameters(), lr=1e-2)
    optimizer.load_state_dict(copy.deepcopy(trainer.optimizers[0].state_dict()))  # its own moment tensors
    model.eval()  # no dropout: the two forwards must match
    clone.eval()
    assert trainer.update_between_steps(mse_loss(model, batch)[0]) == "step"
    mse_loss(clone, batch)[0].backward()
    nn.utils.clip_grad_norm_(clone.parameters(), 0.5)
    optimizer.step()
    for key, value in clone.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0, rtol=0)
    assert trainer.optimizers[0].param_groups[0]["lr"] == rate  # the schedule did not advance
    assert trainer.guards.counts["checks"] == 6
