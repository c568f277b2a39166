"""Measured figures quoted in README.md and docs/: each tied to the metrics/ or plots/ file it comes from.

A page writes a figure inside fixed text (`Figure.template`, one `{...}` placeholder). `disagreements` lists
every figure whose page does not say what its file says; `refresh` rewrites those figures in place, so after a
`dvc repro` the pages follow the new files (`make docs`) and a test holds them there.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascadelab.report.table import load_figures

NUMBER = r"[-+]?[\d,]*\.?\d+"


@dataclass(frozen=True)
class Figure:
    """A figure as a page writes it: `template` formatted with `key` of `source` (times `scale`).

    `line`, when given, names the one line of the page the figure stands on (any text unique to it), for a
    template that would otherwise match elsewhere too.
    """

    page: str
    source: str
    key: str
    template: str
    scale: float = 1.0
    line: str = ""

    def expected(self, root: Path) -> str:
        """The text the page must contain, from the source file under `root`."""
        return self.template.format(float(figure_value(root, self.source, self.key)) * self.scale)

    def pattern(self) -> re.Pattern[str]:
        """The template with its placeholder as any written number."""
        before, rest = self.template.split("{", 1)
        after = rest.split("}", 1)[1]
        return re.compile(re.escape(before) + r"(?<![\d.,])" + NUMBER + re.escape(after))

    def span(self, text: str) -> tuple[int, int]:
        """Where in `text` the figure stands; ValueError unless exactly one place has its form."""
        start, end = 0, len(text)
        if self.line:
            lines = [m for m in re.finditer(r"^.*$", text, re.MULTILINE) if self.line in m.group(0)]
            if len(lines) != 1:
                raise ValueError(f"{self.page}: {len(lines)} lines contain {self.line!r} (figure {self.key})")
            start, end = lines[0].span()
        pattern, found, position = self.pattern(), [], start
        while (match := pattern.search(text, position, end)) is not None:  # overlapping places count too
            found.append(match)
            position = match.start() + 1
        if len(found) != 1:
            raise ValueError(
                f"{self.page}: {len(found)} places of the form {self.template!r} (figure {self.key}); name its line"
            )
        return found[0].span()


def figure_value(root: Path, source: str, key: str) -> Any:
    """`key` (dotted) of `source`; for a stage's `metrics/<stage>.json`, of all the files its figures are split into."""
    path = Path(source)
    if path.parts[0] == "metrics":  # the report's own merge of metrics, details and timing (those that exist)
        stage = path.stem
        split = (root / source, root / "plots" / stage / "details.json", root / "plots" / stage / "timing.json")
        value: Any = load_figures(lambda _: [p for p in split if p.is_file()], [stage])[stage]
    else:
        value = json.loads((root / source).read_text(encoding="utf-8"))
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        raise KeyError(f"{source}: no figure {key!r} (nor in the stage's details.json)")
    return value


def disagreements(figures: list[Figure], root: Path) -> list[str]:
    """One line per figure whose page does not contain the text its source file gives."""
    lines = []
    for figure in figures:
        expected = figure.expected(root)
        start, end = figure.span((root / figure.page).read_text(encoding="utf-8"))
        if (root / figure.page).read_text(encoding="utf-8")[start:end] != expected:
            lines.append(f"{figure.page}: expected {expected!r} from {figure.source} {figure.key}")
    return lines


def refresh(figures: list[Figure], root: Path) -> list[str]:
    """Rewrite each stale figure in its page from its source file; return one line per change.

    Raises ValueError naming the page and template when a page does not hold a figure's text in exactly one place.
    """
    changes = []
    for figure in figures:
        path = root / figure.page
        text = path.read_text(encoding="utf-8")
        expected = figure.expected(root)
        start, end = figure.span(text)
        if text[start:end] == expected:
            continue
        path.write_text(text[:start] + expected + text[end:], encoding="utf-8")
        changes.append(f"{figure.page}: {text[start:end]!r} -> {expected!r}")
    return changes


PRE, RL, HYB = "metrics/sigma_pretrain.json", "metrics/sigma_rl.json", "metrics/hybrid_rnn.json"
PRE_T, RL_T, HYB_T = "plots/sigma_pretrain/timing.json", "plots/sigma_rl/timing.json", "plots/hybrid_rnn/timing.json"
PRE_D, RL_D, HYB_D = "plots/sigma_pretrain/details.json", "plots/sigma_rl/details.json", "plots/hybrid_rnn/details.json"

L1, L2 = "metrics/lego_phase1.json", "metrics/lego_phase2.json"

CAS, CAS_L, CAS_R = "metrics/cascade_eval.json", "metrics/limen.json", "metrics/refiner.json"
CASCADE_ROWS = {  # the row of docs/cascade.md's v3 results table -> the metrics' label
    "| `coarse_only` |": "coarse",
    "| `coarse_more` (equal": "control",
    "| `skip_coarse` (no-draft": "skip_coarse",
    "| `always_refine` (reads": "refined",
    "| gated cascade (LIMEN": "cascade",
    "| oracle gate (refines": "oracle",
    "| gated cascade over the no-draft": "nodraft_cascade",
    "| oracle gate over the no-draft": "nodraft_oracle",
}


def _prefixed(metric: str, key: str) -> str:
    """`em_cascade` for `cascade`, `nodraft_em_cascade` for `nodraft_cascade` (a baseline's prefixed metrics)."""
    prefix, _, label = key.rpartition("_") if key.startswith("nodraft_") else ("", "", key)
    return f"{prefix}_{metric}_{label}" if prefix else f"{metric}_{label}"


AC, ABL = "metrics/acoc.json", "benchmarks/results/acoc_ablations.json"
BIG, FORGET = "benchmarks/results/acoc_budget3000.json", "benchmarks/results/acoc_forgetting.json"
DECAY = "benchmarks/results/acoc_decay_after_growth.json"
ACOC_ARMS = {"S": "| S (static small) |", "L": "| L (static large) |", "G": "| G (fixed splits) |",
             "A": "| A (adaptive ACOC) |"}  # fmt: skip
ACOC_FIGURES = [
    Figure("docs/acoc.md", AC, "flops.budget", "budget {:.1f} GFLOPs", scale=1e-9),
    Figure("docs/acoc.md", AC, "flops.ratio_L_over_S", "L's step costs {:.2f}× S's"),
    *(Figure("docs/acoc.md", AC, f"arms.{arm}.em", f"{row} {{:.1f}} % |") for arm, row in ACOC_ARMS.items()),
    *(Figure("docs/acoc.md", AC, f"arms.{arm}.val_loss_median", "% | {:.4f} |", line=row)
      for arm, row in ACOC_ARMS.items()),
    *(Figure("docs/acoc.md", AC, f"arms.{arm}.saving_median", f"| {{:.1f}} % ({arm})", scale=100.0) for arm in "SGA"),
    Figure("docs/acoc.md", AC, "bars.G_saving_median", "| {:.1f} % |", scale=100.0, line="| G: median saving"),
    Figure("docs/acoc.md", AC, "bars.G_saving_positive_seeds", "{:.0f} seeds (saving > 0)"),
    Figure("docs/acoc.md", AC, "bars.G_saving_above_S_seeds", "{:.0f} seeds (above S)"),
    Figure("docs/acoc.md", AC, "bars.G_final_within_1pct_of_L_seeds", "{:.0f} seeds (within 1 %)"),
    Figure("docs/acoc.md", AC, "bars.G_beats_S_seeds", "{:.0f} seeds (G below S)"),
    Figure("docs/acoc.md", AC, "bars.L_beats_S_seeds", "{:.0f} seeds (L below S)"),
    Figure("docs/acoc.md", AC, "bars.G_max_growth_jump_pct", "max {:.6f} %"),
    *(
        Figure("docs/acoc.md", AC, f"em_differences.{pair}.{key}", template, line=f"({label})")
        for pair, label in (("A_minus_G", "A − G"), ("G_minus_L", "G − L"))
        for key, template in (("estimate", "| {:.1f} ["), ("low", "[{:.1f},"), ("high", ", {:.1f}]"))
    ),
    Figure("docs/acoc.md", AC, "stage_seconds", "{:.0f} s (stage)"),
    *(
        Figure("docs/acoc.md", ABL, f"ablations.{extra}.{key}", template.replace("X", extra))
        for extra in ("penalty", "forced_routing", "new_lr", "soup", "ewc", "replay")
        for key, template in (("val_loss_delta_mean", "| {:.4f} (X)"), ("em_delta_mean", "| {:.2f} pts (X)"))
    ),
    Figure("docs/acoc.md", DECAY, "bars.G_saving_median", "| {:.1f} % (decayed G)", scale=100.0),
    Figure("docs/acoc.md", DECAY, "bars.G_saving_above_S_seeds", "| {:.0f} of 5 seeds (decayed G vs S saving)"),
    Figure("docs/acoc.md", DECAY, "bars.G_beats_S_seeds", "| {:.0f} of 5 seeds (decayed G vs S loss)"),
    Figure("docs/acoc.md", DECAY, "bars.G_final_within_1pct_of_L_seeds", "| {:.0f} of 5 seeds (decayed G vs L loss)"),
    Figure("docs/acoc.md", BIG, "bars.L_beats_S_seeds", "| {:.0f} of 3 seeds (L vs S)"),
    Figure("docs/acoc.md", BIG, "bars.G_saving_median", "| {:.1f} % (budget 3000)", scale=100.0),
    Figure("docs/acoc.md", BIG, "bars.G_saving_above_S_seeds", "| {:.0f} of 3 seeds (G vs S saving)"),
    Figure("docs/acoc.md", BIG, "bars.G_beats_S_seeds", "| {:.0f} of 3 seeds (G vs S loss)"),
    Figure("docs/acoc.md", BIG, "bars.G_final_within_1pct_of_L_seeds", "| {:.0f} of 3 seeds (G vs L loss)"),
    Figure("docs/acoc.md", BIG, "wall_seconds", "no A; {:.0f} s of wall time"),
    Figure("docs/acoc.md", BIG, "arms.S.em", "| {:.1f} % (S 3000)"),
    Figure("docs/acoc.md", BIG, "arms.L.em", "/ {:.1f} % (L 3000)"),
    Figure("docs/acoc.md", BIG, "arms.G.em", "/ {:.1f} % (G 3000)"),
    *(
        Figure("docs/acoc.md", FORGET, f"models.{name}.{key}", template.replace("X", name))
        for name in ("acoc", "static_initial", "static_final")
        for key, template in (("forgetting", "| {:.1f} (X)"), ("old_loss_rise", "| {:.3f} (X rise)"))
    ),
    Figure("docs/acoc.md", AC, "adaptive.cycles", "Over {:.0f} cycles"),
    Figure("docs/acoc.md", AC, "adaptive.max_saturation_min", "ranged from {:.2f} to"),
    Figure("docs/acoc.md", AC, "adaptive.max_saturation_max", "to {:.2f}, entirely"),
    *(
        Figure("docs/acoc.md", AC, f"adaptive.{key}", template)
        for key, template in (
            ("signal_stagnation", "stagnation fired {:.0f} times"), ("signal_saturation", "saturation {:.0f} times"),
            ("signal_vote", "the vote {:.0f} times"), ("splits", "A split {:.0f} times"),
            ("widens", "widened {:.0f} times"), ("prunes", "pruned {:.0f} times"), ("merges", "merged {:.0f} times"),
        )
    ),
]  # fmt: skip

CASCADE_FIGURES = [
    *(
        Figure("docs/cascade.md", CAS, _prefixed("em", key), "| {:.2f} % |", line=row)
        for row, key in CASCADE_ROWS.items()
    ),
    *(
        Figure("docs/cascade.md", CAS, _prefixed("flops_ratio", key), "| ×{:.2f} |", line=row)
        for row, key in CASCADE_ROWS.items()
    ),
    Figure("docs/cascade.md", CAS, "break_rate_cascade", "break rate {:.2f} % of"),
    Figure("docs/cascade.md", CAS, "fix_rate_cascade", "fix rate {:.2f} % of"),
    *(
        Figure("docs/cascade.md", CAS, f"{key}{part}", template, line=line)
        for key, line in (
            ("draft_effect", "- Reading the draft"),
            ("gate_vs_skip_coarse", "- Gated cascade minus skip_coarse"),
            ("gate_vs_oracle", "- Gated cascade minus the oracle"),
        )
        for part, template in (
            ("", "): {:.2f} points" if key == "draft_effect" else ": {:.2f} points"),
            ("_low", "interval [{:.2f},"),
            ("_high", ", {:.2f}]"),
        )
    ),
    Figure("docs/cascade.md", CAS, "limen_auroc", "AUROC {:.3f} for", line="- LIMEN on test"),
    Figure("docs/cascade.md", CAS, "limen_ece", "ECE {:.3f}.", line="- LIMEN on test"),
    Figure("docs/cascade.md", CAS_L, "val_auroc", "AUROC {:.3f} and", line="- LIMEN on val"),
    Figure("docs/cascade.md", CAS_L, "val_ece", "ECE {:.3f} on", line="- LIMEN on val"),
    Figure("docs/cascade.md", CAS_L, "val_worst_case_break_rate", "break rate {:.2f} % on", 100.0),
    Figure("docs/cascade.md", CAS, "router_accuracy", "on test: {:.1f} %"),
    Figure("docs/cascade.md", CAS_R, "router_val_accuracy", "(val: {:.1f} %)"),
    Figure("docs/cascade.md", CAS, "refined_threshold", "threshold {:.6f} chosen on val"),
    Figure("docs/cascade.md", CAS, "val_refined_check_em_change", "(val EM change {:+.2f} points)"),
    Figure("docs/cascade.md", CAS, "refined_fallback_rate", "answer on {:.2f} % of the refined"),
    Figure("docs/cascade.md", CAS, "refined_check_saved", "saving {:.0f} right answers"),
    Figure("docs/cascade.md", CAS, "refined_check_lost", "and losing {:.0f} (net"),
    Figure("docs/cascade.md", CAS, "refined_check_em_change", "(net {:+.2f} points)"),
    Figure("docs/cascade.md", CAS, "coarse_solvable_share", "test mix: {:.1f} %."),
    Figure("docs/cascade.md", "plots/refiner/timing.json", "stage_seconds", "Refiner stage: {:.0f} s inside"),
    Figure("docs/cascade.md", CAS, "nodraft_break_rate_cascade", "break rate {:.2f} % (its own"),
    Figure(
        "docs/cascade.md",
        CAS,
        "nodraft_gate_vs_skip_coarse",
        "skip_coarse: {:.2f} points",
        line="over the no-draft refiner: break",
    ),
    Figure(
        "docs/cascade.md",
        CAS,
        "nodraft_gate_vs_skip_coarse_low",
        "interval [{:.2f},",
        line="over the no-draft refiner: break",
    ),
    Figure(
        "docs/cascade.md", CAS, "nodraft_gate_vs_skip_coarse_high", ", {:.2f}]", line="over the no-draft refiner: break"
    ),
    Figure("docs/cascade.md", CAS_R, "val_refined_em_mul", "the draft, mul {:.1f} %"),
    Figure("docs/cascade.md", CAS_R, "val_refined_em_word", "% and word {:.1f} %; without"),
    Figure("docs/cascade.md", CAS_R, "val_nodraft_refined_em_mul", "without it, mul {:.1f} %"),
    Figure(
        "docs/cascade.md",
        CAS_R,
        "val_nodraft_refined_em_word",
        "% and word {:.1f} %.",
        line="Val exact match of the refiners",
    ),
]

FIGURES = [
    Figure("docs/sigma.md", PRE, "sigma_test_ppl", "| **{:.3f}** |", line="bar: SIGMA within 10 %"),
    Figure("docs/sigma.md", PRE, "baseline_test_ppl", "| {:.3f} (ratio"),
    Figure("docs/sigma.md", PRE_D, "ppl_ratio", "(ratio **{:.3f}**)"),
    Figure("docs/sigma.md", PRE, "sigma_em", "test | {:.1f} % |", line="| exact match, all test |"),
    Figure("docs/sigma.md", PRE, "baseline_em", "% | {:.1f} % |", line="| exact match, all test |"),
    Figure("docs/sigma.md", PRE, "sigma_params", "| parameters | {:,.0f} |"),
    Figure("docs/sigma.md", PRE, "baseline_params", "| {:,.0f} (gap"),
    Figure(
        "docs/sigma.md", PRE_T, "stage_seconds", "| **{:.0f} s** | – |", line="`stage_seconds` in `plots/sigma_pretrain"
    ),
    Figure("docs/sigma.md", PRE_T, "sigma_train_seconds", "796 k, {:.0f} s |"),
    Figure("docs/sigma.md", PRE_T, "baseline_train_seconds", "796 k, {:.0f} s (in a second process"),
    Figure("docs/sigma.md", RL_D, "start_heldout_reward", "| {:.3f} |", line="bar: end > start"),
    Figure("docs/sigma.md", RL_D, "end_heldout_reward", "| **{:.3f}** |", line="bar: end > start"),
    Figure("docs/sigma.md", RL_D, "before_em", "| {:.1f} % |", line="bar: after ≥ before"),
    Figure("docs/sigma.md", RL, "after_em", "| **{:.1f} %** |"),
    Figure("docs/sigma.md", RL_D, "before_code_pass", "passed) | {:.1f} % |", line="| code pass rate on test"),
    Figure("docs/sigma.md", RL_D, "after_code_pass", "% | {:.1f} % |", line="| code pass rate on test"),
    Figure("docs/sigma.md", RL_D, "draft_acceptance_rate", "acceptance **{:.1f} %**", 100.0),
    Figure("docs/sigma.md", RL, "draft_tokens_per_forward", "{:.2f} tokens per forward, wall"),
    Figure("docs/sigma.md", RL_T, "draft_speedup", "wall speed-up **{:.2f}×**"),
    Figure("docs/sigma.md", RL_T, "wall_seconds", "**{:.0f} s inside the stage**"),
    Figure("docs/sigma.md", RL_T, "train_seconds", "(training {:.0f} s)"),
    Figure("docs/hybrid_rnn.md", HYB, "em", "| {:.2f} % / **"),
    Figure("docs/hybrid_rnn.md", HYB_D, "beam_em", "/ **{:.2f} %** /"),
    Figure("docs/hybrid_rnn.md", HYB_D, "sample_em", "/ {:.2f} % |", line="greedy / beam 4 / sampled"),
    Figure("docs/hybrid_rnn.md", HYB, "test_ppl", "| {:.2f} | 2.53 |"),
    Figure("docs/hybrid_rnn.md", HYB_T, "train_seconds", "4,000 steps, {:.0f} s,"),
    Figure("docs/hybrid_rnn.md", HYB_T, "train_tokens_per_s", "{:.1f} k tokens/s", 1e-3),
    Figure("docs/hybrid_rnn.md", "plots/coarse_sft/timing.json", "train_seconds", "8,000 steps, {:.0f} s |"),
    # docs/lego.md (lego_phase1 → lego_hard_examples → lego_phase2)
    Figure("docs/lego.md", L2, "shallow_ratio", "exit share **{:.3f}**"),
    Figure("docs/lego.md", L2, "val_shallow_ratio", "val exit share {:.3f}"),
    Figure("docs/lego.md", L2, "ppl_ratio_own_full_depth", "own-depth ratio **{:.3f}**"),
    Figure("docs/lego.md", L2, "ppl_ratio", "baseline ratio **{:.3f}**"),
    Figure("docs/lego.md", L2, "ppl", "routed ppl {:.3f}"),
    Figure("docs/lego.md", L2, "full_depth_ppl", "full-depth ppl {:.3f}"),
    Figure("docs/lego.md", L2, "shallow_ppl", "shallow ppl {:.3f}"),
    Figure("docs/lego.md", L2, "baseline_ppl", "baseline ppl {:.3f}"),
    Figure("docs/lego.md", L2, "compute_cost", "compute **{:.3f}**"),
    Figure("docs/lego.md", L2, "em", "routed EM {:.1f} %"),
    Figure("docs/lego.md", L2, "full_depth_em", "full-depth EM {:.1f} %"),
    Figure("docs/lego.md", L2, "baseline_em", "baseline EM {:.1f} %"),
    Figure("docs/lego.md", L2, "full_depth_em_add", "| add {:.1f} %"),
    Figure("docs/lego.md", L2, "full_depth_em_sub", ", sub {:.1f} % |"),
    Figure("docs/lego.md", L2, "baseline_em_add", "baseline add {:.1f} %"),
    Figure("docs/lego.md", L2, "baseline_em_sub", "baseline sub {:.1f} %"),
    Figure("docs/lego.md", L2, "layerskip_ppl_at_lego_share", "LayerSkip ppl {:.3f}"),
    Figure("docs/lego.md", L2, "layerskip_shallow_ratio_at_lego_share", "at exit share {:.3f} |"),
    Figure("docs/lego.md", L2, "layerskip_ppl", "LayerSkip own {:.3f}"),
    Figure("docs/lego.md", L2, "layerskip_shallow_ratio", " at {:.3f} |", line="LayerSkip own"),
    Figure("docs/lego.md", L2, "layerskip_full_depth_ppl", "LayerSkip full {:.3f}"),
    Figure("docs/lego.md", L2, "layerskip_em", ", EM {:.1f} % |", line="LayerSkip full"),
    Figure("docs/lego.md", L2, "lego_train_flops", "LEGO {:.2f} × 10^12 FLOPs", scale=1e-12),
    Figure("docs/lego.md", L2, "baseline_flops_ratio", "baseline / LEGO {:.3f}"),
    Figure("docs/lego.md", L1, "steps", "phase-1 steps {:.0f}"),
    *CASCADE_FIGURES,
    *ACOC_FIGURES,
]


def main() -> None:
    """`python -m cascadelab.report.doc_figures [--write]`: list (or rewrite) the figures that disagree."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite stale figures in place")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args()
    try:
        lines = refresh(FIGURES, args.root) if args.write else disagreements(FIGURES, args.root)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    print("\n".join(lines) or "every figure agrees with its file")
    raise SystemExit(1 if lines and not args.write else 0)


if __name__ == "__main__":
    main()
