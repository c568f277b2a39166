"""The growth study's outputs from synthetic runs with known curves: savings, bars, items, curve table."""

import pytest

from cascadelab.config import ACOCParams
from cascadelab.pipeline.acoc_outputs import (
    adaptive_figures,
    curve_series,
    curve_table,
    event_rows,
    item_rows,
    study_figures,
)
from cascadelab.training.acoc_arms import ArmRun

BUDGET = 10.0


def _run(arm: str, seed: int, scale: float, floor: float, correct: list[bool]) -> ArmRun:
    """Val loss falling linearly from 2 by 0.1 per `scale` FLOPs, never below `floor`."""
    curve = [{"step": i, "flops": float(i), "val_loss": max(floor, 2.0 - 0.1 * i / scale)} for i in range(11)]
    items = [{"id": f"t{i}", "task": "add", "correct": c} for i, c in enumerate(correct)]
    metrics = {
        "em": 100.0 * sum(correct) / len(correct),
        "em_add": 100.0 * sum(correct) / len(correct),
        "val_loss": curve[-1]["val_loss"],
        "params": {"S": 10.0, "L": 40.0, "G": 40.0}[arm],
        "train_flops": BUDGET,
        "budget_flops": BUDGET,
        "train_seconds": 1.0,
        "run_seconds": 2.0,
    }
    events = [{"type": "split_all", "relative_change": 1e-7}] if arm == "G" else []
    return ArmRun(arm, seed, curve, events, metrics, items)


@pytest.fixture
def runs():
    out = {}
    for seed in (0, 1, 2):
        out["L", seed] = _run("L", seed, 1.0, 0.5, [True, True])
        out["G", seed] = _run("G", seed, 0.5, 0.45 if seed else 1.2, [True, False])  # twice as fast as L
        out["S", seed] = _run("S", seed, 2.0, 0.9, [False, False])  # half as fast, and stuck at 0.9
    return out


def _params() -> ACOCParams:
    return ACOCParams(seeds=[0, 1, 2], study={"target_fraction": 0.6, "smooth_fraction": 0.0})


def test_savings_and_bars_from_curves_with_a_known_answer(runs):
    figures = study_figures(_params(), runs, {"budget": BUDGET})
    seed = figures["seeds"]["1"]
    assert seed["target_loss"] == pytest.approx(1.4)  # L at 60 % of the budget
    assert seed["G"]["saving"] == pytest.approx(0.5) and seed["S"]["saving"] is None  # S never gets to 1.4
    assert figures["arms"]["G"]["saving_median"] == pytest.approx(0.5)
    assert figures["arms"]["G"]["em"] == 50.0 and figures["arms"]["S"]["em_add"] == 0.0
    bars = figures["bars"]
    assert bars["G_saving_positive_seeds"] == 3 and bars["G_saving_above_S_seeds"] == 3
    assert bars["G_beats_S_seeds"] == 3 and bars["L_beats_S_seeds"] == 3
    assert bars["G_final_within_1pct_of_L_seeds"] == 2  # seed 0's G stalls at 1.2 against L's final 1.0
    assert bars["G_max_growth_jump_pct"] == pytest.approx(1e-5)
    difference = figures["em_differences"]["G_minus_S"]
    assert difference["estimate"] == 50.0 and difference["low"] <= 50.0 <= difference["high"]
    assert "A_minus_G" not in figures["em_differences"]  # no A among these runs
    assert bars["met"] == {
        "saving_median_20pct": True, "saving_positive": True, "saving_above_S": True,
        "final_within_1pct_of_L": False, "beats_S": True, "growth_jump_1pct": True,
    }  # fmt: skip


def test_an_arm_that_never_reaches_l_star_counts_as_no_saving(runs):
    for seed in (0, 1, 2):
        runs["G", seed] = _run("G", seed, 0.5, 1.9, [False, False])
    figures = study_figures(_params(), runs, {"budget": BUDGET})
    assert figures["seeds"]["0"]["G"]["reach_flops"] is None and figures["seeds"]["0"]["G"]["saving"] is None
    assert figures["arms"]["G"]["never_reached_seeds"] == 3 and figures["bars"]["G_saving_median"] is None
    assert figures["bars"]["met"]["saving_positive"] is False


def test_items_pair_every_arm_per_seed_and_test_item(runs):
    rows = item_rows(runs)
    assert len(rows) == 6 and rows[0] == {"id": "0:t0", "seed": 0, "task": "add", "S": False, "L": True, "G": True}
    assert [r["id"] for r in rows[:3]] == ["0:t0", "0:t1", "1:t0"]
    assert [e["arm"] for e in event_rows(runs)] == ["G", "G", "G"]


def test_the_curve_table_averages_seeds_on_one_flop_grid(runs):
    table = curve_table(_params(), runs)
    assert list(table[0]) == ["flops", "S", "L", "G"] and len(table) == 40
    assert table[-1]["flops"] == BUDGET and table[-1]["L"] == pytest.approx(1.0)
    assert table[-1]["G"] == pytest.approx((1.2 + 0.45 + 0.45) / 3)


def test_a_decisions_growth_causes_are_valid_metric_names():
    decisions = [
        {"type": "decision", "expand": True, "signals": {"stagnation": True, "saturation": True, "vote": False},
         "max_saturation": 0.5, "expand_votes": 1, "improvement": 0.01},
        {"type": "decision", "expand": False, "signals": {"stagnation": False, "saturation": False, "vote": True},
         "max_saturation": 0.3, "expand_votes": 4, "improvement": 0.2},
    ]  # fmt: skip
    run = ArmRun("A", 0, events=decisions, metrics={"cycles": 2.0, "signal_stagnation": 1.0, "signal_vote": 1.0})
    figures = adaptive_figures({("A", 0): run})
    assert figures["growth_causes"] == {"stagnation_and_saturation": 1}
    assert figures["signal_vote"] == 1.0 and (figures["max_saturation_min"], figures["max_saturation_max"]) == (
        0.3,
        0.5,
    )
    assert curve_series({("A", 0): _run("L", 0, 1.0, 0.5, [True])})[1] == (1, {"A/seed0/val_loss": 1.9})
