"""`CascadeTransformer`: coarse answer → LIMEN → refiner (worked steps) → LIMEN → output, with traces.

Modes of `generate(prompts, mode=...)`:

* `coarse_only`: the coarse model's greedy answer; LIMEN is not consulted.
* `normal`: coarse answer; LIMEN approves it (tension ≤ threshold) or, for a routed family, the item goes
  to the refiner; LIMEN then approves the refined answer, or falls back to the coarse one, or to silence
  (`Limen.get_alternative_or_silence`). A family the refiner was not trained for keeps its coarse answer
  unless the rule layer refuses it.
* `always_refine`: every item refined after its coarse answer, no gate.
* `skip_coarse`: every item refined from an empty `[COARSE]` slot; no coarse generation.

In both, "every item" is every item of a family the refiner has a model for (all of them with one shared
refiner); items of other families (per-family refiners) keep their coarse answer.

Progressive refinement: up to `max_refinement_steps` passes, each reading the previous pass's final answer
in the `[COARSE]` slot; an item stops when its answer no longer changes, when its next input repeats an
earlier one (greedy decoding would repeat itself), or, in `normal` mode, when the tension stops falling
(the previous, less tense pass is kept). Refinements are cached by refiner input, so repeated coarse
outputs cost nothing. Every step logs `[COARSE] / [LIMEN] / [REFINER] / [CASCADE]` lines at DEBUG level
on the `cascadelab.cascade` logger.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.cascade.formatting import final_answer
from cascadelab.cascade.limen import Decision, Intention, Limen
from cascadelab.cascade.refiner import SHARED, Refiner
from cascadelab.cascade.scoring import generated_tokens
from cascadelab.config import CASCADE_MODES, CascadeMode, CascadeSettings
from cascadelab.eval.generation import generate_batched

logger = logging.getLogger("cascadelab.cascade")


@dataclass
class RefinementPass:
    """One refiner pass on one item."""

    input: str
    output: str
    answer: str
    tokens: int
    cached: bool
    tension: float | None = None
    decision: Decision | None = None


@dataclass
class CascadeTrace:
    """What happened to one prompt: coarse answer, gate decisions, refinement passes, final choice."""

    prompt: str
    task: str | None  # the record's label, kept for reports only: nothing below reads it
    mode: str
    family: str | None = None  # the router's prediction from the prompt text
    route: str | None = None  # the refiner model key serving `family` (None: no refiner)
    coarse: str | None = None
    coarse_tokens: int = 0
    coarse_tension: float | None = None
    coarse_decision: Decision | None = None
    routed: bool = False
    passes: list[RefinementPass] = field(default_factory=list)
    refined: str | None = None
    refined_answer: str | None = None
    refined_tension: float | None = None
    refined_decision: Decision | None = None
    stop_reason: str = ""
    decision: str = ""
    final: str = ""
    final_stage: str | None = None  # "coarse", "refined" or None (silence)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated for this item: the coarse answer plus every uncached refiner pass."""
        return self.coarse_tokens + sum(p.tokens for p in self.passes)


@dataclass
class CascadeOutput:
    """Outputs in prompt order, their traces and the wall time of the call."""

    outputs: list[str]
    traces: list[CascadeTrace]
    seconds: float

    @property
    def mean_generated_tokens(self) -> float:
        """Mean generated tokens per item."""
        return sum(t.generated_tokens for t in self.traces) / max(len(self.traces), 1)


class CascadeTransformer:
    """The coarse → LIMEN → refiner cascade (Transformer²) over a frozen coarse model."""

    def __init__(
        self,
        coarse_model: PreTrainedModel | None,
        refiner: Refiner,
        limen: Limen,
        tokenizer: PreTrainedTokenizerBase,
        settings: CascadeSettings,
    ) -> None:
        if coarse_model is None and refiner.settings.mode != "lora":
            raise ValueError(
                "cascade: coarse_model may be None only with a LoRA refiner (its base is the coarse model)"
            )
        if refiner.router is None and SHARED not in refiner.models:
            raise ValueError("cascade: per-family refiners need the prompt router (refiner stage's router.json)")
        self.coarse_model = coarse_model if coarse_model is not None else refiner.models[SHARED]
        self.refiner = refiner
        self.limen = limen
        self.tokenizer = tokenizer
        self.settings = settings
        if refiner.settings.mode == "lora":
            limen.base_context = refiner.coarse_context  # LIMEN reads the base with the adapter off
        self.route_tasks = set(settings.route_tasks if settings.route_tasks is not None else refiner.route_tasks)
        self.threshold = settings.threshold if settings.threshold is not None else limen.threshold
        self.family_thresholds: dict[str, float] = dict(settings.family_thresholds)
        self.refined_threshold: float | None = None  # LIMEN's refined-output threshold (None: its settings')
        self._cache: OrderedDict[tuple[int, str], str] = OrderedDict()

    def threshold_of(self, family: str | None) -> float:
        """The coarse approval threshold of a predicted family: its own if recalibrated per family, else the global."""
        return self.family_thresholds.get(family, self.threshold) if family is not None else self.threshold

    def routes(self, prompts: Sequence[str]) -> tuple[list[str | None], list[str | None]]:
        """Each prompt's predicted family and the refiner model key serving it (None: no refiner), from the
        prompt text alone."""
        families = self.refiner.families(prompts)
        return families, self.refiner.route(families, self.settings.route_tasks)

    # ------------------------------------------------------------------------------------------ pieces
    def coarse_generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy coarse answers (adapter off for a LoRA refiner)."""
        with self.refiner.coarse_context():
            generated = generate_batched(
                self.coarse_model,
                self.tokenizer,
                prompts,
                self.settings.coarse_max_new_tokens,
                self.settings.batch_size,
            )
        return [o[0] for o in generated]

    def _refine(self, inputs: Sequence[str], routes: Sequence[str]) -> tuple[list[str], list[bool]]:
        """Refiner outputs for ready inputs (each on its route's model), each distinct input generated once
        (or read from the cache); also which outputs cost nothing (cached, or a duplicate within this call)."""
        tasks = list(routes)
        keys = [(id(self.refiner.model_for(t)), text) for text, t in zip(inputs, tasks, strict=True)]
        todo: dict[tuple[int, str], str] = {}
        for key, task in zip(keys, tasks, strict=True):
            if key not in self._cache and key not in todo:
                todo[key] = task
        fresh: dict[tuple[int, str], str] = {}
        if todo:
            generated = self.refiner.generate_from_inputs(
                [key[1] for key in todo],
                list(todo.values()),
                self.settings.refiner_max_new_tokens,
                self.settings.batch_size,
            )
            fresh = dict(zip(todo, generated, strict=True))
        outputs, cached, charged = [], [], set()
        for key in keys:
            if key in fresh:
                outputs.append(fresh[key])
                cached.append(key in charged)
                charged.add(key)
            else:
                outputs.append(self._cache[key])
                cached.append(True)
                self._cache.move_to_end(key)
        if self.settings.cache_size:
            self._cache.update(fresh)
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return outputs, cached

    def clear_cache(self) -> None:
        """Forget cached refinements (e.g. between timed runs)."""
        self._cache.clear()

    # ------------------------------------------------------------------------------------------ generate
    def generate(
        self, prompts: Sequence[str], mode: CascadeMode = "normal", tasks: Sequence[str | None] | None = None
    ) -> CascadeOutput:
        """Run the cascade on `prompts`. `tasks` (the records' labels) are copied into the traces for reports;
        no decision reads them: the router predicts each prompt's family from its text."""
        if mode not in CASCADE_MODES:
            raise ValueError(f"mode: must be one of {', '.join(CASCADE_MODES)} (got {mode!r})")
        tasks = list(tasks) if tasks is not None else [None] * len(prompts)
        if len(tasks) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(tasks)} tasks")
        started = time.perf_counter()
        families, routes = self.routes(prompts)
        traces = [
            CascadeTrace(prompt=p, task=t, mode=mode, family=f, route=r)
            for p, t, f, r in zip(prompts, tasks, families, routes, strict=True)
        ]
        served = [mode != "coarse_only" and r is not None for r in routes]
        needs_coarse = [mode != "skip_coarse" or not s for s in served]
        if any(needs_coarse):
            indices = [i for i, needed in enumerate(needs_coarse) if needed]
            coarse = self.coarse_generate([prompts[i] for i in indices])
            counts = generated_tokens(self.tokenizer, coarse, self.settings.coarse_max_new_tokens)
            for index, text, count in zip(indices, coarse, counts, strict=True):
                traces[index].coarse, traces[index].coarse_tokens = text, count
                logger.debug('[COARSE] Generated: "%s"', text)
        if mode == "coarse_only":
            for trace in traces:
                self._finish(trace, trace.coarse or "", "coarse", "coarse only")
        elif mode in ("always_refine", "skip_coarse"):
            refine = [trace for trace, s in zip(traces, served, strict=True) if s]
            for trace in refine:
                trace.routed = True
            self._progressive(refine, gated=False)
            for trace, s in zip(traces, served, strict=True):
                if s:
                    self._finish(trace, trace.refined or "", "refined", f"{mode}: refined version selected")
                else:
                    self._finish(trace, trace.coarse or "", "coarse", f"{mode}: no refiner for this family")
        else:
            self._normal(traces)
        return CascadeOutput([t.final for t in traces], traces, time.perf_counter() - started)

    def _normal(self, traces: list[CascadeTrace]) -> None:
        coarse_intentions = self.limen.create_intentions(
            [t.prompt for t in traces], [t.coarse or "" for t in traces], "coarse", [t.family for t in traces]
        )
        decisions = self.limen.validate_intentions(coarse_intentions, [self.threshold_of(t.family) for t in traces])
        to_refine: list[CascadeTrace] = []
        by_trace: dict[int, Intention] = {}
        for trace, intention, decision in zip(traces, coarse_intentions, decisions, strict=True):
            trace.coarse_tension, trace.coarse_decision = decision.tension, decision
            by_trace[id(trace)] = intention
            logger.debug("[LIMEN] Coarse intention: %s (tension=%.2f)", _verdict(decision), decision.tension)
            if decision.approved:
                self._finish(trace, trace.coarse or "", "coarse", "coarse approved")
            elif trace.route is not None:
                trace.routed = True
                to_refine.append(trace)
            else:
                fallback = self.limen.get_alternative_or_silence(intention, [intention], decision)
                self._finish(trace, fallback.output, fallback.stage, f"not routed: {fallback.decision.reason}")
        if not to_refine:
            return
        self._progressive(to_refine, gated=True)
        for trace in to_refine:
            verdict = trace.refined_decision
            if verdict is not None and verdict.approved:
                self._finish(trace, trace.refined or "", "refined", "refined version selected")
                continue
            refined_intention = self.limen.create_intention(trace.prompt, trace.refined or "", "refined", trace.family)
            fallback = self.limen.get_alternative_or_silence(refined_intention, [by_trace[id(trace)]], verdict)
            self._finish(trace, fallback.output, fallback.stage, f"refined refused: {fallback.decision.reason}")

    def _progressive(self, traces: list[CascadeTrace], gated: bool) -> None:
        """Refinement passes over `traces` until each settles (see the module docstring)."""
        active = list(traces)
        slot = {id(t): t.coarse for t in traces}
        seen_inputs: dict[int, set[str]] = {id(t): set() for t in traces}
        for step in range(self.settings.max_refinement_steps):
            inputs = self.refiner.inputs([t.prompt for t in active], [slot[id(t)] for t in active])
            repeat = [text in seen_inputs[id(t)] for t, text in zip(active, inputs, strict=True)]
            for trace, is_repeat in zip(active, repeat, strict=True):
                if is_repeat:
                    trace.stop_reason = "input repeats an earlier pass"
            pending = [(t, text) for t, text, r in zip(active, inputs, repeat, strict=True) if not r]
            if not pending:
                break
            outputs, cached = self._refine([text for _, text in pending], [t.route or SHARED for t, _ in pending])
            counts = generated_tokens(self.tokenizer, outputs, self.settings.refiner_max_new_tokens)
            passes = [
                RefinementPass(text, out, final_answer(out), 0 if hit else n, hit)
                for (_, text), out, hit, n in zip(pending, outputs, cached, counts, strict=True)
            ]
            if gated:
                intentions = self.limen.create_intentions(
                    [t.prompt for t, _ in pending], outputs, "refined", [t.family for t, _ in pending]
                )
                decisions = self.limen.validate_intentions(intentions, refined_threshold=self.refined_threshold)
                for refinement, decision in zip(passes, decisions, strict=True):
                    refinement.tension, refinement.decision = decision.tension, decision
            still_active = []
            for (trace, text), refinement in zip(pending, passes, strict=True):
                seen_inputs[id(trace)].add(text)
                logger.debug("[REFINER] Input: %s → Processing...", text)
                logger.debug('[REFINER] Generated: "%s"', refinement.output)
                previous = trace.passes[-1] if trace.passes else None
                trace.passes.append(refinement)
                if gated and refinement.decision is not None:
                    logger.debug(
                        "[LIMEN] Refined intention: %s (tension=%.2f)",
                        _verdict(refinement.decision),
                        refinement.tension or 0.0,
                    )
                if (
                    gated
                    and previous is not None
                    and refinement.tension is not None
                    and previous.tension is not None
                    and refinement.tension >= previous.tension
                ):
                    self._keep(trace, previous)
                    trace.stop_reason = "tension stopped falling"
                    continue
                self._keep(trace, refinement)
                if previous is not None and refinement.answer == previous.answer:
                    trace.stop_reason = "answer unchanged"
                elif step + 1 == self.settings.max_refinement_steps:
                    trace.stop_reason = "max refinement steps"
                else:
                    slot[id(trace)] = refinement.answer
                    still_active.append(trace)
            active = still_active
            if not active:
                break

    @staticmethod
    def _keep(trace: CascadeTrace, refinement: RefinementPass) -> None:
        trace.refined, trace.refined_answer = refinement.output, refinement.answer
        trace.refined_tension, trace.refined_decision = refinement.tension, refinement.decision

    @staticmethod
    def _finish(trace: CascadeTrace, output: str, stage: str | None, decision: str) -> None:
        trace.final, trace.final_stage, trace.decision = output, stage, decision
        logger.debug("[CASCADE] Final output: %s (%s)", f'"{output}"' if stage else "silence", decision)


def _verdict(decision: Decision) -> str:
    return "APPROVED" if decision.approved else f"REFUSED ({decision.reason})"
