import importlib.util
import math

import pytest
import torch
from cascade_doubles import ScriptedCascade, ScriptedRefiner

from cascadelab.cascade.evaluation import (
    SweepData,
    chosen_refined_threshold,
    evaluate_cascade,
    flop_counter,
    oracle_gate,
    paired_effects,
    plot_accuracy_vs_compute,
    recalibrated_family_thresholds,
    recalibrated_threshold,
    refined_check,
    run_cascade_eval,
    sweep_data,
    sweep_thresholds,
    text_metrics,
    threshold_sweep,
    traffic_metrics,
)
from cascadelab.cascade.limen import CHEAP_FEATURES, Limen, LimenGate
from cascadelab.config import CascadeEvalSettings, CascadeSettings, LimenSettings

RECORDS = [
    {"id": "a", "task": "add", "difficulty": 1, "prompt": "1+1=", "answer": "2"},
    {"id": "b", "task": "mul", "difficulty": 1, "prompt": "7*38=", "answer": "266"},
    {"id": "c", "task": "mul", "difficulty": 1, "prompt": "8*38=", "answer": "304"},
    {"id": "d", "task": "add", "difficulty": 1, "prompt": "2+2=", "answer": "4"},
]
COARSE = {"1+1=": "+20", "7*38=": "+000", "8*38=": "+403", "2+2=": "four"}
SCRIPT = {"+20": "1:+20", "+000": "650,012:+662", "+403": "1:+000", "four": "1:+40", "": "1:+20"}


@pytest.fixture()
def cascade(tiny_model, tokenizer, verifier):
    names = [*CHEAP_FEATURES, "task_add", "task_mul"]
    weight = torch.tensor([1.0 if n == "answer_chars" else 0.0 for n in names])
    gate = LimenGate(weight, torch.tensor(-4.5), torch.zeros(len(names)), torch.ones(len(names)))
    limen = Limen(
        tiny_model, tokenizer, verifier, LimenSettings(use_hidden=False, use_task=True), ["add", "mul"], gate, 0.3
    )
    refiner = ScriptedRefiner(tiny_model, tokenizer, SCRIPT)
    result = ScriptedCascade(tiny_model, refiner, limen, tokenizer, CascadeSettings())
    result.coarse_table = COARSE
    return result


def test_mode_metrics_fix_break_and_compute(cascade, verifier):
    outcome = evaluate_cascade(cascade, RECORDS, verifier.verify, CascadeEvalSettings(sweep_points=5))
    m = outcome.metrics
    assert (m["em_coarse"], m["em_refined"], m["em_cascade"], m["em_skip_coarse"]) == (
        50.0,
        50.0,
        50.0,
        25.0,
    )  # add items are not routed: kept
    assert (m["fix_rate_refined"], m["break_rate_refined"]) == (50.0, 50.0)
    assert (m["fix_rate_cascade"], m["break_rate_cascade"]) == (50.0, 50.0)
    assert (m["em_cascade_mul"], m["fix_rate_cascade_mul"], m["break_rate_cascade_mul"]) == (50.0, 100.0, 100.0)
    assert math.isnan(m["fix_rate_cascade_add"]) is False and m["em_cascade_add"] == 50.0
    assert m["tokens_per_item_coarse"] == 4.75  # "+20" 3 + EOS, "+000" 5, "+403" 5, "four" 5
    assert m["tokens_per_item_cascade"] == pytest.approx((19 + 13 + 7) / 4)
    assert m["tokens_ratio_cascade"] == pytest.approx(9.75 / 4.75)
    assert m["tokens_ratio_coarse"] == 1.0 and m["tokens_per_item_skip_coarse"] == pytest.approx(
        5.25
    )  # add items: coarse only
    assert m["limen_coarse_approval_rate"] == 25.0 and m["refined_share"] == 50.0 and m["silence_rate"] == 25.0
    assert m["refinement_success_rate"] == 50.0 and m["limen_refined_approval_rate"] == 100.0
    assert m["tension_before"] == pytest.approx(1 / (1 + math.exp(0.5)), abs=1e-6)
    assert [p["final"] for p in outcome.predictions] == ["+20", "650,012:+662", "1:+000", ""]


def test_sweep_on_the_scripted_cascade(cascade, verifier):
    base = cascade.generate([r["prompt"] for r in RECORDS], "coarse_only", [r["task"] for r in RECORDS])
    data = sweep_data(cascade, RECORDS, base, verifier.verify)
    assert data.routed == [False, True, True, False]
    assert data.coarse_tension[3] == 1.0  # rule violation
    assert data.refined_tokens == [0, 13, 7, 0]
    points = threshold_sweep(data, sweep_thresholds(data.coarse_tension, 6))
    assert points[0] == {"threshold": 2.0, "em": 50.0, "tokens_per_item": 4.75, "refined_share": 0.0}
    assert points[-1] == {"threshold": -1.0, "em": 50.0, "tokens_per_item": 9.75, "refined_share": 50.0}
    # The right item at tension 0.378 breaks when refined: budget 0 keeps both mul items with the coarse model.
    assert recalibrated_threshold(data, 0.0) == pytest.approx(1 / (1 + math.exp(0.5)), abs=1e-6)


def test_sweep_compute_axis_is_monotone_and_spans_never_to_always():
    data = SweepData(
        coarse_correct=[True, False, False, True, False],
        refined_correct=[True, True, False, False, True],
        coarse_tension=[0.1, 0.9, 0.5, 0.3, 0.7],
        refined_approved=[True, True, True, True, False],
        routed=[True] * 5,
        coarse_tokens=[4] * 5,
        refined_tokens=[10, 12, 14, 16, 18],
    )
    thresholds = sweep_thresholds(data.coarse_tension, 7)
    assert thresholds[0] == math.inf and thresholds[-1] == -math.inf
    points = threshold_sweep(data, thresholds)
    tokens = [p["tokens_per_item"] for p in points]
    assert tokens == sorted(tokens) and tokens[0] == 4.0 and tokens[-1] == 4 + 70 / 5
    # Never refine, the 0.9 item fixed, 0.7 refused by LIMEN, 0.5 stays wrong, 0.3 broken, 0.1 kept right.
    assert [p["em"] for p in points] == [40.0, 40.0, 60.0, 60.0, 60.0, 40.0, 40.0]


def test_family_thresholds_spend_the_break_budget_where_it_buys_fixes():
    # mul: 0.9 wrong→fixed, 0.8 right→broken, 0.7 and 0.65 wrong→fixed; word: 0.6, 0.5 wrong→fixed, 0.1
    # right→kept; two right add items are not routed. With no break allowed one global threshold stops
    # above 0.8 and refines only the 0.9 item; per family, mul stops there and word refines what it fixes.
    data = SweepData(
        coarse_correct=[False, True, False, False, False, False, True, True, True],
        refined_correct=[True, False, True, True, True, True, True, False, False],
        coarse_tension=[0.9, 0.8, 0.7, 0.65, 0.6, 0.5, 0.1, 0.2, 0.3],
        refined_approved=[True] * 7 + [False, False],
        routed=[True] * 7 + [False, False],
        coarse_tokens=[4] * 9,
        refined_tokens=[10] * 7 + [0, 0],
        tasks=["mul"] * 4 + ["word"] * 3 + ["add"] * 2,
    )
    assert recalibrated_threshold(data, 0.0) == 0.8
    # Word's 0.1 item gains nothing when refined: the tie goes to less refinement (threshold 0.1, not below).
    assert recalibrated_family_thresholds(data, 0.0) == {"mul": 0.8, "word": 0.1}
    # One break allowed (1 of 4 right items): mul sends every item, one break buys two more fixes.
    assert recalibrated_family_thresholds(data, 0.25) == {"mul": pytest.approx(0.65 - 1e-6), "word": 0.1}
    with pytest.raises(ValueError, match="the sweep data has no task per item"):
        recalibrated_family_thresholds(SweepData([True], [True], [0.5], [True], [True], [4], [10]), 0.0)


def test_text_metrics_where_installed():
    metrics = text_metrics(["1,2:+30", "abc"], ["1,2:+30", "abc"])
    if importlib.util.find_spec("sacrebleu"):
        assert metrics["refined_vs_coarse_bleu"] == pytest.approx(100.0)
    if importlib.util.find_spec("rouge_score"):
        assert metrics["refined_vs_coarse_rougeL"] == pytest.approx(100.0)


def test_plot_writes_a_png(tmp_path):
    curves = {"steps": [{"tokens_per_item": 4.0, "em": 30.0}, {"tokens_per_item": 9.0, "em": 60.0}]}
    plot_accuracy_vs_compute(curves, tmp_path / "plots" / "curve.png", {"gated (threshold 0.50)": (6.0, 45.0)})
    assert (tmp_path / "plots" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_cascade_eval_recalibrates_compares_with_control_and_baselines(cascade, tiny_model, verifier):
    baseline = ScriptedCascade(tiny_model, cascade.refiner, cascade.limen, cascade.tokenizer, CascadeSettings())
    baseline.coarse_table = COARSE
    settings = CascadeEvalSettings(modes=["coarse_only", "normal"], break_rate_budget=0.0, sweep_points=4)
    outcome = run_cascade_eval(
        cascade, RECORDS, RECORDS, verifier.verify, settings, control_model=tiny_model, baselines={"answer": baseline}
    )
    m = outcome.metrics
    # Budget 0: the right mul item at tension 0.378 would break, so nothing routed is refined any more.
    assert m["threshold"] == pytest.approx(1 / (1 + math.exp(0.5)), abs=1e-6)
    assert m["em_cascade"] == 50.0 and m["break_rate_cascade"] == 0.0
    assert m["answer_threshold"] == m["threshold"] and m["answer_em_cascade"] == 50.0
    assert m["cascade_minus_control"] == m["em_cascade"] - m["em_control"]
    assert m["cascade_minus_control_mul"] == m["em_cascade_mul"] - m["em_control_mul"]
    assert sorted(outcome.curves) == ["answer", "cascade"]
    assert m["refiner_bytes"] > 0 and m["peak_memory_mb"] > 0


def test_the_oracle_gate_is_above_every_threshold_of_the_sweep(cascade, verifier):
    base = cascade.generate([r["prompt"] for r in RECORDS], "coarse_only")
    data = sweep_data(cascade, RECORDS, base, verifier.verify)
    oracle, correct = oracle_gate(data)
    points = threshold_sweep(data, sweep_thresholds(data.coarse_tension, 6))
    assert oracle["em"] == 75.0 and correct == [True, True, True, False]  # b fixed; c right, so never sent
    assert all(oracle["em"] >= p["em"] for p in points)
    assert oracle["tokens_per_item"] == pytest.approx((4 + 5 + 13 + 5 + 5) / 4)  # refines b alone


def test_sweep_and_flops_ignore_the_records_labels(cascade, verifier):
    scrambled = [{**r, "task": {"add": "mul", "mul": "add"}[r["task"]]} for r in RECORDS]
    base = cascade.generate([r["prompt"] for r in RECORDS], "coarse_only")
    counter = flop_counter(cascade)
    plain, other = (sweep_data(cascade, rows, base, verifier.verify, counter) for rows in (RECORDS, scrambled))
    assert plain.routed == other.routed == [False, True, True, False]
    assert plain.coarse_tension == other.coarse_tension and plain.refined_flops == other.refined_flops
    params = counter.coarse_params
    assert plain.coarse_flops[0] == 2.0 * params * (4 + 4)  # "1+1=" read, "+20" + EOS written
    assert plain.refined_flops[0] == 0.0 and plain.refined_flops[1] > 0.0


def test_paired_effects_give_the_difference_and_an_interval_around_it():
    items = [{"refined_correct": k % 2 == 0, "skip_coarse_correct": k % 4 == 0} for k in range(40)]
    effects = paired_effects(items, resamples=500)
    assert effects["draft_effect"] == pytest.approx(25.0)
    assert effects["draft_effect_low"] < 25.0 < effects["draft_effect_high"]
    assert "gate_vs_skip_coarse" not in effects  # no cascade column


def test_traffic_reweights_families_and_finds_the_break_even_share():
    def row(task, coarse, gated, skip, gated_flops):
        return {"task": task, "coarse_correct": coarse, "cascade_correct": gated, "cascade_flops": gated_flops,
                "skip_coarse_correct": skip, "skip_coarse_flops": 10.0}  # fmt: skip

    # coarse-right items cost the gate 2 (no refiner), coarse-wrong ones 14 (coarse + LIMEN + refiner)
    items = [row("add", True, True, True, 2.0)] * 2 + [row("mul", False, True, True, 14.0)] * 2
    m = traffic_metrics(items, {"add": 3.0, "mul": 1.0})
    assert m["em_traffic_cascade"] == 100.0 and m["flops_per_item_traffic_cascade"] == pytest.approx(5.0)
    assert m["break_even_share_cascade"] == 34.0  # 2s + 14(1 - s) < 10 from s > 1/3
    assert m["coarse_solvable_share"] == 50.0
    with pytest.raises(ValueError, match=r"cascade_eval\.traffic: no test items of word"):
        traffic_metrics(items, {"word": 1.0})


def test_evaluation_writes_the_effects_against_skip_coarse_and_the_oracle(cascade, verifier):
    m = evaluate_cascade(cascade, RECORDS, verifier.verify, CascadeEvalSettings(sweep_points=5)).metrics
    assert m["draft_effect"] == m["em_refined"] - m["em_skip_coarse"]
    assert m["gate_vs_oracle"] == m["em_cascade"] - m["em_oracle"] and m["gate_vs_oracle_high"] <= 0.0


def test_the_refined_check_counts_fallbacks_and_val_chooses_the_threshold_with_the_best_em():
    # Four items sent on (tension above the 0.5 gate), one kept: 0 is fixed by the refiner (refined tension
    # 0.2), 1 is broken by it (0.8), 2 is fixed (0.6), 3 is malformed (rule-refused at every threshold).
    data = SweepData(
        coarse_correct=[False, True, False, False, True],
        refined_correct=[True, False, True, False, False],
        coarse_tension=[0.9, 0.9, 0.9, 0.9, 0.3],
        refined_approved=[True, True, True, False, False],
        routed=[True] * 5,
        coarse_tokens=[4] * 5,
        refined_tokens=[10] * 5,
        refined_tension=[0.2, 0.8, 0.6, math.inf, 0.1],
        gate_thresholds=[0.5] * 5,
    )
    assert refined_check(data, 1.0) == {
        "refined_fallback_rate": 0.0,
        "refined_check_saved": 0.0,
        "refined_check_lost": 0.0,
        "refined_check_em_change": 0.0,
    }
    # Refusing above 0.6 falls back on item 1 alone: its right coarse answer is saved.
    assert refined_check(data, 0.6) == {
        "refined_fallback_rate": 25.0,
        "refined_check_saved": 1.0,
        "refined_check_lost": 0.0,
        "refined_check_em_change": 20.0,
    }
    # Above 0.2 item 2's right refined answer is lost too: no net change; above 0.1 item 0's as well.
    assert refined_check(data, 0.2)["refined_check_em_change"] == 0.0
    assert refined_check(data, 0.1)["refined_check_lost"] == 2.0
    assert chosen_refined_threshold(data) == 0.6
    data.refined_correct = [True, True, True, False, False]  # the refiner never breaks: approve everything
    assert chosen_refined_threshold(data) == 1.0


def test_run_cascade_eval_chooses_the_refined_threshold_on_val_only_when_asked(cascade, verifier):
    settings = CascadeEvalSettings(modes=["coarse_only", "normal"], sweep_points=4)
    chosen = run_cascade_eval(cascade, RECORDS, RECORDS, verifier.verify, settings).metrics
    assert 0.0 <= chosen["refined_threshold"] <= 1.0
    assert {"refined_fallback_rate", "refined_check_em_change", "val_refined_check_em_change"} <= set(chosen)
    assert chosen["val_refined_check_em_change"] >= 0.0  # the choice can always keep 1.0 (no change) on val
    cascade.refined_threshold = None
    fixed = CascadeEvalSettings(modes=["coarse_only", "normal"], sweep_points=4, choose_refined_threshold=False)
    kept = run_cascade_eval(cascade, RECORDS, RECORDS, verifier.verify, fixed).metrics
    assert "refined_threshold" not in kept and kept["refined_fallback_rate"] == 0.0
