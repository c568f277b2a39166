"""The headline table: a few figures per stage in the metrics DVC shows, the rest of the science in details."""

from __future__ import annotations

import json
import re

import pytest

from cascadelab.pipeline.headline import HEADLINE, keep_pattern, split_headline
from cascadelab.pipeline.measurements import is_measurement
from cascadelab.pipeline.paths import PATHS, STAGES
from cascadelab.tracking import flatten


def test_every_stage_lists_two_to_four_headline_figures_none_a_measurement() -> None:
    assert set(HEADLINE) == set(STAGES)
    for stage, keys in HEADLINE.items():
        assert 2 <= len(keys) <= 4, stage
        assert len(set(keys)) == len(keys), stage
        assert not any(is_measurement(key) for key in keys), stage


def test_the_split_keeps_the_headline_keys_with_their_nesting_and_sends_the_rest_to_details() -> None:
    figures = {
        "arms": {"G": {"em": 59.0, "em_add": 49.5}, "L": {"em": 87.0}, "S": {"em": 64.0}},
        "bars": {"G_saving_median": 0.21, "G_beats_S_seeds": 4, "met": {"beats_S": True}},
        "em": 1.0,  # a top-level `em` is not acoc's headline `arms.G.em`
        "events": {},
    }
    headline, details = split_headline("acoc", figures)
    assert headline == {
        "arms": {"G": {"em": 59.0}, "L": {"em": 87.0}},
        "bars": {"G_saving_median": 0.21, "G_beats_S_seeds": 4},
    }
    assert details == {
        "arms": {"G": {"em_add": 49.5}, "S": {"em": 64.0}},
        "bars": {"met": {"beats_S": True}},
        "em": 1.0,
    }


def test_a_headline_key_the_stage_did_not_write_is_left_out() -> None:
    headline, details = split_headline("report", {"models": 13, "coarse_llama_em": 22.9, "claims_holds": 2})
    assert headline == {"claims_holds": 2}
    assert details == {"models": 13, "coarse_llama_em": 22.9}


def test_a_stage_without_an_entry_fails_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"^nope: no headline keys declared \(pipeline/headline.py HEADLINE\)$"):
        split_headline("nope", {"em": 1.0})


@pytest.mark.parametrize("stage", sorted(set(STAGES) - {"report"}))
def test_the_committed_metrics_hold_exactly_the_headline_and_details_the_rest(stage: str) -> None:
    shown = flatten(json.loads(PATHS.metrics_of(stage).read_text(encoding="utf-8")))
    details = flatten(json.loads(PATHS.details_of(stage).read_text(encoding="utf-8")))
    assert set(shown) == set(HEADLINE[stage])  # what `dvc metrics diff` compares
    assert not set(shown) & set(details)


def test_the_headline_columns_of_every_stage_fit_a_screen_and_the_keep_pattern_matches_each() -> None:
    keys = [key for keys in HEADLINE.values() for key in keys]
    assert len(keys) <= 40  # `dvc exp show` adds a column per metric beside Experiment and Created
    pattern = re.compile(keep_pattern())
    assert all(pattern.match(key) and pattern.match(f"metrics/coarse_sft.json:{key}") for key in keys)
    assert not any(pattern.match(name) for name in ("em_add", "coarse_sft.train.max_steps", "src/x.py", "seed"))
