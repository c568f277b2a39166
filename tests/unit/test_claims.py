"""The claims table: paired bootstrap intervals, the verdict rule, the entries, and README's generated block."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cascadelab.config import CLAIM_NAMES, ClaimsParams
from cascadelab.eval.bootstrap import paired_bootstrap
from cascadelab.eval.verdict import verdict
from cascadelab.report.claim_defs import SEED_CLAIMS
from cascadelab.report.claims import build_claims
from cascadelab.report.readme import marked_block, spliced
from cascadelab.report.results_page import BEGIN, END


def _difference(means):
    return means["system"] - means["baseline"]


def test_paired_bootstrap_interval_matches_the_normal_theory_of_a_known_difference() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    baseline = rng.random(n) < 0.3
    system = baseline | (rng.random(n) < 0.25)  # paired: the system keeps every baseline hit and adds some
    diff = system.astype(float) - baseline.astype(float)
    columns = {"system": system.astype(float), "baseline": baseline.astype(float)}
    interval = paired_bootstrap(columns, _difference, 2000, 0.95, 7)
    se = diff.std() / np.sqrt(n)  # the known answer: mean difference ± 1.96 standard errors
    assert interval.estimate == pytest.approx(diff.mean())
    assert interval.low == pytest.approx(diff.mean() - 1.96 * se, abs=0.2 * se)
    assert interval.high == pytest.approx(diff.mean() + 1.96 * se, abs=0.2 * se)
    assert paired_bootstrap(columns, _difference, 2000, 0.95, 7) == interval  # seeded


def test_paired_bootstrap_of_a_constant_effect_is_that_effect() -> None:
    base = np.arange(50, dtype=float)
    interval = paired_bootstrap({"system": base + 2.0, "baseline": base}, _difference, 500, 0.9, 1)
    assert (interval.low, interval.high) == pytest.approx((2.0, 2.0))


def test_paired_bootstrap_refuses_columns_of_different_lengths() -> None:
    with pytest.raises(ValueError, match=r"^paired_bootstrap: columns differ in length \(\[2, 3\]\)$"):
        paired_bootstrap({"system": np.ones(3), "baseline": np.ones(2)}, _difference, 100, 0.95, 0)


@pytest.mark.parametrize(
    ("low", "high", "threshold", "direction", "expected"),
    [
        (0.5, 2.0, 0.0, "above", "holds"),
        (-2.0, -0.5, 0.0, "above", "refuted"),
        (-0.5, 2.0, 0.0, "above", "inconclusive"),  # straddles
        (0.0, 0.0, 0.0, "above", "refuted"),  # no effect at all is not an effect above 0
        (0.80, 0.95, 1.0, "below", "holds"),
        (1.01, 1.20, 1.0, "below", "refuted"),
        (0.90, 1.10, 1.0, "below", "inconclusive"),
        (None, None, 0.0, "above", "inconclusive"),  # no interval decides nothing
    ],
)
def test_the_verdict_rule(low, high, threshold, direction, expected) -> None:
    assert verdict(low, high, threshold, direction) == expected


def test_the_verdict_rule_refuses_an_unknown_direction() -> None:
    with pytest.raises(ValueError, match=r"^verdict: direction must be 'above' or 'below' \(got 'up'\)$"):
        verdict(0.0, 1.0, 0.0, "up")


def test_every_seed_claim_has_a_declared_threshold_and_one_definition() -> None:
    names = [spec.name for spec in SEED_CLAIMS]
    assert sorted(names) == sorted(CLAIM_NAMES) and len(set(names)) == len(names)


FIGURES = {
    "coarse_sft": {"em": 50.0, "params": 1000, "train_tokens": 10_000},
    "cascade_eval": {"em_cascade": 75.0, "em_coarse": 50.0, "break_rate_cascade": 0.0, "em_control": 50.0,
                     "em_refined": 75.0, "em_skip_coarse": 50.0, "tokens_per_item_cascade": 3.0,
                     "tokens_per_item_refined": 4.0, "tokens_per_item_coarse": 2.0, "tokens_per_item_skip_coarse": 4.0,
                     "flops_per_item_cascade": 6000.0, "flops_per_item_coarse": 4000.0},
    "refiner": {"train_tokens": 5000, "control_train_tokens": 5000},
}  # fmt: skip
CASCADE_ITEMS = [
    {"id": f"i{k}", "coarse_correct": k % 2 == 0, "cascade_correct": k % 4 != 3, "refined_correct": k % 4 != 3,
     "skip_coarse_correct": k % 2 == 0, "control_correct": k % 2 == 0, "cascade_tokens": 3, "refined_tokens": 4}
    for k in range(40)
]  # fmt: skip


def test_entries_name_their_baseline_and_decide_from_the_items_interval() -> None:
    params = ClaimsParams(cascade_fixes_coarse_errors={"threshold": 0.0})
    table = build_claims(SEED_CLAIMS[:1], FIGURES, {"cascade_eval": CASCADE_ITEMS}, params, 1234)
    (entry,) = table.entries
    assert (entry.system, entry.baseline) == ("Transformer² cascade (gated)", "coarse_only")
    assert entry.effect == pytest.approx(25.0)
    assert entry.interval is not None and 0.0 < entry.interval[0] < 25.0 < entry.interval[1]
    assert entry.verdict == "holds"
    assert entry.compute["system"]["inference_flops_per_item"] == pytest.approx(2 * 1000 * 3.0)
    assert entry.compute["baseline"]["inference_flops_per_item"] == pytest.approx(2 * 1000 * 2.0)


def test_an_entry_without_per_item_data_says_why_and_stays_inconclusive() -> None:
    table = build_claims(SEED_CLAIMS[:1], FIGURES, {"cascade_eval": None}, ClaimsParams(), 1234)
    (entry,) = table.entries
    assert entry.interval is None and entry.verdict == "inconclusive"
    assert entry.interval_note == (
        "not available (plots/cascade_eval/items.jsonl not written: rerun `dvc repro cascade_eval`)"
    )


def test_a_claim_no_stage_measures_is_listed_with_its_reason() -> None:
    bitlinear = next(s for s in SEED_CLAIMS if s.name == "bitlinear_costs_little")
    table = build_claims([bitlinear], {}, {}, ClaimsParams(), 1234)
    assert table.entries == [] and table.unmeasured[0]["name"] == "bitlinear_costs_little"
    assert "full precision only" in table.unmeasured[0]["reason"]


def test_splicing_replaces_only_the_results_block() -> None:
    readme = f"# x\n\n## Results\n\n{BEGIN}\nold 1.0\n{END}\n\n## Next\n"
    new = spliced(readme, f"{BEGIN}\nnew 2.0\n{END}")
    assert new == f"# x\n\n## Results\n\n{BEGIN}\nnew 2.0\n{END}\n\n## Next\n"
    with pytest.raises(ValueError, match=r"^README\.md: no generated results block"):
        marked_block("# no block\n", "README.md")


NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def test_every_number_in_readmes_results_block_comes_from_the_generated_files() -> None:
    results = Path("docs/results.md").read_text(encoding="utf-8")
    block = marked_block(Path("README.md").read_text(encoding="utf-8"), "README.md")
    assert block == marked_block(results, "docs/results.md")  # `make readme` copied it unchanged
    claims = json.loads(Path("metrics/claims.json").read_text(encoding="utf-8"))
    generated = marked_block(results, "docs/results.md")
    for number in NUMBER.findall(block.replace(BEGIN, "").replace(END, "")):
        assert number in generated or number in json.dumps(claims), number
    for entry in claims["claims"]:  # and the generated page shows what claims.json decided
        assert f"(`{entry['name']}`)" in generated and f"**{entry['verdict']}**" in generated


def test_reading_the_draft_is_not_measured_when_the_refiner_never_reads_it() -> None:
    draft = next(s for s in SEED_CLAIMS if s.name == "reading_the_draft_helps")
    figures = {**FIGURES, "params": {"refiner.format.use_coarse": False}}
    table = build_claims([draft], figures, {"cascade_eval": CASCADE_ITEMS}, ClaimsParams(), 1234)
    assert table.entries == [] and "refiner.format.use_coarse: false" in table.unmeasured[0]["reason"]
    table = build_claims([draft], FIGURES, {"cascade_eval": CASCADE_ITEMS}, ClaimsParams(), 1234)
    assert table.entries[0].baseline.startswith("skip_coarse")


def test_every_stage_a_claim_pairs_items_of_is_read_by_the_report_and_a_dep_of_it() -> None:
    from cascadelab.pipeline.report import ITEM_STAGES

    needed = {stage for spec in SEED_CLAIMS if spec.items is not None for stage in spec.items.stages}
    assert needed <= set(ITEM_STAGES)
    report_deps = Path("dvc.yaml").read_text(encoding="utf-8").split("\n  report:\n", 1)[1]
    assert all(f"- plots/{stage}/items.jsonl" in report_deps for stage in ITEM_STAGES)
