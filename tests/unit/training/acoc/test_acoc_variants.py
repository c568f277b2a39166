import math

import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_model

from cascadelab.training.acoc.variants import VoteParams, relative_threshold, vote_and_merge


def _distance_score(reference):
    def score(model):
        distance = sum(float((p - r).pow(2).sum()) for p, r in zip(model.parameters(), reference, strict=True))
        return math.exp(-distance)

    return score


def test_relative_threshold_is_95_percent_of_the_mean_of_the_last_5_scores():
    assert relative_threshold([10.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(0.95 * 3.0)
    assert relative_threshold([2.0]) == pytest.approx(1.9)
    with pytest.raises(ValueError, match="history: needs at least one cycle score"):
        relative_threshold([])


@pytest.mark.parametrize(
    ("history", "expand"), [([100.0, 1.0, 1.0, 1.0, 1.0, 1.0], False), ([1.0, 1.0, 1.0, 1.0, 100.0], True)]
)
def test_vote_uses_only_the_last_five_cycle_scores(history, expand):
    model = make_model()
    reference = [p.detach().clone() for p in model.parameters()]
    params = VoteParams(noise=1e-3, ratio=0.95, reference="history")
    result = vote_and_merge(model, _distance_score(reference), history, params, torch.Generator().manual_seed(0))
    assert result.threshold == pytest.approx(0.95 * sum(history[-5:]) / 5)
    assert len(result.scores) == 5 and all(s < 1.0 for s in result.scores)
    assert result.votes == [s < result.threshold for s in result.scores]
    assert result.expand is expand


def test_a_soup_that_scores_worse_is_rolled_back_exactly():
    model = make_model()
    reference = [p.detach().clone() for p in model.parameters()]
    result = vote_and_merge(model, _distance_score(reference), [1.0], VoteParams(), torch.Generator().manual_seed(0))
    assert not result.merged and result.merged_score < result.base_score
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), reference, strict=True))


def test_the_soup_averages_the_best_deltas_by_score():
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    result = vote_and_merge(model, lambda m: 1.0, [1.0], VoteParams(merge_top=3), torch.Generator().manual_seed(0))
    assert result.merged and result.merge_weights == pytest.approx([1 / 3] * 3)
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize(("noise", "expand"), [(1e-3, False), (0.3, True)])
def test_against_the_current_score_the_vote_is_a_sharpness_test(noise, expand):
    model = make_model()
    reference = [p.detach().clone() for p in model.parameters()]
    params = VoteParams(noise=noise, ratio=0.99, reference="current")
    result = vote_and_merge(model, _distance_score(reference), [1e-9], params, torch.Generator().manual_seed(0))
    assert result.threshold == pytest.approx(0.99 * result.base_score)  # the history [1e-9] plays no part
    assert result.expand is expand  # small perturbations cost < 1 % of the score, large ones more
