"""Pure helpers of the cascade stages: reliability diagram, error-rate and per-family tables."""

import math

from cascadelab.pipeline.cascade_eval import family_rows, operating_points
from cascadelab.pipeline.cascade_io import StageOutcome
from cascadelab.pipeline.cascade_pairs import error_rate_rows
from cascadelab.pipeline.limen import reliability_rows


def test_reliability_rows_bin_tension_against_the_observed_wrong_rate():
    rows = reliability_rows([0.05, 0.15, 0.95, 1.0, 0.91], [False, True, True, True, False], bins=10)
    assert rows == [
        {"predicted": 0.05, "observed": 0.0, "count": 1.0},
        {"predicted": 0.15, "observed": 1.0, "count": 1.0},
        {"predicted": (0.95 + 1.0 + 0.91) / 3, "observed": 2 / 3, "count": 3.0},  # 1.0 falls in the last bin
    ]


def test_error_rate_rows_one_per_task():
    metrics = {
        "train_coarse_error_add": 1.0,
        "val_coarse_error_add": 2.0,
        "train_coarse_sample_error_add": 3.0,
        "val_coarse_sample_error_add": 4.0,
        "train_coarse_error": 9.0,
    }
    assert error_rate_rows(metrics) == [
        {"task": "add", "train_error": 1.0, "train_sample_error": 3.0, "val_error": 2.0, "val_sample_error": 4.0}
    ]


def test_family_rows_and_strict_json_metrics():
    records = [{"task": "mul"}, {"task": "mul"}, {"task": "add"}]
    metrics = {"em_coarse": 10.0, "em_coarse_mul": 0.0, "em_cascade_mul": 50.0, "break_rate_cascade_mul": math.nan}
    rows = family_rows(metrics, records)
    assert [(r["task"], r["items"]) for r in rows] == [("add", 1), ("mul", 2), ("all", 3)]
    assert rows[1]["cascade"] == 50.0 and math.isnan(rows[0]["coarse"])
    assert StageOutcome(metrics).metrics == {"em_coarse": 10.0, "em_coarse_mul": 0.0, "em_cascade_mul": 50.0}


def test_operating_points_mark_every_baseline_and_the_gated_cascade_at_its_threshold():
    metrics = {"flops_per_item_cascade": 10.5, "em_cascade": 46.4, "threshold": 0.8312}
    metrics |= {"flops_per_item_oracle": 9.0, "em_oracle": 60.0, "flops_per_item_skip_coarse": 8.0}
    assert operating_points(metrics) == {"oracle gate": (9.0, 60.0), "gated cascade (threshold 0.83)": (10.5, 46.4)}
    assert operating_points({"em_cascade": 46.4}) == {}
