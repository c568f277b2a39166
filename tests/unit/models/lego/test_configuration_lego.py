"""LEGOConfig: the seed's defaults and one-line errors naming the field."""

from __future__ import annotations

import pytest
from tests.unit.models.lego.lego_helpers import tiny_config

from cascadelab.models.lego import LEGOConfig


def test_config_defaults_follow_the_seed() -> None:
    cfg = LEGOConfig()
    assert (cfg.phase1_layers, cfg.phase1_lr, cfg.phase1_patience) == (2, 1e-3, 1)
    assert cfg.hard_example_ratio == 0.5
    assert (cfg.phase2_layers, cfg.phase2_lr, cfg.phase2_patience) == (4, 1e-4, 3)
    assert (cfg.num_hidden_layers, cfg.exit_layers, cfg.exit_layer) == (2, [2], 2)
    over = LEGOConfig(phase1_layers=3, phase2_layers=6, phase2_lr=3e-4, hard_example_ratio=0.4)
    assert (over.num_hidden_layers, over.phase2_layers, over.phase2_lr, over.hard_example_ratio) == (
        3,
        6,
        3e-4,
        0.4,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_hidden_layers": 4, "exit_layers": [3, 2]}, "exit_layers: must be strictly increasing"),
        ({"num_hidden_layers": 4, "exit_layers": [2]}, "exit_layers: must be strictly increasing"),
        ({"num_hidden_layers": 4, "exit_layers": [2, 4], "exit_layer": 3}, "exit_layer: must be one of"),
        ({"hard_example_ratio": 1.0}, "hard_example_ratio: must be in (0, 1), got 1.0"),
        ({"phase2_layers": 2}, "phase2_layers: must exceed phase1_layers=2 >= 1, got 2"),
        (
            {"hidden_size": 15},
            "hidden_size: must split into num_attention_heads=2 heads of even size, got 15",
        ),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**kwargs)
