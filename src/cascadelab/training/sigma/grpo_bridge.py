"""GRPO / GSPO on SigmaLLM through TRL's `GRPOTrainer`, one update per call, on the SIGMA loop's optimizers.

The bridge owns a `GRPOTrainer` (CPU, no vLLM, bf16 and activation checkpointing off, ``beta=0`` loads no
reference model) but never calls its `train()`: the SIGMA trainer drives the run, and on an RL step
its ``rl`` hook calls :meth:`GRPOBridge.step`, which

1. draws ``prompts_per_step`` tasks (math tasks of the corpus, code tasks; a seeded `random.Random`), and
   with causal replay replaces the last ones by prompts of past high-advantage samples, drawn by
   priority (:class:`~cascadelab.training.sigma.causal_replay.CausalReplay`); each prompt is repeated
   ``num_generations`` times, the group GRPO normalises over;
2. hands that batch to ``GRPOTrainer.training_step``: TRL samples the completions, scores them with
   the reward function below, computes group advantages and the clipped policy loss, and
   back-propagates it (GSPO: ``importance_sampling_level="sequence"``, TRL's sequence-level
   importance ratio);
3. clips the gradient and steps the optimizers the SIGMA trainer owns (the LM and RL updates share one
   optimizer state and one learning-rate schedule).

On-policy (``num_iterations`` 1, the default) TRL takes the old log-probabilities as the current ones,
detached: every importance ratio is 1, nothing is clipped, and the token-level (GRPO) and sequence-level
(GSPO) losses have the same gradient. With ``num_iterations`` > 1 TRL keeps the generated batch with its
log-probabilities and the next ``num_iterations - 1`` calls update on those stored completions off-policy:
the ratios move away from 1, and GSPO's one ratio per sequence (the mean token log-ratio) clips and weights
differently from GRPO's ratio per token. Such a call draws no prompts and scores nothing.

The KL term: with ``beta > 0`` TRL adds ``beta * KL`` per token and reduces the loss to one scalar
(the masked mean over completion tokens, then the mean over the batch); it logs the KL as a scalar
mean too (``_metrics["train"]["kl"]``), which is the seed's fix — nothing to patch here.

Rewards come from a :class:`~cascadelab.training.sigma.verifier.VerifierCascade` (cheap check, then
the full check; code runs in the sandbox, which is warmed up explicitly before the first reward).
Verdicts of identical (prompt, completion) pairs are reused, so a completion the policy repeats is
executed once. The bridge's counters (RL steps, rewards, verifier calls, replay adds and replays) and
its state (draw RNG, replay buffer, verdict memo, cascade counters) travel in the SIGMA trainer's
checkpoints through the plugin interface.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer

from cascadelab.config import GRPOParams, ReplayParams
from cascadelab.training.sigma.causal_replay import CausalReplay, ReplaySample
from cascadelab.training.sigma.verifier import VerifierCascade
from cascadelab.training.trl_config import trl_args


@dataclass(frozen=True)
class RLTask:
    """One verifiable RL prompt: its verifier kind (a corpus task or ``code``) and its reference."""

    kind: str
    prompt: str
    reference: object  # the canonical answer (math) or a CodeSpec (code)


class VerifierReward:
    """TRL reward function: the cascade's reward of each completion, memoised per (kind, prompt, completion)."""

    __name__ = "verifier"  # TRL names the reward column after the function

    def __init__(self, cascade: VerifierCascade) -> None:
        self.cascade = cascade
        self.memo: dict[tuple[str, str, str], float] = {}
        self.memo_hits = 0
        self.scored_by_kind: dict[str, int] = {}  # outputs verified (not from the memo), per task kind
        self.scored: list[tuple[str, str, float]] = []  # (prompt, completion, reward) of the last call

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        kind: Sequence[str],
        reference: Sequence[object],
        **_: Any,
    ) -> list[float | None]:
        """Rewards in [0, 1] of a batch, in order (TRL passes the batch's extra columns as lists)."""
        rewards: list[float] = []
        for prompt, completion, task_kind, ref in zip(prompts, completions, kind, reference, strict=True):
            key = (task_kind, prompt, completion)
            if key in self.memo:
                self.memo_hits += 1
            else:
                self.memo[key] = self.cascade.reward(task_kind, completion, ref).value
                self.scored_by_kind[task_kind] = self.scored_by_kind.get(task_kind, 0) + 1
            rewards.append(self.memo[key])
        self.scored = [(p, c, r) for p, c, r in zip(prompts, completions, rewards, strict=True)]
        return list(rewards)


def grpo_config(settings: GRPOParams, out_dir: Path, seed: int) -> GRPOConfig:
    """TRL's config for one-update-per-call use on CPU (STACK-NOTES: use_cpu, no bf16, no checkpointing)."""
    batch = settings.prompts_per_step * settings.num_generations
    return trl_args(
        GRPOConfig,
        None,  # the bridge drives each update itself: no step budget or schedule of TRL's
        seed,
        out_dir,
        use_cpu=True,
        data_seed=None,  # TRL samples no data here: each update gets its prompts from the caller
        per_device_train_batch_size=batch,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        importance_sampling_level=settings.importance_sampling_level,
        beta=settings.beta,
        epsilon=settings.epsilon,
        num_iterations=settings.num_iterations,
        loss_type="grpo",
        logging_steps=10**9,  # the SIGMA loop logs
        save_strategy="no",
    )


def group_advantages(rewards: Sequence[float], group: int) -> list[float]:
    """Each reward minus its group's mean (the centring GRPO applies; groups are consecutive)."""
    out: list[float] = []
    for start in range(0, len(rewards), group):
        chunk = rewards[start : start + group]
        mean = sum(chunk) / len(chunk)
        out.extend(r - mean for r in chunk)
    return out


class GRPOBridge:
    """One GRPO/GSPO update per `step` call through TRL, on the caller's optimizers (see module doc)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        optimizers: Sequence[torch.optim.Optimizer],
        tasks: Mapping[str, Sequence[RLTask]],
        cascade: VerifierCascade,
        settings: GRPOParams,
        seed: int,
        out_dir: Path,
        max_grad_norm: float = 1.0,
        replay: CausalReplay | None = None,
        replay_params: ReplayParams | None = None,
        code_share: float = 0.0,
    ) -> None:
        if not any(tasks.values()):
            raise ValueError("grpo: no RL tasks")
        self.model = model
        self.optimizers = list(optimizers)
        self.tasks = {group: list(items) for group, items in tasks.items() if items}
        self.by_prompt = {t.prompt: t for items in self.tasks.values() for t in items}
        self.settings = settings
        self.max_grad_norm = max_grad_norm
        self.replay = replay
        self.replay_per_step = replay_params.per_step if replay_params is not None else 0
        self.code_share = code_share if "code" in self.tasks else 0.0
        self.reward = VerifierReward(cascade)
        self.cascade = cascade
        self.rng = random.Random(f"{seed}:grpo")
        seed_rows = [{"prompt": t.prompt} for t in next(iter(self.tasks.values()))[:1]]
        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=[self.reward],
            args=grpo_config(settings, out_dir, seed),
            train_dataset=Dataset.from_list(seed_rows),  # batches come from `batch`, never from this dataset
            processing_class=tokenizer,
        )
        self.trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which never runs here
        self.steps = 0
        self.reward_sum = 0.0
        self.samples = 0
        self.window_rewards: list[float] = []
        self.replay_adds = 0
        self.tokenizer = tokenizer
        self.rl_tokens = 0  # prompt + completion tokens of the sampled completions (each generated once)
        self.updates_on_stored = 0  # updates on a stored batch (num_iterations > 1)

    def _draw(self) -> RLTask:
        math_groups = [g for g in self.tasks if g != "code"]
        use_code = "code" in self.tasks and (not math_groups or self.rng.random() < self.code_share)
        group = "code" if use_code else self.rng.choice(math_groups)
        items = self.tasks[group]
        return items[self.rng.randrange(len(items))]

    def batch(self, step: int) -> list[dict[str, Any]]:
        """The next RL batch: fresh tasks, the last ones replaced by replayed prompts, each repeated per group."""
        chosen = [self._draw() for _ in range(self.settings.prompts_per_step)]
        if self.replay is not None and self.replay_per_step:
            replayed = [self.by_prompt[s.prompt] for s in self.replay.sample(self.replay_per_step, step)]
            if replayed:
                chosen[-len(replayed) :] = replayed
        return [
            {"prompt": t.prompt, "kind": t.kind, "reference": t.reference}
            for t in chosen
            for _ in range(self.settings.num_generations)
        ]

    def step(self, step: int) -> float:
        """One GRPO update at loop step `step`; returns the batch's mean reward (NaN on a stored batch)."""
        fresh = self.trainer._step % self.settings.num_iterations == 0  # TRL generates on these calls only
        inputs = self.batch(step) if fresh else [{"prompt": "", "kind": "", "reference": ""}]  # TRL ignores it
        self.trainer.training_step(self.model, inputs, None)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if not fresh:
            self.updates_on_stored += 1
            return math.nan
        scored = self.reward.scored
        self.rl_tokens += sum(len(self.tokenizer(p + c, add_special_tokens=False)["input_ids"]) for p, c, _ in scored)
        rewards = [r for _, _, r in scored]
        if self.replay is not None:
            advantages = group_advantages(rewards, self.settings.num_generations)
            samples = [ReplaySample(p, c, r, a, step) for (p, c, r), a in zip(scored, advantages, strict=True) if a > 0]
            self.replay_adds += self.replay.extend(samples)
        self.samples += len(rewards)
        self.reward_sum += sum(rewards)
        mean = sum(rewards) / len(rewards) if rewards else math.nan
        self.window_rewards.append(mean)
        return mean

    # ---- TrainerPlugin -------------------------------------------------------------------------------
    def features(self) -> tuple[dict[str, bool], dict[str, int]]:
        """GRPO/GSPO, verifier, cascade, asymmetric verification and replay counters."""
        gspo = self.settings.importance_sampling_level == "sequence"
        counters = self.cascade.counters()
        enabled = {
            "grpo": not gspo,
            "gspo": gspo,
            "verifier": True,
            "verifier_cascade": True,
            "asym_verify": self.cascade.asymmetric,
            "causal_replay": self.replay is not None,
        }
        calls = {
            "grpo": 0 if gspo else self.steps,
            "gspo": self.steps if gspo else 0,
            "verifier": counters["feature_verifier_effective_calls"],
            "verifier_cascade": counters["feature_verifier_cascade_effective_calls"],
            "asym_verify": counters["feature_asym_verify_effective_calls"],
            "causal_replay": self.replay.replay_calls if self.replay is not None else 0,
        }
        return enabled, calls

    def row(self) -> dict[str, float]:
        """RL columns of a logged row: the window's mean RL reward and cumulative counts."""
        window, self.window_rewards = self.window_rewards, []
        row = {
            "rl_steps": float(self.steps),
            "rl_samples": float(self.samples),
            "rl_reward_mean": self.reward_sum / self.samples if self.samples else 0.0,
            "verifier_cheap_failures": float(self.cascade.cheap_failures),
            "verifier_full_checks": float(self.cascade.full_checks),
            "verifier_memo_hits": float(self.reward.memo_hits),
        }
        if window:
            row["rl_window_reward"] = sum(window) / len(window)
        if self.replay is not None:
            row["replay_adds"] = float(self.replay_adds)
            row["replay_replayed"] = float(self.replay.replayed)
            row["replay_size"] = float(len(self.replay))
        return row

    def state_dict(self) -> dict[str, Any]:
        """Draw RNG, counters, replay buffer, verdict memo and cascade counters."""
        cascade_counts = {k: v for k, v in vars(self.cascade).items() if isinstance(v, int)}
        return {
            "rng": self.rng.getstate(),
            "steps": self.steps,
            "reward_sum": self.reward_sum,
            "samples": self.samples,
            "window_rewards": list(self.window_rewards),
            "replay_adds": self.replay_adds,
            "rl_tokens": self.rl_tokens,
            "updates_on_stored": self.updates_on_stored,
            "replay": copy.deepcopy(vars(self.replay)) if self.replay is not None else None,
            "memo": dict(self.reward.memo),
            "memo_hits": self.reward.memo_hits,
            "scored_by_kind": dict(self.reward.scored_by_kind),
            "cascade": cascade_counts,
            "trl_step": self.trainer._step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.rng.setstate(state["rng"])
        self.steps, self.reward_sum, self.samples = state["steps"], state["reward_sum"], state["samples"]
        self.window_rewards = list(state["window_rewards"])
        self.replay_adds = state["replay_adds"]
        self.rl_tokens, self.updates_on_stored = state.get("rl_tokens", 0), state.get("updates_on_stored", 0)
        if self.replay is not None and state["replay"] is not None:
            vars(self.replay).update(copy.deepcopy(state["replay"]))
        self.reward.memo = dict(state["memo"])
        self.reward.memo_hits = state["memo_hits"]
        self.reward.scored_by_kind = dict(state["scored_by_kind"])
        vars(self.cascade).update(state["cascade"])
        self.trainer._step = state["trl_step"]


__all__ = ["GRPOBridge", "RLTask", "VerifierReward", "group_advantages", "grpo_config"]
