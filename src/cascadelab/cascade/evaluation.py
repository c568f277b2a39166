"""`cascade_eval`: exact match, fix/break rates, compute per mode and the accuracy-vs-compute sweep.

Reference for every rate is the coarse-only run: an item is *coarse-right* when the coarse model's greedy
answer verifies. Fix rate = coarse-wrong items whose final answer verifies, over coarse-wrong items; break
rate = coarse-right items whose final answer does not, over coarse-right items. Compute is generated tokens
per item (coarse answer + uncached refiner passes) and wall time per item, each also as a ratio to
coarse-only.

The sweep replays LIMEN's coarse threshold from "never refine" to "always refine" over one coarse run and
one single-pass refinement of every routed item: at threshold t an item uses its refined answer when it is
routed, its coarse tension exceeds t and LIMEN approves the refined output, otherwise its coarse answer.
Lowering t only adds refined items, so the compute axis is monotone.
"""

from __future__ import annotations

import math
import resource
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from cascadelab.cascade.cascade import CascadeOutput, CascadeTransformer
from cascadelab.cascade.compute import FlopCounter, parameter_count
from cascadelab.cascade.limen import auroc, choose_threshold, expected_calibration_error
from cascadelab.cascade.scoring import generated_tokens
from cascadelab.config import CascadeEvalSettings
from cascadelab.eval.generation import generate_batched
from cascadelab.plotting import pyplot, save_figure

Record = dict[str, Any]
VerifyFn = Callable[[str, str, str], bool]


@dataclass
class SweepData:
    """Per-item inputs of the threshold sweep (one coarse run + one refinement of every routed item)."""

    coarse_correct: list[bool]
    refined_correct: list[bool]
    coarse_tension: list[float]
    refined_approved: list[bool]
    routed: list[bool]
    coarse_tokens: list[int]
    refined_tokens: list[int]
    tasks: list[str] = field(default_factory=list)  # the router's predicted families (per-family thresholds)
    coarse_flops: list[float] = field(default_factory=list)  # coarse pass
    limen_flops: list[float] = field(default_factory=list)  # LIMEN scoring the coarse answer
    refined_flops: list[float] = field(default_factory=list)  # refiner pass
    refined_limen_flops: list[float] = field(default_factory=list)  # LIMEN scoring the refined output
    refined_tension: list[float] = field(default_factory=list)  # LIMEN's on the refined output (inf: rule-refused)
    gate_thresholds: list[float] = field(default_factory=list)  # the coarse threshold each item was gated at


@dataclass
class EvalOutcome:
    """Metrics, sweep curves (name → points), prediction samples of `cascade_eval`."""

    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # every test item: each mode's correctness and tokens


def _rate(hits: int, total: int) -> float:
    return 100.0 * hits / total if total else float("nan")


def _verified(records: Sequence[Record], outputs: Sequence[str], verify: VerifyFn) -> list[bool]:
    return [verify(r["task"], o, r["answer"]) for r, o in zip(records, outputs, strict=True)]


def mode_metrics(
    records: Sequence[Record],
    run: CascadeOutput,
    coarse_correct: Sequence[bool],
    verify: VerifyFn,
    name: str,
) -> dict[str, float]:
    """Exact match, fix and break rates (overall and per task) of one run against the coarse reference."""
    correct = _verified(records, run.outputs, verify)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[""].append(index)
        groups[f"_{record['task']}"].append(index)
    metrics: dict[str, float] = {}
    for suffix, indices in sorted(groups.items()):
        wrong_before = [i for i in indices if not coarse_correct[i]]
        right_before = [i for i in indices if coarse_correct[i]]
        metrics[f"em_{name}{suffix}"] = _rate(sum(correct[i] for i in indices), len(indices))
        if name != "coarse":
            metrics[f"fix_rate_{name}{suffix}"] = _rate(sum(correct[i] for i in wrong_before), len(wrong_before))
            metrics[f"break_rate_{name}{suffix}"] = _rate(sum(not correct[i] for i in right_before), len(right_before))
    n = max(len(records), 1)
    metrics[f"tokens_per_item_{name}"] = run.mean_generated_tokens
    metrics[f"latency_ms_per_item_{name}"] = 1000.0 * run.seconds / n
    return metrics


def item_rows(records: Sequence[Record], runs: dict[str, CascadeOutput], verify: VerifyFn) -> list[dict[str, Any]]:
    """One row per test item: id, task, and per run label its correctness and generated tokens (paired claims)."""
    rows: list[dict[str, Any]] = [{"id": r.get("id", str(i)), "task": r["task"]} for i, r in enumerate(records)]
    for label, run in runs.items():
        for row, correct, trace in zip(rows, _verified(records, run.outputs, verify), run.traces, strict=True):
            row[f"{label}_correct"] = correct
            row[f"{label}_tokens"] = trace.generated_tokens
    return rows


def gate_metrics_of(run: CascadeOutput, records: Sequence[Record], verify: VerifyFn) -> dict[str, float]:
    """LIMEN's behaviour in a gated run: approval, refinement success, tension before/after, silence."""
    traces = run.traces
    refined = [t for t in traces if t.passes]
    n = max(len(traces), 1)
    metrics = {
        "limen_coarse_approval_rate": 100.0
        * sum(bool(t.coarse_decision and t.coarse_decision.approved) for t in traces)
        / n,
        "refined_share": 100.0 * len(refined) / n,
        "silence_rate": 100.0 * sum(t.final_stage is None for t in traces) / n,
        "mean_refinement_passes": sum(len(t.passes) for t in refined) / max(len(refined), 1),
    }
    if refined:
        by_prompt = {id(t): r for t, r in zip(traces, records, strict=True)}
        success = [verify(by_prompt[id(t)]["task"], t.refined or "", by_prompt[id(t)]["answer"]) for t in refined]
        metrics["refinement_success_rate"] = 100.0 * sum(success) / len(refined)
        metrics["limen_refined_approval_rate"] = (
            100.0 * sum(bool(t.refined_decision and t.refined_decision.approved) for t in refined) / len(refined)
        )
        metrics["tension_before"] = sum(t.coarse_tension or 0.0 for t in refined) / len(refined)
        metrics["tension_after"] = sum(t.refined_tension or 0.0 for t in refined) / len(refined)
    return metrics


def text_metrics(refined: Sequence[str], coarse: Sequence[str], prefix: str = "refined_vs_coarse") -> dict[str, float]:
    """BLEU (sacrebleu) and ROUGE-L F1 (rouge-score) of refined texts against coarse texts, where installed."""
    metrics: dict[str, float] = {}
    try:
        import sacrebleu

        metrics[f"{prefix}_bleu"] = float(sacrebleu.corpus_bleu(list(refined), [list(coarse)]).score)
    except ImportError:
        pass
    try:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        scores = [scorer.score(c, r)["rougeL"].fmeasure for r, c in zip(refined, coarse, strict=True)]
        metrics[f"{prefix}_rougeL"] = 100.0 * sum(scores) / max(len(scores), 1)
    except ImportError:
        pass
    return metrics


def sweep_data(
    cascade: CascadeTransformer,
    records: Sequence[Record],
    coarse_run: CascadeOutput,
    verify: VerifyFn,
    counter: FlopCounter | None = None,
) -> SweepData:
    """Coarse tensions, one refinement of every routed item and LIMEN's verdict on it (routing and LIMEN read
    the prompt and the outputs only: the records' labels serve verification alone)."""
    prompts = [r["prompt"] for r in records]
    families, routes = cascade.routes(prompts)
    coarse = coarse_run.outputs
    limen = cascade.limen
    tension = limen.tensions(limen.create_intentions(prompts, coarse, "coarse", families)).tolist()
    routed = [r is not None for r in routes]
    refined = [""] * len(records)
    indices = [i for i, r in enumerate(routed) if r]
    inputs = cascade.refiner.inputs([prompts[i] for i in indices], [coarse[i] for i in indices])
    if indices:
        outputs = cascade.refiner.generate_from_inputs(
            inputs,
            [routes[i] for i in indices],
            cascade.settings.refiner_max_new_tokens,
            cascade.settings.batch_size,
        )
        for i, output in zip(indices, outputs, strict=True):
            refined[i] = output
    refined_intentions = limen.create_intentions(prompts, refined, "refined", families)
    decisions = limen.validate_intentions(refined_intentions, refined_threshold=cascade.refined_threshold)
    refined_tokens = generated_tokens(cascade.tokenizer, refined, cascade.settings.refiner_max_new_tokens)
    flops: dict[str, list[float]] = {"coarse": [], "limen": [], "refined": [], "refined_limen": []}
    if counter is not None:
        input_of = dict(zip(indices, inputs, strict=True))
        for i, trace in enumerate(coarse_run.traces):
            flops["coarse"].append(counter.coarse_pass(prompts[i], trace.coarse_tokens))
            flops["limen"].append(counter.limen_pass(prompts[i], coarse[i]))
            sent = routed[i]
            flops["refined"].append(counter.refiner_pass(input_of[i], refined_tokens[i]) if sent else 0.0)
            flops["refined_limen"].append(counter.limen_pass(prompts[i], refined[i]) if sent else 0.0)
    return SweepData(
        coarse_correct=_verified(records, coarse, verify),
        refined_correct=_verified(records, refined, verify),
        coarse_tension=tension,
        refined_approved=[d.approved and r for d, r in zip(decisions, routed, strict=True)],
        routed=routed,
        coarse_tokens=[t.coarse_tokens for t in coarse_run.traces],
        refined_tokens=[n if r else 0 for n, r in zip(refined_tokens, routed, strict=True)],
        tasks=[f or "" for f in families],
        coarse_flops=flops["coarse"],
        limen_flops=flops["limen"],
        refined_flops=flops["refined"],
        refined_limen_flops=flops["refined_limen"],
        refined_tension=[
            math.inf if x.rule is not None else d.tension for x, d in zip(refined_intentions, decisions, strict=True)
        ],
        gate_thresholds=[cascade.threshold_of(f) for f in families],
    )


def sweep_thresholds(tension: Sequence[float], points: int) -> list[float]:
    """`points` thresholds from above every tension (never refine) to below every tension (always refine)."""
    values = sorted(tension)
    if not values:
        return [math.inf, -math.inf]
    inner = [values[round(k * (len(values) - 1) / max(points - 3, 1))] for k in range(max(points - 2, 0))]
    return [math.inf, *sorted(set(inner), reverse=True), -math.inf]


def threshold_sweep(data: SweepData, thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Exact match and mean generated tokens per item at each threshold, sorted by compute."""
    n = max(len(data.coarse_correct), 1)
    points = []
    with_flops = len(data.coarse_flops) == len(data.coarse_correct)
    for threshold in thresholds:
        em, tokens, refined, flops = 0, 0, 0, 0.0
        for i in range(len(data.coarse_correct)):
            tokens += data.coarse_tokens[i]
            if with_flops:
                flops += data.coarse_flops[i] + data.limen_flops[i]
            sent = data.routed[i] and data.coarse_tension[i] > threshold
            if sent:
                tokens += data.refined_tokens[i]
                flops += data.refined_flops[i] + data.refined_limen_flops[i] if with_flops else 0.0
            use_refined = sent and data.refined_approved[i]
            refined += use_refined
            em += data.refined_correct[i] if use_refined else data.coarse_correct[i]
        points.append(
            {
                "threshold": float(max(min(threshold, 2.0), -1.0)),  # ±inf written as 2 / -1 for TSV and plots
                "em": 100.0 * em / n,
                "tokens_per_item": tokens / n,
                "refined_share": 100.0 * refined / n,
                **({"flops_per_item": flops / n} if with_flops else {}),
            }
        )
    return sorted(points, key=lambda p: (p["tokens_per_item"], -p["threshold"]))


def oracle_gate(data: SweepData) -> tuple[dict[str, float], list[bool]]:
    """The oracle gate, the upper bound of any gate over this refiner: exactly the routed items the coarse
    model got wrong are refined (their refined answer kept, no LIMEN pass); every other item keeps its coarse
    answer. Returns its exact match, tokens and FLOPs per item, and each item's correctness."""
    n = max(len(data.coarse_correct), 1)
    with_flops = len(data.coarse_flops) == len(data.coarse_correct)
    correct, tokens, flops = [], 0, 0.0
    for i, right in enumerate(data.coarse_correct):
        sent = data.routed[i] and not right
        correct.append(data.refined_correct[i] if sent else right)
        tokens += data.coarse_tokens[i] + (data.refined_tokens[i] if sent else 0)
        if with_flops:
            # the oracle reads no LIMEN score: the coarse and refiner passes only
            flops += data.coarse_flops[i] + (data.refined_flops[i] if sent else 0.0)
    metrics = {"em": 100.0 * sum(correct) / n, "tokens_per_item": tokens / n}
    if with_flops:
        metrics["flops_per_item"] = flops / n
    return metrics, correct


def _correct_if_sent(data: SweepData) -> list[bool]:
    """Per item, whether the answer is right once the item is sent on: the refined one if LIMEN approves it,
    else the coarse one (an item no refiner serves keeps its answer, so counts as right: it cannot break)."""
    return [
        (not routed) or (refined if approved else coarse)
        for routed, approved, refined, coarse in zip(
            data.routed, data.refined_approved, data.refined_correct, data.coarse_correct, strict=True
        )
    ]


def refined_check(data: SweepData, refined_threshold: float) -> dict[str, float]:
    """What LIMEN's check of refined outputs does at `refined_threshold`, against approving every well-formed one.

    Over the items the gate sends on (routed, coarse tension above its gate threshold): the share whose refined
    output the check refuses (the cascade falls back to the coarse answer), the right answers that saves
    (refined wrong, coarse right) and loses (refined right, coarse wrong), and the net exact-match change.
    A rule-refused refined output (malformed) falls back at every threshold, so it is not counted.
    """
    n = max(len(data.coarse_correct), 1)
    sent = [r and t > g for r, t, g in zip(data.routed, data.coarse_tension, data.gate_thresholds, strict=True)]
    checked_out = [
        s and math.isfinite(t) and t > refined_threshold for s, t in zip(sent, data.refined_tension, strict=True)
    ]
    saved = sum(
        c and right and not fixed
        for c, right, fixed in zip(checked_out, data.coarse_correct, data.refined_correct, strict=True)
    )
    lost = sum(
        c and fixed and not right
        for c, right, fixed in zip(checked_out, data.coarse_correct, data.refined_correct, strict=True)
    )
    return {
        "refined_fallback_rate": 100.0 * sum(checked_out) / max(sum(sent), 1),
        "refined_check_saved": float(saved),
        "refined_check_lost": float(lost),
        "refined_check_em_change": 100.0 * (saved - lost) / n,
    }


def chosen_refined_threshold(data: SweepData) -> float:
    """The refined-output threshold that maximises exact match on this (val) data at the cascade's gate.

    Candidates are the sent items' refined tensions and 1 (approve every well-formed output); ties go to the
    highest threshold, the fewest fallbacks.
    """
    candidates = sorted({1.0, *(t for t in data.refined_tension if math.isfinite(t))}, reverse=True)
    scores = [(refined_check(data, t)["refined_check_em_change"], t) for t in candidates]
    best = max(score for score, _ in scores)
    return next(t for score, t in scores if score == best)


def recalibrated_threshold(data: SweepData, budget: float) -> float:
    """The gate threshold whose real break rate on this data (refiner outputs included) stays within budget."""
    return choose_threshold(data.coarse_tension, data.coarse_correct, budget, _correct_if_sent(data))


def _family_options(
    data: SweepData, indices: Sequence[int], correct_if_sent: Sequence[bool]
) -> list[tuple[int, int, int, float]]:
    """Per threshold of one family, most tense items sent first: (breaks, EM gain, items sent, threshold)."""
    tension = data.coarse_tension
    values = sorted({tension[i] for i in indices}, reverse=True)
    ordered = sorted(indices, key=lambda i: -tension[i])
    options = [(0, 0, 0, values[0])]  # threshold at the highest tension: nothing is sent
    breaks = gain = sent = position = 0
    for k, value in enumerate(values):
        while position < len(ordered) and tension[ordered[position]] == value:
            i = ordered[position]
            after = correct_if_sent[i]
            gain += int(after) - int(data.coarse_correct[i])
            breaks += int(data.coarse_correct[i] and not after)
            sent, position = sent + 1, position + 1
        options.append((breaks, gain, sent, values[k + 1] if k + 1 < len(values) else value - 1e-6))
    return options


def recalibrated_family_thresholds(data: SweepData, budget: float) -> dict[str, float]:
    """One threshold per routed family, maximising exact match on this data with the break budget shared.

    The break rate is counted as in `recalibrated_threshold` (broken right items over all right items), so
    the families together stay within `budget`; one global threshold spends it on whichever family has the
    most tense right items, per-family thresholds where a break buys the most fixes. Exact (a knapsack over
    the families' thresholds); ties go to less refinement.
    """
    if len(data.tasks) != len(data.routed):
        raise ValueError("recalibrated_family_thresholds: the sweep data has no task per item")
    allowed = math.floor(budget * max(sum(data.coarse_correct), 1) + 1e-9)
    families = sorted({t for t, routed in zip(data.tasks, data.routed, strict=True) if routed})
    correct_if_sent = _correct_if_sent(data)
    best: dict[int, tuple[int, int, dict[str, float]]] = {0: (0, 0, {})}  # breaks used → (gain, -sent, choice)
    for family in families:
        indices = [i for i, (t, r) in enumerate(zip(data.tasks, data.routed, strict=True)) if r and t == family]
        following: dict[int, tuple[int, int, dict[str, float]]] = {}
        for used, (gain, fewer, choice) in best.items():
            for breaks, more_gain, sent, threshold in _family_options(data, indices, correct_if_sent):
                if used + breaks > allowed:
                    continue
                candidate = (gain + more_gain, fewer - sent, {**choice, family: threshold})
                if used + breaks not in following or candidate[:2] > following[used + breaks][:2]:
                    following[used + breaks] = candidate
        best = following
    return max(best.values(), key=lambda state: state[:2])[2]


def plot_accuracy_vs_compute(
    curves: dict[str, list[dict[str, float]]],
    path: str | Path,
    operating_points: dict[str, tuple[float, float]] | None = None,
) -> None:
    """PNG of exact match against inference FLOPs per item (tokens where a curve has no FLOPs): one line per
    sweep curve, and each operating point (label → (FLOPs per item, EM): the baselines, the chosen gate) as a marker."""
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        x_key = "flops_per_item" if points and "flops_per_item" in points[0] else "tokens_per_item"
        axis.plot([p[x_key] for p in points], [p["em"] for p in points], marker="o", label=f"{name} (gate sweep)")
    markers = "s^vDP*X"
    for k, (label, (flops, em)) in enumerate((operating_points or {}).items()):
        axis.scatter(
            [flops], [em], marker=markers[k % len(markers)], s=120, zorder=3, color=f"C{len(curves) + k}", label=label
        )
    axis.set_xlabel("inference FLOPs per item (2 × parameters × tokens)")
    axis.set_ylabel("test exact match (%)")
    axis.set_title("Cascade: accuracy vs compute (every baseline, LIMEN threshold sweep)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    save_figure(figure, path)


EFFECTS = {  # effect name -> (system, baseline) item columns, each a test EM difference in points
    "draft_effect": ("refined", "skip_coarse"),  # reading the draft: always_refine minus the no-draft refiner
    "gate_vs_skip_coarse": ("cascade", "skip_coarse"),
    "gate_vs_oracle": ("cascade", "oracle"),
}


def paired_effects(items: Sequence[dict[str, Any]], resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Each `EFFECTS` difference of test EM (points) with its paired bootstrap 95 % interval over the items
    (`<effect>`, `<effect>_low`, `<effect>_high`); effects whose columns are missing are left out."""
    metrics: dict[str, float] = {}
    if not items:
        return metrics
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(items), (resamples, len(items)), generator=generator)
    for effect, (system, baseline) in EFFECTS.items():
        if f"{system}_correct" not in items[0] or f"{baseline}_correct" not in items[0]:
            continue
        diff = torch.tensor(
            [float(r[f"{system}_correct"]) - float(r[f"{baseline}_correct"]) for r in items], dtype=torch.float64
        )
        means = 100.0 * diff[draws].mean(1)
        metrics[effect] = float(100.0 * diff.mean())
        metrics[f"{effect}_low"] = float(torch.quantile(means, 0.025))
        metrics[f"{effect}_high"] = float(torch.quantile(means, 0.975))
    return metrics


def traffic_metrics(items: Sequence[dict[str, Any]], traffic: dict[str, float]) -> dict[str, float]:
    """Where a gate can pay: test metrics re-weighted to a deployment's traffic, and the break-even share.

    `traffic` (family → weight; empty: the test split as it is) re-weights each family's exact match and FLOPs
    per item (`em_traffic_<label>`, `flops_per_item_traffic_<label>`). The break-even share is the smallest
    share of coarse-solvable items (those the coarse model gets right), on a 1 % grid, at which a gate
    (`cascade`, and the `oracle` as the best any gate could do) costs fewer FLOPs per item than `skip_coarse`
    within 1 point of its exact match (`break_even_share_<gate>`, %; absent when no share qualifies).
    """
    if not items or "skip_coarse_flops" not in items[0]:
        return {}
    labels = [k.removesuffix("_flops") for k in items[0] if k.endswith("_flops") and f"{k[:-6]}_correct" in items[0]]
    metrics: dict[str, float] = {}
    if traffic:
        unknown = sorted(set(traffic) - {r["task"] for r in items})
        if unknown:
            raise ValueError(f"cascade_eval.traffic: no test items of {', '.join(unknown)}")
        total = sum(traffic.values())
        for label in labels:
            em = flops = 0.0
            for task, weight in traffic.items():
                rows = [r for r in items if r["task"] == task]
                em += weight / total * 100.0 * sum(bool(r[f"{label}_correct"]) for r in rows) / len(rows)
                flops += weight / total * sum(float(r[f"{label}_flops"]) for r in rows) / len(rows)
            metrics[f"em_traffic_{label}"], metrics[f"flops_per_item_traffic_{label}"] = em, flops

    def group_means(label: str, right: bool) -> tuple[float, float]:
        rows = [r for r in items if bool(r["coarse_correct"]) == right] or list(items)
        em = 100.0 * sum(bool(r[f"{label}_correct"]) for r in rows) / len(rows)
        return em, sum(float(r[f"{label}_flops"]) for r in rows) / len(rows)

    skip = (group_means("skip_coarse", True), group_means("skip_coarse", False))
    for gate in ("cascade", "oracle"):
        if f"{gate}_flops" not in items[0]:
            continue
        right, wrong = group_means(gate, True), group_means(gate, False)
        for step in range(101):
            share = step / 100
            em = share * right[0] + (1 - share) * wrong[0]
            flops = share * right[1] + (1 - share) * wrong[1]
            skip_em = share * skip[0][0] + (1 - share) * skip[1][0]
            skip_flops = share * skip[0][1] + (1 - share) * skip[1][1]
            if flops < skip_flops and em >= skip_em - 1.0:
                metrics[f"break_even_share_{gate}"] = 100.0 * share
                break
    metrics["coarse_solvable_share"] = 100.0 * sum(bool(r["coarse_correct"]) for r in items) / len(items)
    return metrics


def _refined_limit(cascade: CascadeTransformer) -> float:
    """The refined-output threshold the cascade's LIMEN check applies."""
    chosen = cascade.refined_threshold
    return cascade.limen.settings.refined_threshold if chosen is None else chosen


def flop_counter(cascade: CascadeTransformer) -> FlopCounter:
    """The FLOP counter of a cascade: its coarse model's and its refiner's parameter counts."""
    return FlopCounter(
        cascade.tokenizer,
        parameter_count([cascade.coarse_model]),
        parameter_count(list(cascade.refiner.models.values())),
    )


def evaluate_cascade(
    cascade: CascadeTransformer,
    records: Sequence[Record],
    verify: VerifyFn,
    settings: CascadeEvalSettings,
    name: str = "",
    nodraft: CascadeTransformer | None = None,
) -> EvalOutcome:
    """Every configured mode on `records`, the gate's behaviour, text metrics, the sweep curve and the oracle gate.

    The cascade sees the prompts only; the records' `task` and `answer` grade and group the results. With
    `nodraft` (the refiner trained without the draft), `skip_coarse` runs on it: the no-draft path alone.
    """
    prefix = f"{name}_" if name else ""
    prompts = [r["prompt"] for r in records]
    counter = flop_counter(cascade)
    runs: dict[str, CascadeOutput] = {}
    counters: dict[str, FlopCounter] = {}
    for mode in settings.modes:
        runner = nodraft if mode == "skip_coarse" and nodraft is not None else cascade
        runner.clear_cache()
        runs[mode] = runner.generate(prompts, mode=mode)
        counters[mode] = flop_counter(runner) if runner is not cascade else counter
    coarse_correct = _verified(records, runs["coarse_only"].outputs, verify)
    labels = {"coarse_only": "coarse", "always_refine": "refined", "normal": "cascade", "skip_coarse": "skip_coarse"}
    outcome = EvalOutcome()
    base = runs["coarse_only"]
    base_flops = sum(counter.trace(t) for t in base.traces) / max(len(records), 1)
    for run_mode, run in runs.items():
        label = labels[run_mode]
        metrics = mode_metrics(records, run, coarse_correct, verify, label)
        metrics[f"tokens_ratio_{label}"] = run.mean_generated_tokens / max(base.mean_generated_tokens, 1e-9)
        metrics[f"latency_ratio_{label}"] = run.seconds / max(base.seconds, 1e-9)
        flops = sum(counters[run_mode].trace(t) for t in run.traces) / max(len(records), 1)
        metrics[f"flops_per_item_{label}"] = flops
        metrics[f"flops_ratio_{label}"] = flops / max(base_flops, 1e-9)
        outcome.metrics.update(metrics)
    outcome.items = item_rows(records, {labels[mode]: run for mode, run in runs.items()}, verify)
    for item_mode, item_run in runs.items():
        for row, trace in zip(outcome.items, item_run.traces, strict=True):
            row[f"{labels[item_mode]}_flops"] = counters[item_mode].trace(trace)
    if "normal" in runs:
        outcome.metrics.update(gate_metrics_of(runs["normal"], records, verify))
    if "always_refine" in runs and settings.text_metrics:
        outcome.metrics.update(text_metrics(runs["always_refine"].outputs, base.outputs))
    data = sweep_data(cascade, records, base, verify, counter)
    curve = threshold_sweep(data, sweep_thresholds(data.coarse_tension, settings.sweep_points))
    outcome.curves[name or "cascade"] = curve
    oracle, oracle_correct = oracle_gate(data)
    outcome.metrics["em_oracle"] = oracle["em"]
    outcome.metrics["tokens_per_item_oracle"] = oracle["tokens_per_item"]
    if "flops_per_item" in oracle:
        outcome.metrics["flops_per_item_oracle"] = oracle["flops_per_item"]
        outcome.metrics["flops_ratio_oracle"] = oracle["flops_per_item"] / max(base_flops, 1e-9)
    for i, (row, hit) in enumerate(zip(outcome.items, oracle_correct, strict=True)):
        row["oracle_correct"] = hit
        sent = data.routed[i] and not data.coarse_correct[i]
        row["oracle_flops"] = data.coarse_flops[i] + (data.refined_flops[i] if sent else 0.0)
    outcome.metrics.update(traffic_metrics(outcome.items, settings.traffic))
    outcome.metrics.update(paired_effects(outcome.items))
    wrong = [not c for c in data.coarse_correct]
    outcome.metrics.update(refined_check(data, _refined_limit(cascade)))
    outcome.metrics["limen_auroc"] = auroc(data.coarse_tension, wrong)
    outcome.metrics["limen_ece"] = expected_calibration_error(data.coarse_tension, wrong)
    families = cascade.refiner.families(prompts)
    if families and families[0] is not None:
        hits = sum(f == r["task"] for f, r in zip(families, records, strict=True))
        outcome.metrics["router_accuracy"] = 100.0 * hits / max(len(records), 1)
    outcome.metrics = {f"{prefix}{k}": v for k, v in outcome.metrics.items()}
    for index, record in enumerate(records[: settings.sample_predictions]):
        trace = runs["normal"].traces[index] if "normal" in runs else base.traces[index]
        outcome.predictions.append(
            {
                "id": record.get("id", ""),
                "task": record["task"],
                "family": trace.family,
                "prompt": record["prompt"],
                "answer": record["answer"],
                "coarse": trace.coarse,
                "coarse_tension": trace.coarse_tension,
                "refined": trace.refined,
                "refined_tension": trace.refined_tension,
                "decision": trace.decision,
                "final": trace.final,
                "correct": verify(record["task"], trace.final, record["answer"]),
            }
        )
    return outcome


def control_metrics(
    control_model: PreTrainedModel,
    cascade: CascadeTransformer,
    records: Sequence[Record],
    verify: VerifyFn,
    cascade_metrics: dict[str, float],
    items: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Exact match of the equal-compute control (`coarse_more`) per task, and the cascade's margin over it.

    `items` (the test items' rows, in record order) gain the control's `control_correct`.
    """
    outputs = [
        o[0]
        for o in generate_batched(
            control_model,
            cascade.tokenizer,
            [r["prompt"] for r in records],
            cascade.settings.coarse_max_new_tokens,
            cascade.settings.batch_size,
        )
    ]
    correct = _verified(records, outputs, verify)
    for row, hit in zip(items or [], correct, strict=False):
        row["control_correct"] = hit
    counter = FlopCounter(cascade.tokenizer, parameter_count([control_model]), 0)
    counts = generated_tokens(cascade.tokenizer, outputs, cascade.settings.coarse_max_new_tokens)
    control_flops = sum(counter.coarse_pass(r["prompt"], n) for r, n in zip(records, counts, strict=True))
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[""].append(index)
        groups[f"_{record['task']}"].append(index)
    metrics = {
        "tokens_per_item_control": sum(counts) / max(len(records), 1),
        "flops_per_item_control": control_flops / max(len(records), 1),
    }
    for suffix, indices in sorted(groups.items()):
        em = _rate(sum(correct[i] for i in indices), len(indices))
        metrics[f"em_control{suffix}"] = em
        if f"em_cascade{suffix}" in cascade_metrics:
            metrics[f"cascade_minus_control{suffix}"] = cascade_metrics[f"em_cascade{suffix}"] - em
    return metrics


def peak_memory_mb() -> float:
    """Peak memory of this process (GPU allocator peak on CUDA, else resident set), in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cascade_eval(
    cascade: CascadeTransformer,
    val_records: Sequence[Record],
    test_records: Sequence[Record],
    verify: VerifyFn,
    settings: CascadeEvalSettings,
    control_model: PreTrainedModel | None = None,
    baselines: dict[str, CascadeTransformer] | None = None,
    nodraft: CascadeTransformer | None = None,
) -> EvalOutcome:
    """The stage's logic: recalibrate the gate on val if asked, evaluate on test, compare with the control.

    `baselines` (e.g. {"answer": cascade_with_the_answer_target_refiner}) are evaluated the same way, their
    metrics prefixed with their name and their sweep curves added beside the cascade's.
    """
    val_check: dict[str, float] = {}
    for item in [cascade, *(baselines or {}).values()]:
        if not val_records or not (settings.recalibrate_threshold or settings.choose_refined_threshold):
            continue
        base = item.generate([r["prompt"] for r in val_records], "coarse_only")
        data = sweep_data(item, val_records, base, verify)
        if settings.recalibrate_threshold:
            item.threshold = recalibrated_threshold(data, settings.break_rate_budget)
            if settings.per_family_thresholds:
                item.family_thresholds = recalibrated_family_thresholds(data, settings.break_rate_budget)
        if settings.choose_refined_threshold:  # at the gate just chosen
            data.gate_thresholds = [item.threshold_of(f or None) for f in data.tasks]
            item.refined_threshold = chosen_refined_threshold(data)
            if item is cascade:
                val_check = {f"val_{k}": v for k, v in refined_check(data, item.refined_threshold).items()}
    outcome = evaluate_cascade(cascade, test_records, verify, settings, nodraft=nodraft)
    outcome.metrics.update(val_check)
    if cascade.refined_threshold is not None:
        outcome.metrics["refined_threshold"] = cascade.refined_threshold
    outcome.metrics["threshold"] = cascade.threshold
    outcome.metrics.update({f"threshold_{t}": v for t, v in sorted(cascade.family_thresholds.items())})
    for name, baseline in (baselines or {}).items():
        other = evaluate_cascade(baseline, test_records, verify, settings, name=name)
        outcome.metrics.update(other.metrics)
        outcome.metrics[f"{name}_threshold"] = baseline.threshold
        if baseline.refined_threshold is not None:
            outcome.metrics[f"{name}_refined_threshold"] = baseline.refined_threshold
        outcome.curves.update(other.curves)
    if control_model is not None:
        control = control_metrics(control_model, cascade, test_records, verify, outcome.metrics, outcome.items)
        outcome.metrics.update(control)
        outcome.metrics["flops_ratio_control"] = control["flops_per_item_control"] / max(
            outcome.metrics.get("flops_per_item_coarse", 0.0), 1e-9
        )
    outcome.metrics["refiner_bytes"] = float(cascade.refiner.size_bytes())
    outcome.metrics["peak_memory_mb"] = peak_memory_mb()
    return outcome
