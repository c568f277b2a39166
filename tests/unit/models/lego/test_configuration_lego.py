"""LEGOConfig: the seed's architecture defaults, no training fields, and one-line errors naming the field."""

from __future__ import annotations

import pytest
from tests.unit.models.lego.lego_helpers import tiny_config

from cascadelab.config import LegoParams
from cascadelab.models.lego import LEGOConfig


def test_config_defaults_follow_the_seed() -> None:
    cfg = LEGOConfig()
    assert (cfg.num_hidden_layers, cfg.exit_layers, cfg.exit_layer) == (2, [2], 2)
    over = LEGOConfig(num_hidden_layers=3)
    assert (over.num_hidden_layers, over.exit_layers, over.exit_layer) == (3, [3], 3)


def test_training_settings_live_in_the_lego_section_with_the_seed_defaults() -> None:
    assert not any(key.startswith("phase") or key == "hard_example_ratio" for key in LEGOConfig().to_dict())
    params = LegoParams()
    assert (params.model.phase1_layers, params.phase1.learning_rate, params.phase1.patience) == (2, 1e-3, 1)
    assert params.hard_examples.hard_example_ratio == 0.5
    assert (params.model.phase2_layers, params.phase2.learning_rate, params.phase2.patience) == (4, 1e-4, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_hidden_layers": 4, "exit_layers": [3, 2]}, "exit_layers: must be strictly increasing"),
        ({"num_hidden_layers": 4, "exit_layers": [2]}, "exit_layers: must be strictly increasing"),
        ({"num_hidden_layers": 4, "exit_layers": [2, 4], "exit_layer": 3}, "exit_layer: must be one of"),
        (
            {"hidden_size": 15},
            "hidden_size: must split into num_attention_heads=2 heads of even size, got 15",
        ),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**kwargs)
