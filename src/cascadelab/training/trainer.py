"""The LM training loop: one loop for every model family, every phase of every step timed, feature counters logged.

A model family supplies ``compute_loss(model, batch) -> (loss, stats)`` (default: a Hugging Face causal LM's
loss, see :func:`causal_lm_loss`), an evaluation and callbacks (:mod:`cascadelab.training.callbacks`: early
stopping, the curriculum); the schedule is a multiplier of the peak rate (:mod:`cascadelab.training.schedules`,
warmup-stable-decay by default).

Each step runs the phases ``data`` (next batch), ``forward``, ``backward`` and ``optimizer`` (gradient
clipping, integrity guards, optimizer and schedule step, C3O credit); ``rl`` and ``verify`` (hooks
that the RL and verifier subsystems register; 0 s without them); ``eval`` (``eval_fn``, every
``eval_steps``) and ``checkpoint`` (a callback, at the end) run when due. Every ``logging_steps``
the loop logs one row, writes it to ``<out_dir>/metrics.jsonl`` (with an ``out_dir``) and passes it
to ``log_fn`` (the stage sends them to MLflow):

- ``loss`` (mean next-token cross-entropy of the window, without the MoE balance term), ``moe_aux_loss``,
  ``learning_rate``, ``grad_norm``, ``tokens`` (non-padding, cumulative), ``elapsed_s``;
- ``phase_<name>_s``: seconds spent in each phase during the window, ``perf_bottleneck_<name>``: 1 for
  the phase with the largest share, else 0;
- ``core_tokens_per_s``: window tokens over forward + backward + optimizer seconds;
  ``effective_tokens_per_s``: window tokens over the window's wall time;
- for every feature of the model (``model.enabled_features()`` / ``model.feature_calls``, the seed's
  rule that a feature counts only where a counter shows it ran) and of the trainer (``c3o_credit``:
  credit updates; ``integrity_guards``: updates checked, steps and updates between steps; ``prefetch``:
  batches delivered by the prefetch thread): ``feature_<name>_enabled`` and
  ``feature_<name>_effective_calls`` (cumulative executions, counted where the feature runs);
- ``guard_nonfinite_skips``, ``guard_restores``, ``guard_spike_rollbacks`` (cumulative) with the guards on,
  ``c3o_credit_<group>`` with the credit on, ``data_fallbacks`` when the batches come from a
  :class:`~cascadelab.training.batch_pipeline.FallbackSource`.

With ``features.crash_report`` an unhandled exception writes ``<out_dir>/errors/<UTC>.json`` before it
propagates.

SigmaLLM and the Llama baseline go through the same code, batches and schedule
(:class:`~cascadelab.training.sigma_loop.SigmaTrainer` applies SIGMA's INSTANT plan first); the hybrid
RNN-Transformer brings its seq2seq loss, validation and early stopping; LEGO's upper block (phase 2), the draft
heads and the fractal-NAS trials bring their losses; ACOC runs each growth cycle as one run that continues the
step count (`start_step`), with per-group rates (`GroupRateSchedule`) after every rebuild of its optimizer. A
subsystem's own batch between two steps (sigma_rl's self-improver) goes through
:meth:`LMTrainer.update_between_steps`: the same clipping and guards.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from cascadelab.config import SigmaDataParams, SigmaFeatureParams, SigmaGuardParams
from cascadelab.data.batches import Batch
from cascadelab.data.mixed_batches import count_tokens
from cascadelab.training.batch_pipeline import Prefetcher
from cascadelab.training.callbacks import TrainerCallback
from cascadelab.training.checkpoint_folders import refuse
from cascadelab.training.crash_report import write_crash_report
from cascadelab.training.data_parallel import DataParallel
from cascadelab.training.integrity_guards import GoodState, IntegrityGuards, scale_learning_rate
from cascadelab.training.optimizers.factory import credit_optimizers
from cascadelab.training.run_checkpoints import CheckpointStore, rng_state, set_rng_state
from cascadelab.training.run_length import RunLength
from cascadelab.training.schedules import Schedule, lambda_schedulers, wsd_schedule

PHASES: tuple[str, ...] = ("data", "forward", "backward", "optimizer", "rl", "verify", "eval", "checkpoint")
CORE_PHASES: tuple[str, ...] = ("forward", "backward", "optimizer")
HOOK_PHASES: tuple[str, ...] = ("rl", "verify")
TRAINER_FEATURES: tuple[str, ...] = ("c3o_credit", "integrity_guards", "prefetch")
# What a checkpoint must hold to continue a run exactly; one without any of them is refused.
RESUME_KEYS: tuple[str, ...] = (
    "step",
    "model",
    "optimizers",
    "schedulers",
    "rng",
    "progress",
    "data",
    "trainer_calls",
    "model_calls",
    "pending",
    "guards",
    "good_state",
    "plugins",
    "callbacks",
)

LogFn = Callable[[dict[str, float], int], None]
EvalFn = Callable[[nn.Module], dict[str, float]]
CheckpointFn = Callable[[nn.Module, int], None]
StepHook = Callable[[Any, int], None]  # (the trainer, a family's subclass included; step)
LossStats = dict[str, float]
ComputeLoss = Callable[[Any, Any], tuple[torch.Tensor, LossStats]]  # (model, batch) of the family


class LoopParams(RunLength, Protocol):
    """The loop's settings, as a params section carries them (e.g. ``SigmaTrainParams``)."""

    @property
    def max_grad_norm(self) -> float | None:
        """Max global gradient norm (None: no clipping, and `grad_norm` is not measured: it logs 0)."""
        ...

    @property
    def eval_steps(self) -> int:
        """Steps between evaluations (0: never)."""
        ...

    @property
    def checkpoint_steps(self) -> int:
        """Steps between resumable checkpoints (0: none)."""
        ...

    @property
    def warmup_steps(self) -> int:
        """Linear warm-up steps of the default WSD schedule."""
        ...

    @property
    def decay_fraction(self) -> float:
        """Final share of `max_steps` decayed linearly to 0 by the default WSD schedule."""
        ...


@dataclass(frozen=True)
class StepSettings:
    """`LoopParams` for a family whose settings name them otherwise."""

    max_steps: int
    max_grad_norm: float | None
    logging_steps: int
    eval_steps: int = 0
    checkpoint_steps: int = 0
    warmup_steps: int = 0
    decay_fraction: float = 0.0


class TrainerPlugin(Protocol):
    """A subsystem riding on the loop (e.g. RL): its feature counters, row columns and resumable state."""

    def features(self) -> tuple[dict[str, bool], dict[str, int]]:
        """(enabled, cumulative effective calls) per feature name."""
        ...

    def row(self) -> dict[str, float]:
        """Extra columns of the next logged row (called once per row)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue this subsystem exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...


def causal_lm_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, LossStats]:
    """A Hugging Face causal LM's loss on `batch`; stats: its MoE balance term (`aux_loss`) and token counts."""
    config = getattr(model, "config", None)
    tokens, targets = count_tokens(batch, int(getattr(config, "pad_token_id", None) or 0))
    aux_coef = float(getattr(config, "moe_aux_loss_coef", 0.0) or 0.0)
    out = model(**batch)
    aux = getattr(out, "aux_loss", None)
    aux_term = aux_coef * float(aux.detach()) if aux is not None and aux_coef > 0 else 0.0
    return out.loss, {"aux_loss": aux_term, "tokens": tokens, "target_tokens": targets}


def feature_snapshot(
    model: nn.Module, trainer_enabled: dict[str, bool] | None = None, trainer_calls: dict[str, int] | None = None
) -> dict[str, float]:
    """`feature_<name>_enabled` and cumulative `feature_<name>_effective_calls` of the model and the trainer."""
    report = getattr(model, "enabled_features", None)
    enabled: dict[str, bool] = {**(report() if callable(report) else {}), **(trainer_enabled or {})}
    calls: dict[str, int] = {**dict(getattr(model, "feature_calls", {})), **(trainer_calls or {})}
    out: dict[str, float] = {}
    for name in sorted(set(enabled) | set(calls)):
        out[f"feature_{name}_enabled"] = float(bool(enabled.get(name, False)))
        out[f"feature_{name}_effective_calls"] = float(calls.get(name, 0))
    return out


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Token-weighted mean next-token cross-entropy of `model` over `batches` (eval mode, labels -100 ignored)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def pending_updates(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per-module state that lives outside the state_dict: the MoE bias update deferred to the next forward."""
    return {
        name: module._pending_load
        for name, module in model.named_modules()
        if isinstance(getattr(module, "_pending_load", None), torch.Tensor)
    }


class PhaseTimer:
    """Wall seconds per phase, accumulated over a logging window."""

    def __init__(self, phases: Iterable[str] = PHASES) -> None:
        self.seconds = dict.fromkeys(phases, 0.0)
        self.totals = dict.fromkeys(phases, 0.0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed block as phase `name`."""
        if name not in self.seconds:
            raise ValueError(f"unknown phase {name!r}; known: {', '.join(self.seconds)}")
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] += elapsed
            self.totals[name] += elapsed

    def take(self) -> dict[str, float]:
        """The window's seconds per phase; starts a new window."""
        window = dict(self.seconds)
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        return window


@dataclass
class _Window:
    """Sums over the steps of one logging window."""

    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    good: int = 0
    loss: float = 0.0
    aux: float = 0.0
    grad_norm: float = 0.0
    tokens: int = 0


@dataclass
class _Progress:
    """Where a run stands after `step` steps: its logged rows, token counts, wall time and phase seconds so far."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    tokens: int = 0
    targets: int = 0
    elapsed: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def _metrics_sink(path: Path | None) -> Iterator[Callable[[dict[str, float]], None]]:
    """A writer of rows to `path` as JSON lines, flushed per row (None: rows are not written)."""
    if path is None:
        yield lambda row: None
        return
    with path.open("w", encoding="utf-8") as handle:

        def write(row: dict[str, float]) -> None:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
            handle.flush()

        yield write


@dataclass
class TrainResult:
    """What a finished run reports: the logged rows (the lines of metrics.jsonl) and totals."""

    history: list[dict[str, float]]
    metrics_file: Path | None
    steps: int
    train_seconds: float
    train_tokens: int
    target_tokens: int
    final_loss: float
    phase_seconds: dict[str, float]
    features: dict[str, float]

    @property
    def metrics_path(self) -> Path:
        """The metrics.jsonl the run wrote (fails for a run without an `out_dir`)."""
        if self.metrics_file is None:
            raise ValueError("metrics_path: this run wrote no metrics.jsonl (the trainer had no out_dir)")
        return self.metrics_file

    @property
    def tokens_per_second(self) -> float:
        """Non-padding training tokens per second of the whole loop."""
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0


class LMTrainer:
    """Trains one LM for `train.max_steps` steps on the given batches, timing and logging each phase.

    `compute_loss(model, batch)` gives the loss to back-propagate and its stats (`aux_loss`: a part left out of
    the logged loss; `tokens`, `target_tokens`: counts); `schedule(step)` multiplies each optimizer's initial
    rates (default: WSD from `train.warmup_steps` and `train.decay_fraction`), unless `schedulers` (stepped
    after every optimizer step, e.g. a `GroupRateSchedule` for per-group rates) take its place.
    A run that continues another's step count (ACOC's cycles) starts after `start_step`: its steps are numbered
    `start_step + 1` to `train.max_steps`.
    `eval_fn(model)` runs every `train.eval_steps` steps and after the last (0: never); its figures go to the
    callbacks' `on_evaluate` and join the next log line; `checkpoint_fn(model, step)` runs after the last step.
    A callback that sets `should_stop` ends the run after the current step (its row is still logged).
    With `out_dir` None, no metrics.jsonl is written (and `features.crash_report` needs an `out_dir`).
    With `until_data_ends`, running out of batches ends the run (the last step is then the last batch's);
    otherwise it is an error.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        train: LoopParams,
        out_dir: Path | None,
        log_fn: LogFn | None = None,
        eval_fn: EvalFn | None = None,
        checkpoint_fn: CheckpointFn | None = None,
        features: SigmaFeatureParams | None = None,
        guards: SigmaGuardParams | None = None,
        data: SigmaDataParams | None = None,
        credit_interval: int = 50,
        settings: dict[str, object] | None = None,
        checkpoints: CheckpointStore | None = None,
        compute_loss: ComputeLoss = causal_lm_loss,
        schedule: Schedule | None = None,
        callbacks: Iterable[TrainerCallback] = (),
        until_data_ends: bool = False,
        schedulers: Sequence[LRScheduler] | None = None,
        start_step: int = 0,
    ) -> None:
        if not optimizers:
            raise ValueError("optimizers: need at least one optimizer")
        self.model = model
        self.optimizers = optimizers
        self.train = train
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.compute_loss = compute_loss
        self.callbacks = list(callbacks)
        self.until_data_ends = until_data_ends
        self.should_stop = False
        self.window = _Window()
        self.progress = _Progress()
        self.log_fn = log_fn
        self.eval_fn = eval_fn
        self.checkpoint_fn = checkpoint_fn
        self.timer = PhaseTimer()
        self.features = features or SigmaFeatureParams()
        self.guard_params = guards or SigmaGuardParams()
        self.data_params = data or SigmaDataParams()
        self.credit_interval = credit_interval
        self.settings = settings or {}
        self.hooks: dict[str, list[StepHook]] = {name: [] for name in HOOK_PHASES}
        self.plugins: dict[str, TrainerPlugin] = {}
        self.feature_calls = dict.fromkeys(TRAINER_FEATURES, 0)
        self.credit_optimizers = credit_optimizers(optimizers)
        if self.features.c3o_credit and not self.credit_optimizers:
            raise ValueError("features.c3o_credit: true needs a C3O optimizer among the optimizers")
        g = self.guard_params
        self.guards = (
            IntegrityGuards(g.nonfinite_restore_after, g.spike_factor, g.spike_window)
            if self.features.integrity_guards
            else None
        )
        self.good_state = GoodState()
        self.prefetcher: Prefetcher[Batch] | None = None
        self.last_row: dict[str, float] = {}
        self.start_step = start_step
        self.step = start_step
        self.checkpoints = checkpoints
        self.prefetched_before = 0  # batches the prefetch thread delivered before a resume
        self.batches_consumed = 0  # batches the checkpointed steps drew (skipped on resume)
        self.resumed_from = 0
        self.batch_source: Iterable[Any] | None = None
        self.schedulers: list[LRScheduler] = list(schedulers) if schedulers is not None else []
        # Under torchrun every rank trains its rows of each batch; rank 0 alone writes files and logs.
        self.device = next(model.parameters()).device
        self.parallel = DataParallel.from_environment(self.device)
        self.is_main = self.parallel is None or self.parallel.is_main
        if schedulers is None:
            if schedule is None:
                schedule = wsd_schedule(train.max_steps, train.warmup_steps, train.decay_fraction)
            self.schedulers += lambda_schedulers(optimizers, schedule)

    def prepare_model(self) -> None:
        """Get the model ready for its first training forward (nothing here; a family's subclass may override)."""

    @property
    def tokens_seen(self) -> int:
        """Tokens the run has trained on so far (the `tokens` stat of `compute_loss`, summed)."""
        return self.progress.tokens

    def window_loss(self, step: int) -> float | None:
        """Mean loss of the logging window that ends at `step` (None unless `step` ends one); call before the row."""
        if step % self.train.logging_steps or not self.window.good:
            return None
        return self.window.loss / self.window.good

    def enabled_trainer_features(self) -> dict[str, bool]:
        """Which trainer features this run has on."""
        return {name: bool(getattr(self.features, name)) for name in TRAINER_FEATURES}

    def add_hook(self, phase: str, hook: StepHook) -> None:
        """Run `hook(trainer, step)` every step inside phase `phase` ("rl" or "verify")."""
        if phase not in self.hooks:
            raise ValueError(f"hooks run in phases {', '.join(HOOK_PHASES)}, not {phase!r}")
        self.hooks[phase].append(hook)

    def add_plugin(self, name: str, plugin: TrainerPlugin) -> None:
        """Log `plugin`'s features and columns in every row and keep its state in every checkpoint."""
        self.plugins[name] = plugin

    def update_between_steps(self, loss: torch.Tensor) -> str:
        """One update from `loss` between two steps, back-propagated, clipped and judged by the guards like a step's.

        For a subsystem's own batch (e.g. sigma_rl's self-improver): the schedule does not advance and the step count
        does not change. Returns the guards' verdict ("step" without guards).
        """
        loss.backward()
        _, verdict = self._update(float(loss.detach()))
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        return verdict

    def _optimizer_step(self, step: int, loss: float) -> tuple[float, str]:
        """Clip, let the guards judge, step (or skip / restore / roll back), advance the schedule."""
        grad_norm, verdict = self._update(loss)
        for scheduler in self.schedulers:
            scheduler.step()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.guards is not None and verdict == "step" and step % self.guard_params.snapshot_steps == 0:
            self.good_state.take(step, self.model, self.optimizers, self.schedulers)
        if self.features.c3o_credit and step % self.credit_interval == 0:
            for optimizer in self.credit_optimizers:
                optimizer.update_credit()
                self.feature_calls["c3o_credit"] += 1
        return grad_norm, verdict

    def _update(self, loss: float) -> tuple[float, str]:
        """Clip the gradients, let the guards judge `loss` and the norm, then step (or skip / restore / roll back)."""
        max_norm = self.train.max_grad_norm
        grad_norm = (
            float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)) if max_norm is not None else 0.0
        )
        verdict = self.guards.check(loss, grad_norm) if self.guards is not None else "step"
        if verdict == "step":
            for optimizer in self.optimizers:
                optimizer.step()
        elif verdict in ("restore", "rollback"):
            self.good_state.restore(self.model, self.optimizers, self.schedulers)
            if verdict == "rollback":
                scale_learning_rate(self.schedulers, self.guard_params.spike_lr_factor)
        return grad_norm, verdict

    def fit(self, batches: Iterable[Any]) -> TrainResult:
        """Run the loop; returns the logged rows and totals. metrics.jsonl is rewritten from scratch."""
        self.prepare_model()
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.batch_source = batches  # a FallbackSource reports its fallbacks in every row
        if self.guards is not None:
            self.good_state.take(0, self.model, self.optimizers, self.schedulers)
        for callback in self.callbacks:
            callback.on_train_begin(self)
        resumed = self.checkpoints.latest() if self.checkpoints is not None else None
        progress = self._restore(resumed) if resumed is not None else _Progress(step=self.start_step)
        # the data position: the batches the checkpointed steps consumed are drawn and dropped
        remaining = itertools.islice(iter(batches), self.batches_consumed, None)
        source: Iterator[Any] = remaining
        if self.features.prefetch:
            self.prefetcher = Prefetcher(remaining, self.data_params.prefetch_batches)
            source = self.prefetcher
        try:
            result = self._loop(source, progress)
        except Exception as error:
            if self.features.crash_report and self.out_dir is not None:
                device = str(next(self.model.parameters()).device)
                write_crash_report(self.out_dir, error, self.step, self.settings, self.last_row, device)
            raise
        finally:
            if self.prefetcher is not None:
                self.prefetcher.close()
        for callback in self.callbacks:
            callback.on_train_end(self)
        return result

    def _payload(self, progress: _Progress) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one stands."""
        return {
            "step": progress.step,
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng": rng_state(),
            "progress": progress,
            "data": {"batches_consumed": progress.step - self.start_step},
            "trainer_calls": dict(self.feature_calls),
            "model_calls": dict(getattr(self.model, "feature_calls", {})),
            "pending": pending_updates(self.model),
            "guards": self.guards.state_dict() if self.guards is not None else None,
            "good_state": (self.good_state.step, self.good_state.state),
            "plugins": {name: plugin.state_dict() for name, plugin in self.plugins.items()},
            "callbacks": [callback.state_dict() for callback in self.callbacks],
        }

    def _restore(self, payload: dict[str, Any]) -> _Progress:
        """Load a checkpoint payload into the model, optimizers, schedules, RNGs and counters.

        A checkpoint without any part of the state (the data position, a callback's curriculum, ...) is refused:
        resuming without it would train on other batches than an uninterrupted run.
        """
        where = (self.checkpoints.loaded_from if self.checkpoints is not None else None) or Path("checkpoint")
        missing = [key for key in RESUME_KEYS if key not in payload]
        if missing:
            raise refuse(where, f"no {missing[0]} state")
        if len(payload["callbacks"]) != len(self.callbacks):
            raise refuse(where, f"{len(payload['callbacks'])} callback states for this run's {len(self.callbacks)}")
        self.model.load_state_dict(payload["model"])
        for optimizer, state in zip(self.optimizers, payload["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(self.schedulers, payload["schedulers"], strict=True):
            scheduler.load_state_dict(state)
        set_rng_state(payload["rng"])
        for name, module in self.model.named_modules():
            if name in payload["pending"]:
                module._pending_load = payload["pending"][name]
        self.feature_calls.update(payload["trainer_calls"])
        self.prefetched_before = int(payload["trainer_calls"].get("prefetch", 0))
        model_calls = getattr(self.model, "feature_calls", None)
        if isinstance(model_calls, dict):
            model_calls.update(payload["model_calls"])
        if self.guards is not None and payload["guards"] is not None:
            self.guards.load_state_dict(payload["guards"])
        self.good_state.step, self.good_state.state = payload["good_state"]
        for name, plugin in self.plugins.items():
            if name not in payload["plugins"]:
                raise refuse(where, f"no {name} state")
            plugin.load_state_dict(payload["plugins"][name])
        for callback, state in zip(self.callbacks, payload["callbacks"], strict=True):
            try:
                callback.load_state_dict(state)
            except KeyError as error:
                raise refuse(where, f"no {error.args[0]} state for {type(callback).__name__}") from None
        progress: _Progress = payload["progress"]
        self.batches_consumed = int(payload["data"]["batches_consumed"])
        self.timer.totals.update(progress.phase_seconds)
        self.resumed_from = progress.step
        return progress

    def _loop(self, source: Iterator[Any], progress: _Progress) -> TrainResult:
        metrics_path = self.out_dir / "metrics.jsonl" if self.out_dir is not None else None
        self.progress = progress
        history = progress.history
        extra: dict[str, float] = {}  # evaluation figures waiting for the next row
        last_loss = history[-1].get("loss", float("nan")) if history else float("nan")
        self.model.train()
        started = time.perf_counter() - progress.elapsed
        self.window = _Window()
        with _metrics_sink(metrics_path if self.is_main else None) as sink:
            for row in history:  # a resumed run keeps the lines logged before its checkpoint
                sink(row)
            for step in range(progress.step + 1, self.train.max_steps + 1):
                self.step = step
                if not self._train_step(step, source, progress):
                    self.step = step - 1
                    break
                extra.update(self._evaluate(step))
                last = step == self.train.max_steps or self.should_stop
                if step == self.train.max_steps and self.checkpoint_fn is not None and self.is_main:
                    with self.timer.phase("checkpoint"):
                        self.checkpoint_fn(self.model, step)
                if step % self.train.logging_steps == 0 or last:
                    row = self._row(step, self.window, progress.tokens, time.perf_counter() - started, extra)
                    last_loss = row.get("loss", last_loss)
                    history.append(row)
                    self.last_row = row
                    sink(row)
                    if self.log_fn is not None and self.is_main:
                        self.log_fn(row, step)
                    self.window, extra = _Window(), {}
                every_ckpt = self.train.checkpoint_steps
                if self.checkpoints is not None and self.is_main and every_ckpt and (step % every_ckpt == 0 or last):
                    with self.timer.phase("checkpoint"):
                        progress.step, progress.elapsed = step, time.perf_counter() - started
                        progress.phase_seconds = dict(self.timer.totals)
                        self.features_now()
                        self.checkpoints.save(step, self._payload(progress))
                if self.should_stop:
                    break
        return TrainResult(
            history=history,
            metrics_file=metrics_path,
            steps=self.step,
            train_seconds=time.perf_counter() - started,
            train_tokens=progress.tokens,
            target_tokens=progress.targets,
            final_loss=last_loss,
            phase_seconds=dict(self.timer.totals),
            features=self.features_now(),
        )

    def _train_step(self, step: int, source: Iterator[Any], progress: _Progress) -> bool:
        """One optimizer step on the next batch, its hooks and callbacks; adds it to the window and the totals.

        False when the batches ran out (with `until_data_ends`; otherwise that is an error).
        """
        with self.timer.phase("data"):
            batch = next(source, None)
            if batch is None and self.until_data_ends:
                return False
            if batch is None:
                raise ValueError(f"batches: ran out at step {step} of {self.train.max_steps}")
            if self.parallel is not None:
                batch = self.parallel.shard(batch)
        with self.timer.phase("forward"):
            loss, stats = self.compute_loss(self.model, batch)
        with self.timer.phase("backward"):
            loss.backward()
            if self.parallel is not None:  # DDP counts the gradient all-reduce as part of the backward pass too
                weight, stats = self.parallel.share(stats, self.device)
                loss_value = self.parallel.reduce_gradients(self.model, weight, loss)
        if self.parallel is None:
            loss_value = float(loss.detach())
        with self.timer.phase("optimizer"):
            grad_norm, verdict = self._optimizer_step(step, loss_value)
        for phase in HOOK_PHASES:
            if self.hooks[phase]:
                with self.timer.phase(phase):
                    for hook in self.hooks[phase]:
                        hook(self, step)
        window = self.window
        window.steps += 1
        aux_term = float(stats.get("aux_loss", 0.0))
        if verdict == "step":
            window.good += 1
            window.loss += loss_value - aux_term
            window.aux += aux_term
            window.grad_norm += grad_norm
        tokens, targets = int(stats.get("tokens", 0)), int(stats.get("target_tokens", 0))
        window.tokens += tokens
        progress.tokens += tokens
        progress.targets += targets
        for callback in self.callbacks:
            callback.on_step_end(self, step, loss_value)
        return True

    def _evaluate(self, step: int) -> dict[str, float]:
        """Run `eval_fn` when due (every `eval_steps`, and at the last step) and pass its figures to the callbacks."""
        every = self.train.eval_steps
        last = step == self.train.max_steps or self.should_stop
        if self.eval_fn is None or not every or (step % every and not last):
            return {}
        with self.timer.phase("eval"):
            figures = self.eval_fn(self.model)
        self.model.train()
        for callback in self.callbacks:
            callback.on_evaluate(self, step, figures)
        return figures

    def features_now(self) -> dict[str, float]:
        """The feature columns of a row: model and trainer features, enabled flags and effective calls."""
        if self.guards is not None:
            self.feature_calls["integrity_guards"] = self.guards.counts["checks"]
        if self.prefetcher is not None:
            self.feature_calls["prefetch"] = self.prefetched_before + self.prefetcher.delivered
        enabled: dict[str, bool] = self.enabled_trainer_features()
        calls: dict[str, int] = dict(self.feature_calls)
        for plugin in self.plugins.values():
            plugin_enabled, plugin_calls = plugin.features()
            enabled.update(plugin_enabled)
            calls.update(plugin_calls)
        return feature_snapshot(self.model, enabled, calls)

    def _row(
        self, step: int, window: _Window, tokens_total: int, elapsed: float, extra: dict[str, float]
    ) -> dict[str, float]:
        phases = self.timer.take()
        wall = time.perf_counter() - window.started
        core = sum(phases[name] for name in CORE_PHASES)
        bottleneck = max(phases, key=lambda name: phases[name])
        good = max(window.good, 1)
        row: dict[str, float] = {
            "step": float(step),
            "loss": window.loss / good if window.good else float("nan"),
            "moe_aux_loss": window.aux / good,
            "grad_norm": window.grad_norm / good,
            "learning_rate": float(self.optimizers[0].param_groups[0]["lr"]),
            "tokens": float(tokens_total),
            "elapsed_s": elapsed,
            "core_tokens_per_s": window.tokens / core if core else 0.0,
            "effective_tokens_per_s": window.tokens / wall if wall else 0.0,
        }
        for name, seconds in phases.items():
            row[f"phase_{name}_s"] = seconds
            row[f"perf_bottleneck_{name}"] = float(name == bottleneck)
        routing = getattr(self.model, "routing_stats", None)
        if callable(routing):
            loads = [v for k, v in routing().items() if k.endswith("load_max_over_mean")]
            if loads:
                row["moe_load_max_over_mean"] = max(loads)
        row.update(self.features_now())
        for plugin in self.plugins.values():
            row.update(plugin.row())
        if self.guards is not None:
            for name in ("nonfinite_skips", "restores", "spike_rollbacks"):
                row[f"guard_{name}"] = float(self.guards.counts[name])
            if not window.good:
                del row["loss"]  # every step of the window was skipped: no loss to report
        fallbacks = getattr(self.batch_source, "fallbacks", None)
        if isinstance(fallbacks, int):
            row["data_fallbacks"] = float(fallbacks)
        for optimizer in self.credit_optimizers if self.features.c3o_credit else []:
            row.update({f"c3o_credit_{name}": value for name, value in optimizer.credits().items()})
        row.update(extra)
        if "loss" in row and not math.isfinite(row["loss"]):
            raise FloatingPointError(f"training loss is {row['loss']} at step {step}")
        return row


__all__ = [
    "PHASES",
    "TRAINER_FEATURES",
    "LMTrainer",
    "LoopParams",
    "PhaseTimer",
    "StepSettings",
    "TrainResult",
    "TrainerPlugin",
    "causal_lm_loss",
    "feature_snapshot",
    "mean_loss",
]
