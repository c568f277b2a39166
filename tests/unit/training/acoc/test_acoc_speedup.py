import pytest

from cascadelab.training.acoc.speedup import flops_to_reach, loss_at, smooth, speedup, target_loss


def _line(scale: float, points: int = 11) -> list[tuple[float, float]]:
    """Loss falling linearly from 2 to 1 over `scale` × [0, 10] FLOPs."""
    return [(scale * i, 2.0 - i / (points - 1)) for i in range(points)]


def test_an_arm_twice_as_fast_saves_half_the_compute():
    large, grown = _line(1.0), _line(0.5)
    target = target_loss(large, budget=10.0, fraction=0.6, window=0.0)
    assert target == pytest.approx(1.4)
    assert flops_to_reach(large, target) == pytest.approx(6.0)
    assert speedup(grown, large, target, window=0.0) == pytest.approx(0.5)
    assert speedup(_line(2.0), large, target, window=0.0) == pytest.approx(-1.0)


def test_a_curve_that_never_reaches_the_target_has_no_saving():
    flat = [(float(i), 1.9) for i in range(11)]
    assert flops_to_reach(flat, 1.4) is None
    assert speedup(flat, _line(1.0), 1.4, window=0.0) is None


def test_smoothing_is_a_trailing_mean_so_one_lucky_evaluation_does_not_reach_the_target():
    spiky = [(0.0, 2.0), (1.0, 1.0), (2.0, 2.0), (3.0, 1.2), (4.0, 1.2), (5.0, 1.2)]
    assert smooth(spiky, 1.0) == [(0.0, 2.0), (1.0, 1.5), (2.0, 1.5), (3.0, 1.6), (4.0, 1.2), (5.0, 1.2)]
    assert smooth(spiky, 0.0) == spiky
    assert flops_to_reach(spiky, 1.2) == pytest.approx(0.8)  # interpolated between 2.0 and 1.0
    assert flops_to_reach(smooth(spiky, 1.0), 1.2) == pytest.approx(4.0)
    assert loss_at(spiky, 0.5) == pytest.approx(1.5) and loss_at(spiky, 99.0) == 1.2
    with pytest.raises(ValueError, match="window: must be >= 0 FLOPs"):
        smooth(spiky, -1.0)


def test_the_window_is_in_flops_so_sparse_and_dense_curves_of_one_trajectory_smooth_alike():
    dense = [(float(x), 2.0 - 0.1 * x) for x in range(11)]  # evaluated every FLOP
    sparse = dense[::2]  # the same trajectory, evaluated every 2 FLOPs (a model twice as costly per step)
    # a window of 3 evaluations would average x = 4, 6, 8 (1.4) on one and 6, 7, 8 (1.3) on the other
    assert loss_at(smooth(sparse, 2.0), 8.0) == pytest.approx(loss_at(smooth(dense, 2.0), 8.0)) == pytest.approx(1.3)
    assert smooth(sparse, 2.0)[-1][1] == pytest.approx(1.1)  # mean of 1.2 and 1.0: the same FLOPs window
