"""The shared layers' helpers."""

import torch

from cascadelab.models.layers import default_position_ids


def test_positions_count_real_tokens_under_a_mask_so_left_padding_does_not_shift_them():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert default_position_ids(mask, 0, 2, 5, torch.device("cpu")).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert default_position_ids(mask, 4, 2, 1, torch.device("cpu")).tolist() == [[2], [4]]


def test_positions_run_on_from_the_cache_without_a_mask():
    positions = default_position_ids(None, 3, 2, 2, torch.device("cpu"))
    assert positions.tolist() == [[3, 4], [3, 4]]
