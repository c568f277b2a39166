"""The evolution subsystems of `sigma_rl`, each switched in `features` and counted where it runs.

Per eval window (:meth:`Evolution.window`):

- **Uroboros meta-loop** (:class:`~cascadelab.training.sigma.meta_loop.MetaLoop`): decides the learning-rate
  factor (applied to every optimizer's schedule) and the RL-share change, which replaces the auto-mix's
  own rule (:meth:`~cascadelab.training.sigma.rl_lm_mix.RLMix.apply`, reason kept);
- **research log** (:class:`~cascadelab.training.sigma.research_log.ResearchLog`): one cycle per window —
  hypothesis "the current RL share raises the held-out reward without hurting the LM loss", the change
  (share, lr factor), the expected effect and the measured one — in ``<out>/research_log.jsonl``
  (the stage logs the folder as an MLflow artifact);
- **self-improver** (:class:`~cascadelab.training.sigma.self_improver.SelfImprover`): new template problems
  (val and test prompts excluded) answered greedily by the model; the verified answers become one extra
  LM update;
- **counterfactual credit** (:class:`~cascadelab.training.sigma.counterfactual_credit.CounterfactualCredit`,
  C3O only): every RL update is bracketed by ``before_step`` / ``after_step``; at the window the probe
  loss with each layer group's last update reverted gives the credit that `C3O.set_credit` takes.

After the run (:meth:`Evolution.finish`): **draft heads** trained on the final (frozen) model and
measured (acceptance rate, speed-up, identical greedy output), and **fractal NAS** trials at a tiny
budget (winner reported, not adopted).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.config import RL_EVOLUTION_SWITCHES, SigmaRLParams
from cascadelab.data.batches import IGNORE_INDEX, Batch
from cascadelab.data.corpus import CorpusVerifier, Record
from cascadelab.data.mixed_batches import TokenizedRows
from cascadelab.io import atomic_write_text
from cascadelab.models.sigma import SigmaConfig
from cascadelab.training.integrity_guards import scale_learning_rate
from cascadelab.training.optimizers.factory import credit_optimizers
from cascadelab.training.sigma.counterfactual_credit import CounterfactualCredit
from cascadelab.training.sigma.fractal_nas import NASSettings, run_nas, sigma_trial
from cascadelab.training.sigma.meta_loop import MetaLoop
from cascadelab.training.sigma.research_log import ResearchLog
from cascadelab.training.sigma.rl_lm_mix import RLMix
from cascadelab.training.sigma.self_improver import SelfImprover, SelfImproverSettings
from cascadelab.training.trainer import LMTrainer, mean_loss

EVOLUTION_FEATURES = RL_EVOLUTION_SWITCHES
Generate = Callable[[list[str]], list[str]]


class Evolution:
    """Runs the switched-on evolution subsystems at each eval window and after the run (see module doc)."""

    def __init__(
        self,
        params: SigmaRLParams,
        seed: int,
        model: PreTrainedModel,
        optimizers: Sequence[torch.optim.Optimizer],
        tokenizer: PreTrainedTokenizerBase,
        verifier: CorpusVerifier,
        math_tasks: Sequence[str],
        exclude: Iterable[str],
        probe: Sequence[Batch],
        out_dir: Path,
    ) -> None:
        f = params.features
        self.params, self.seed, self.model, self.tokenizer = params, seed, model, tokenizer
        self.optimizers = list(optimizers)
        self.verifier = verifier
        self.probe = list(probe)
        self.meta = MetaLoop() if f.meta_loop else None
        self.log = ResearchLog(out_dir / "research_log.jsonl") if f.research_log else None
        if self.log is not None:
            self.log.path.unlink(missing_ok=True)  # a run starts a fresh log (a resume rewrites it from its state)
        families = tuple(t for t in math_tasks if t in ("add", "sub", "mul", "expr", "reverse", "word"))
        self.improver = (
            SelfImprover(
                SelfImproverSettings(
                    params.evolution.self_improver_problems, families, answer_format=verifier.answer_format
                ),
                seed,
                exclude,
            )
            if f.self_improver and families
            else None
        )
        self.improver_updates = 0
        c3o = credit_optimizers(self.optimizers)
        self.credit = None
        if f.counterfactual_credit and c3o:
            groups = {str(g.get("name", i)): g["params"] for i, g in enumerate(c3o[0].param_groups)}
            self.credit = CounterfactualCredit(groups)
        self.c3o = c3o[0] if c3o else None
        self.last_credit: dict[str, float] = {}
        self.finished: dict[str, int] = {"fractal_nas": 0, "draft_heads": 0}

    # ---- around each RL update -----------------------------------------------------------------------
    def before_rl_step(self) -> None:
        """Snapshot the credit groups (counterfactual credit on)."""
        if self.credit is not None:
            self.credit.before_step()

    def after_rl_step(self) -> None:
        """Record each credit group's update."""
        if self.credit is not None:
            self.credit.after_step()

    # ---- per eval window -----------------------------------------------------------------------------
    def start(self, heldout: float, val_loss: float) -> None:
        """The window before the first step: the meta-loop's reference (its decision is "hold")."""
        if self.meta is not None:
            self.meta.observe(0, val_loss, heldout)

    def window(
        self, trainer: LMTrainer, heldout: float, val_loss: float, mix: RLMix, generate: Generate
    ) -> dict[str, float]:
        """Meta-loop (or auto-mix), research-log cycle, self-improver round and credit at the trainer's step."""
        step = trainer.step
        share_before = mix.share
        factor = 1.0
        if self.meta is not None:
            decision = self.meta.observe(step, val_loss, heldout)
            if mix.adaptive:
                mix.apply(step, decision.rl_share_delta, heldout, val_loss, f"meta-loop: {decision.reason}")
            factor = decision.lr_factor
            if factor != 1.0:
                scale_learning_rate(trainer.schedulers, factor)
        else:
            mix.decide(step, heldout, val_loss)
        out: dict[str, float] = {"lr_scale": self.meta.lr_scale if self.meta is not None else 1.0}
        if self.log is not None:
            previous = self.log.cycles()[-1]["measured"] if self.log.cycles() else None
            self.log.record(
                hypothesis=f"an RL share of {share_before:g} raises the held-out reward without raising the LM loss",
                change={"step": step, "rl_share": [share_before, mix.share], "lr_factor": factor},
                expected={"heldout_reward": "up", "val_loss": "not up"},
                measured={"heldout_reward": heldout, "val_loss": val_loss, "previous": previous},
            )
        if self.improver is not None:
            rows = self.improver.round(generate, lambda task, out, answer: self.verifier.verify(task, out, str(answer)))
            out["self_improver_kept"] = float(self.improver.kept)
            out["self_improver_rejected"] = float(self.improver.rejected)
            if rows:
                self._lm_update(rows, trainer)
        if self.credit is not None and self.credit.has_update and self.c3o is not None:
            estimates = self.credit.estimate(lambda: mean_loss(self.model, self.probe))
            self.last_credit = self.credit.to_c3o_credit(estimates)
            self.c3o.set_credit(self.last_credit)
        return out

    def _lm_update(self, rows: list[dict[str, Any]], trainer: LMTrainer) -> None:
        """One LM update on the self-improver's verified rows (the model's own completions as targets).

        It goes through the trainer's clipping and integrity guards, between two steps (the schedule does not move).
        """
        records = [{"prompt": r["prompt"], "response": r["completion"], "task": r["task"]} for r in rows]
        batch = TokenizedRows(self.tokenizer, records).collate(list(range(len(records))))
        self.model.train()
        trainer.update_between_steps(self.model(**batch).loss)
        self.improver_updates += 1

    # ---- after the run -------------------------------------------------------------------------------
    def finish(
        self,
        model: PreTrainedModel,
        test_records: Sequence[Record],
        train_batches: Sequence[Batch],
        val_batches: Sequence[Batch],
        tracking_parent: Any = None,
    ) -> dict[str, Any]:
        """Draft heads and NAS on the final model; their metrics."""
        metrics: dict[str, Any] = {}
        e = self.params.evolution
        if self.params.features.draft_heads:
            metrics.update(self._draft_heads(model, test_records, train_batches))
        if self.params.features.fractal_nas:
            started = time.perf_counter()
            settings = NASSettings(rounds=1, coarse_trials=e.nas_trials, coarse_steps=e.nas_steps, seed=self.seed)
            trial = sigma_trial(list(train_batches), list(val_batches), seed=self.seed)
            config = model.config
            if not isinstance(config, SigmaConfig):
                raise TypeError(f"fractal_nas: needs a SigmaLLM, got {type(config).__name__}")
            result = run_nas(config, settings, trial, tracking_parent)
            self.finished["fractal_nas"] = result.effective_calls
            metrics.update(
                nas_trials=result.effective_calls,
                nas_winner_val_loss=result.winner.val_loss,
                nas_base_val_loss=result.base.val_loss,
                nas_winner=str(result.winner.overrides),
                nas_adopted=result.adopted,
                nas_seconds=time.perf_counter() - started,
            )
        return metrics

    def _draft_heads(
        self, model: PreTrainedModel, test_records: Sequence[Record], train_batches: Sequence[Batch]
    ) -> dict[str, Any]:
        from cascadelab.models.draft_heads import DraftHeads, measure_speculative
        from cascadelab.training.draft_heads import train_draft_heads

        e = self.params.evolution
        torch.manual_seed(self.seed)
        was_training = model.training
        model.eval()  # in train mode the MoE's deferred bias update changes routing between forwards
        heads = DraftHeads.for_model(model, e.draft_num_heads)
        ids = [b["input_ids"] for b in train_batches]
        completions = [b["labels"] != IGNORE_INDEX for b in train_batches]  # decoding only drafts completions
        losses = train_draft_heads(model, heads, ids, e.draft_steps, e.draft_learning_rate, self.seed, completions)
        prompts = [
            self.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in test_records[: e.draft_prompts]
        ]
        report = measure_speculative(
            model, heads, prompts, self.params.eval.max_new_tokens, self.tokenizer.eos_token_id
        )
        model.train(was_training)
        self.finished["draft_heads"] = 1
        return {
            "draft_identical": report["identical"],
            "draft_acceptance_rate": report["acceptance_rate"],
            "draft_tokens_per_forward": report["tokens_per_forward"],
            "draft_speedup": report["speedup"],
            "draft_final_loss": losses[-1],
        }

    # ---- TrainerPlugin -------------------------------------------------------------------------------
    def features(self) -> tuple[dict[str, bool], dict[str, int]]:
        """Enabled switches and effective calls of every evolution subsystem."""
        f = self.params.features
        enabled = {name: bool(getattr(f, name)) for name in EVOLUTION_FEATURES}
        calls = {
            "meta_loop": self.meta.effective_calls if self.meta is not None else 0,
            "research_log": len(self.log.cycles()) if self.log is not None else 0,
            "self_improver": self.improver.effective_calls if self.improver is not None else 0,
            "counterfactual_credit": self.credit.effective_calls if self.credit is not None else 0,
            **self.finished,
        }
        return enabled, calls

    def row(self) -> dict[str, float]:
        """Credit columns (when estimated)."""
        return {f"counterfactual_credit_{name}": value for name, value in self.last_credit.items()}

    def state_dict(self) -> dict[str, Any]:
        """Meta-loop, self-improver and credit state."""
        return {
            "meta": copy.deepcopy(vars(self.meta)) if self.meta is not None else None,
            "improver": copy.deepcopy(vars(self.improver)) if self.improver is not None else None,
            "improver_updates": self.improver_updates,
            "credit": copy.deepcopy({k: v for k, v in vars(self.credit).items() if k != "groups"})
            if self.credit is not None
            else None,
            "last_credit": dict(self.last_credit),
            "log_cycles": self.log.cycles() if self.log is not None else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        for name in ("meta", "improver", "credit"):
            target = getattr(self, name)
            if target is not None and state[name] is not None:
                vars(target).update(copy.deepcopy(state[name]))
        self.improver_updates = state["improver_updates"]
        self.last_credit = dict(state["last_credit"])
        if self.log is not None:
            lines = "".join(json.dumps(c, sort_keys=True, ensure_ascii=False) + "\n" for c in state["log_cycles"])
            atomic_write_text(self.log.path, lines)


__all__ = ["EVOLUTION_FEATURES", "Evolution"]
