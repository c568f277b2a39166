"""The SIGMA training loop: one loop, every phase of every step timed, feature counters logged.

Each step runs the phases ``data`` (next batch), ``forward``, ``backward`` and ``optimizer`` (gradient
clipping, integrity guards, optimizer and schedule step, C3O credit); ``rl`` and ``verify`` (hooks
that the RL and verifier subsystems register; 0 s without them); ``eval`` (a callback, every
``eval_steps``) and ``checkpoint`` (a callback, at the end) run when due. Every ``logging_steps``
the loop writes one line to ``<out_dir>/metrics.jsonl`` and passes the same figures to ``log_fn``
(the stage sends them to MLflow):

- ``loss`` (mean next-token cross-entropy of the window, without the MoE balance term), ``moe_aux_loss``,
  ``learning_rate``, ``grad_norm``, ``tokens`` (non-padding, cumulative), ``elapsed_s``;
- ``phase_<name>_s``: seconds spent in each phase during the window, ``perf_bottleneck_<name>``: 1 for
  the phase with the largest share, else 0;
- ``core_tokens_per_s``: window tokens over forward + backward + optimizer seconds;
  ``effective_tokens_per_s``: window tokens over the window's wall time;
- for every feature of the model (``model.enabled_features()`` / ``model.feature_calls``, the seed's
  rule that a feature counts only where a counter shows it ran) and of the trainer (``c3o_credit``:
  credit updates; ``integrity_guards``: steps checked; ``prefetch``: batches delivered by the prefetch
  thread): ``feature_<name>_enabled`` and ``feature_<name>_effective_calls`` (cumulative executions,
  counted where the feature runs);
- ``guard_nonfinite_skips``, ``guard_restores``, ``guard_spike_rollbacks`` (cumulative) with the guards on,
  ``c3o_credit_<group>`` with the credit on, ``data_fallbacks`` when the batches come from a
  :class:`~cascadelab.training.batch_pipeline.FallbackSource`.

With ``features.crash_report`` an unhandled exception writes ``<out_dir>/errors/<UTC>.json`` before it
propagates.

The loop trains any Hugging Face causal LM: SigmaLLM (the INSTANT plan is applied before the first
forward) and the Llama baseline go through the same code, batches and schedule.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from cascadelab.config import (
    InstantParams,
    SigmaDataParams,
    SigmaFeatureParams,
    SigmaGuardParams,
    SigmaTrainParams,
)
from cascadelab.data.batches import Batch
from cascadelab.data.mixed_batches import count_tokens
from cascadelab.models.sigma import apply_instant_plan
from cascadelab.training.batch_pipeline import Prefetcher
from cascadelab.training.crash_report import write_crash_report
from cascadelab.training.integrity_guards import GoodState, IntegrityGuards, scale_learning_rate
from cascadelab.training.optimizers.factory import build_optimizers, credit_optimizers
from cascadelab.training.run_checkpoints import CheckpointStore, rng_state, set_rng_state

PHASES: tuple[str, ...] = ("data", "forward", "backward", "optimizer", "rl", "verify", "eval", "checkpoint")
CORE_PHASES: tuple[str, ...] = ("forward", "backward", "optimizer")
HOOK_PHASES: tuple[str, ...] = ("rl", "verify")
TRAINER_FEATURES: tuple[str, ...] = ("c3o_credit", "integrity_guards", "prefetch")

LogFn = Callable[[dict[str, float], int], None]
EvalFn = Callable[[nn.Module], dict[str, float]]
CheckpointFn = Callable[[nn.Module, int], None]
StepHook = Callable[["SigmaTrainer", int], None]


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


def wsd_factor(step: int, max_steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Warmup-stable-decay multiplier of the learning rate before optimizer step `step` (0-based).

    Linear warm-up over `warmup_steps`, constant, then linear decay to 0 over the last
    `decay_fraction` of `max_steps` (the coarse SFT schedule).
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = int(max_steps * decay_fraction)
    if decay_steps and step >= max_steps - decay_steps:
        return max(0.0, (max_steps - step) / decay_steps)
    return 1.0


def supports_instant(model: nn.Module) -> bool:
    """Whether `model` is a SIGMA model that takes the INSTANT memory plan."""
    return hasattr(model, "instant_plan") and hasattr(model, "model")


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
    """Where a run stands after `step` steps: its logged rows, token counts and wall time so far."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    tokens: int = 0
    targets: int = 0
    elapsed: float = 0.0


@dataclass
class TrainResult:
    """What a finished run reports: the logged rows (the lines of metrics.jsonl) and totals."""

    history: list[dict[str, float]]
    metrics_path: Path
    steps: int
    train_seconds: float
    train_tokens: int
    target_tokens: int
    final_loss: float
    phase_seconds: dict[str, float]
    features: dict[str, float]

    @property
    def tokens_per_second(self) -> float:
        """Non-padding training tokens per second of the whole loop."""
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0


class SigmaTrainer:
    """Trains one causal LM for `train.max_steps` steps on the given batches, timing and logging each phase.

    `eval_fn(model)` runs every `train.eval_steps` steps and after the last (0: never); its figures join the next log
    line; `checkpoint_fn(model, step)` runs after the last step. `instant` is applied to SIGMA models
    before the first forward (plain models ignore it).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizers: list[torch.optim.Optimizer],
        train: SigmaTrainParams,
        out_dir: Path,
        instant: InstantParams | None = None,
        log_fn: LogFn | None = None,
        eval_fn: EvalFn | None = None,
        checkpoint_fn: CheckpointFn | None = None,
        features: SigmaFeatureParams | None = None,
        guards: SigmaGuardParams | None = None,
        data: SigmaDataParams | None = None,
        credit_interval: int = 50,
        settings: dict[str, object] | None = None,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        if not optimizers:
            raise ValueError("optimizers: need at least one optimizer")
        self.model = model
        self.optimizers = optimizers
        self.train = train
        self.out_dir = Path(out_dir)
        self.instant = instant
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
        self.step = 0
        self.checkpoints = checkpoints
        self.prefetched_before = 0  # batches the prefetch thread delivered before a resume
        self.resumed_from = 0
        self.batch_source: Iterable[Batch] | None = None
        config = getattr(model, "config", None)
        self.pad_id = int(getattr(config, "pad_token_id", None) or 0)
        self.aux_coef = float(getattr(config, "moe_aux_loss_coef", 0.0) or 0.0)
        schedule = train.max_steps, train.warmup_steps, train.decay_fraction
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(o, lambda step: wsd_factor(step, *schedule)) for o in optimizers
        ]

    def prepare_model(self) -> None:
        """Apply the INSTANT memory plan to a SIGMA model (its training forward refuses to run without it)."""
        if supports_instant(self.model):
            plan = self.instant or InstantParams()
            apply_instant_plan(self.model, plan.chunk_size, checkpoint_blocks=plan.checkpoint_blocks)

    def _forward(self, batch: Batch) -> tuple[torch.Tensor, float]:
        """Training loss to back-propagate, and its MoE balance term."""
        out = self.model(**batch)
        aux = getattr(out, "aux_loss", None)
        aux_term = self.aux_coef * float(aux.detach()) if aux is not None and self.aux_coef > 0 else 0.0
        return out.loss, aux_term

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

    def _optimizer_step(self, step: int, loss: float) -> tuple[float, str]:
        """Clip, let the guards judge, step (or skip / restore / roll back), advance the schedule."""
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.max_grad_norm))
        verdict = self.guards.check(loss, grad_norm) if self.guards is not None else "step"
        if verdict == "step":
            for optimizer in self.optimizers:
                optimizer.step()
        elif verdict in ("restore", "rollback"):
            self.good_state.restore(self.model, self.optimizers, self.schedulers)
            if verdict == "rollback":
                scale_learning_rate(self.schedulers, self.guard_params.spike_lr_factor)
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

    def fit(self, batches: Iterable[Batch]) -> TrainResult:
        """Run the loop; returns the logged rows and totals. metrics.jsonl is rewritten from scratch."""
        self.prepare_model()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.batch_source = batches  # a FallbackSource reports its fallbacks in every row
        if self.guards is not None:
            self.good_state.take(0, self.model, self.optimizers, self.schedulers)
        resumed = self.checkpoints.latest() if self.checkpoints is not None else None
        progress = self._restore(resumed) if resumed is not None else _Progress()
        # the data position: the batches the checkpointed steps consumed are drawn and dropped
        remaining = itertools.islice(iter(batches), progress.step, None)
        source: Iterator[Batch] = remaining
        if self.features.prefetch:
            self.prefetcher = Prefetcher(remaining, self.data_params.prefetch_batches)
            source = self.prefetcher
        try:
            return self._loop(source, progress)
        except Exception as error:
            if self.features.crash_report:
                device = str(next(self.model.parameters()).device)
                write_crash_report(self.out_dir, error, self.step, self.settings, self.last_row, device)
            raise
        finally:
            if self.prefetcher is not None:
                self.prefetcher.close()

    def _payload(self, progress: _Progress) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one stands."""
        return {
            "step": progress.step,
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng": rng_state(),
            "progress": progress,
            "trainer_calls": dict(self.feature_calls),
            "model_calls": dict(getattr(self.model, "feature_calls", {})),
            "pending": pending_updates(self.model),
            "guards": self.guards.state_dict() if self.guards is not None else None,
            "good_state": (self.good_state.step, self.good_state.state),
            "plugins": {name: plugin.state_dict() for name, plugin in self.plugins.items()},
        }

    def _restore(self, payload: dict[str, Any]) -> _Progress:
        """Load a checkpoint payload into the model, optimizers, schedules, RNGs and counters."""
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
            plugin.load_state_dict(payload["plugins"][name])
        progress: _Progress = payload["progress"]
        self.resumed_from = progress.step
        return progress

    def _loop(self, source: Iterator[Batch], progress: _Progress) -> TrainResult:
        metrics_path = self.out_dir / "metrics.jsonl"
        history = progress.history
        extra: dict[str, float] = {}
        last_loss = history[-1].get("loss", float("nan")) if history else float("nan")
        self.model.train()
        started = time.perf_counter() - progress.elapsed
        window = _Window()
        with metrics_path.open("w", encoding="utf-8") as sink:
            for row in history:  # a resumed run keeps the lines logged before its checkpoint
                sink.write(json.dumps(row, sort_keys=True) + "\n")
            for step in range(progress.step + 1, self.train.max_steps + 1):
                self.step = step
                with self.timer.phase("data"):
                    batch = next(source, None)
                    if batch is None:
                        raise ValueError(f"batches: ran out at step {step} of {self.train.max_steps}")
                    tokens, targets = count_tokens(batch, self.pad_id)
                with self.timer.phase("forward"):
                    loss, aux_term = self._forward(batch)
                with self.timer.phase("backward"):
                    loss.backward()
                loss_value = float(loss.detach())
                with self.timer.phase("optimizer"):
                    grad_norm, verdict = self._optimizer_step(step, loss_value)
                for phase in HOOK_PHASES:
                    if self.hooks[phase]:
                        with self.timer.phase(phase):
                            for hook in self.hooks[phase]:
                                hook(self, step)
                window.steps += 1
                if verdict == "step":
                    window.good += 1
                    window.loss += loss_value - aux_term
                    window.aux += aux_term
                    window.grad_norm += grad_norm
                window.tokens += tokens
                progress.tokens += tokens
                progress.targets += targets
                every = self.train.eval_steps
                if self.eval_fn is not None and every and (step % every == 0 or step == self.train.max_steps):
                    with self.timer.phase("eval"):
                        extra.update(self.eval_fn(self.model))
                    self.model.train()
                if step == self.train.max_steps and self.checkpoint_fn is not None:
                    with self.timer.phase("checkpoint"):
                        self.checkpoint_fn(self.model, step)
                if step % self.train.logging_steps == 0 or step == self.train.max_steps:
                    row = self._row(step, window, progress.tokens, time.perf_counter() - started, extra)
                    last_loss = row.get("loss", last_loss)
                    history.append(row)
                    self.last_row = row
                    sink.write(json.dumps(row, sort_keys=True) + "\n")
                    sink.flush()
                    if self.log_fn is not None:
                        self.log_fn(row, step)
                    window, extra = _Window(), {}
                every_ckpt = self.train.checkpoint_steps
                if (
                    self.checkpoints is not None
                    and every_ckpt
                    and (step % every_ckpt == 0 or step == self.train.max_steps)
                ):
                    with self.timer.phase("checkpoint"):
                        progress.step, progress.elapsed = step, time.perf_counter() - started
                        self.features_now()
                        self.checkpoints.save(step, self._payload(progress))
        return TrainResult(
            history=history,
            metrics_path=metrics_path,
            steps=self.train.max_steps,
            train_seconds=time.perf_counter() - started,
            train_tokens=progress.tokens,
            target_tokens=progress.targets,
            final_loss=last_loss,
            phase_seconds=dict(self.timer.totals),
            features=self.features_now(),
        )

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
    "PhaseTimer",
    "SigmaTrainer",
    "TrainResult",
    "TrainerPlugin",
    "build_optimizers",
    "feature_snapshot",
    "mean_loss",
    "supports_instant",
    "wsd_factor",
]
