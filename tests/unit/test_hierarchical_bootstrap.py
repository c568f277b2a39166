"""The across-seed interval: resample training seeds, then the test items within each drawn seed."""

from __future__ import annotations

import numpy as np
import pytest

from cascadelab.eval.bootstrap import hierarchical_bootstrap, paired_bootstrap


def _difference(means):
    return means["system"] - means["baseline"]


def _constant_seed(effect: float, items: int = 20) -> dict[str, np.ndarray]:
    return {"system": np.full(items, effect), "baseline": np.zeros(items)}


def test_without_item_noise_the_interval_is_the_bootstrap_of_the_seed_means() -> None:
    # Seeds with effects 0, 0, 3 and no item noise: a resample's mean is 3 × (threes drawn) / 3, the threes
    # drawn ~ Binomial(3, 1/3): P(0, 1, 2, 3) = 8/27, 12/27, 6/27, 1/27, so the 95 % interval is [0, 3]
    # (P(<= 2) = 26/27 < 0.975) and the 90 % one [0, 2] (26/27 >= 0.95).
    seeds = [_constant_seed(0.0), _constant_seed(0.0), _constant_seed(3.0)]
    wide = hierarchical_bootstrap(seeds, _difference, 4000, 0.95, 3)
    narrow = hierarchical_bootstrap(seeds, _difference, 4000, 0.90, 3)
    assert (wide.estimate, wide.low, wide.high) == pytest.approx((1.0, 0.0, 3.0))
    assert (narrow.low, narrow.high) == pytest.approx((0.0, 2.0))
    assert (wide.seeds, wide.items) == (3, 60)


def test_seeds_that_agree_give_the_items_interval_narrowed_by_the_seed_count() -> None:
    # Every seed scores the same n items alike: the seed draw adds nothing, and the mean over S independent
    # item resamples has standard error sd / sqrt(n × S), so the interval is ± 1.96 of that.
    rng = np.random.default_rng(0)
    n, count = 500, 3
    baseline = (rng.random(n) < 0.3).astype(float)
    system = np.maximum(baseline, (rng.random(n) < 0.25).astype(float))
    diff = system - baseline
    seeds = [{"system": system, "baseline": baseline}] * count
    interval = hierarchical_bootstrap(seeds, _difference, 2000, 0.95, 11)
    se = diff.std() / np.sqrt(n * count)
    assert interval.estimate == pytest.approx(diff.mean())
    assert interval.low == pytest.approx(diff.mean() - 1.96 * se, abs=0.2 * se)
    assert interval.high == pytest.approx(diff.mean() + 1.96 * se, abs=0.2 * se)


def test_the_estimate_is_the_mean_of_each_seeds_statistic_and_the_interval_is_seeded() -> None:
    ratio = lambda m: m["system"] / m["baseline"]  # noqa: E731
    seeds = [{"system": np.array([2.0, 2.0]), "baseline": np.array([1.0, 1.0])},
             {"system": np.array([1.0, 3.0, 2.0]), "baseline": np.array([4.0, 4.0, 4.0])}]  # fmt: skip
    interval = hierarchical_bootstrap(seeds, ratio, 500, 0.95, [5, 6])
    assert interval.estimate == pytest.approx((2.0 + 0.5) / 2)  # not the ratio of pooled means (1.6)
    assert hierarchical_bootstrap(seeds, ratio, 500, 0.95, [5, 6]) == interval


def test_one_seed_is_a_paired_bootstrap_of_its_items() -> None:
    rng = np.random.default_rng(2)
    columns = {"system": rng.random(400), "baseline": rng.random(400)}
    one = hierarchical_bootstrap([columns], _difference, 2000, 0.95, 11)
    paired = paired_bootstrap(columns, _difference, 2000, 0.95, 11)
    assert one.estimate == paired.estimate
    width = paired.high - paired.low
    assert (one.low, one.high) == pytest.approx((paired.low, paired.high), abs=0.1 * width)


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ([], r"^hierarchical_bootstrap: no seeds$"),
        ([_constant_seed(1.0), {"system": np.ones(2)}], r"^hierarchical_bootstrap: the seeds' columns differ in name$"),
        ([{"system": np.ones(2), "baseline": np.ones(3)}], r"^hierarchical_bootstrap: columns differ in length"),
        ([{"system": np.ones(0), "baseline": np.ones(0)}], r"^hierarchical_bootstrap: no items$"),
    ],
)
def test_bad_input_is_one_line(seeds, message) -> None:
    with pytest.raises(ValueError, match=message):
        hierarchical_bootstrap(seeds, _difference, 10, 0.95, 0)
