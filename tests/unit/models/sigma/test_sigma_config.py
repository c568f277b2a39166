"""SigmaConfig: block pattern, presets, validation, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascadelab.models.sigma import SigmaConfig, hybrid_attn_layer_idx


@pytest.mark.parametrize(
    ("layers", "mamba", "attention", "expected"),
    [
        (4, 1, 1, [1, 3]),
        (4, 3, 1, [3]),
        (8, 3, 1, [3, 7]),
        (6, 1, 2, [1, 2, 4, 5]),
        (3, 1, 0, []),
        (2, 0, 1, [0, 1]),
    ],
)
def test_attention_layers_follow_the_ratio(layers: int, mamba: int, attention: int, expected: list[int]) -> None:
    assert hybrid_attn_layer_idx(layers, mamba, attention) == expected
    config = SigmaConfig(num_hidden_layers=layers, mamba_ratio=mamba, attention_ratio=attention)
    assert config.attn_layer_idx == expected
    assert config.block_types == ["mla" if i in expected else "mamba" for i in range(layers)]
    assert config.layer_types == ["full_attention" if i in expected else "linear_attention" for i in range(layers)]


def test_explicit_attn_layer_idx_overrides_the_ratio() -> None:
    config = SigmaConfig(num_hidden_layers=3, attn_layer_idx=[0])
    assert config.block_types == ["mla", "mamba", "mamba"]


def test_presets_and_overrides() -> None:
    tiny = SigmaConfig.from_preset("tiny", vocab_size=40)
    assert tiny.hidden_size == 32 and tiny.vocab_size == 40
    assert SigmaConfig.from_preset("small").to_dict() == SigmaConfig().to_dict()
    with pytest.raises(ValueError, match="unknown SigmaConfig preset 'huge'"):
        SigmaConfig.from_preset("huge")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mamba_ratio": 0, "attention_ratio": 0}, "not both 0"),
        ({"attn_layer_idx": [7]}, "attn_layer_idx must lie in"),
        ({"ssm_head_dim": 48}, "must be divisible by ssm_head_dim"),
        ({"moe_top_k": 5}, "moe_top_k \\(5\\) exceeds"),
        ({"bitlinear_families": ["lm_head"]}, "bitlinear_families has unknown entries \\['lm_head'\\]"),
        ({"qk_rope_head_dim": 7}, "qk_rope_head_dim must be even"),
    ],
)
def test_bad_configurations_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SigmaConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trips_and_reports_features(tmp_path: Path) -> None:
    config = SigmaConfig.from_preset("tiny", bitlinear_families=["moe_routed"], use_diff_attn=False)
    config.save_pretrained(tmp_path)
    loaded = SigmaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.enabled_features() == {
        "mamba": True,
        "mla": True,
        "diff_attn": False,
        "moe": True,
        "bitlinear": True,
        "instant": True,
        "triton": True,
    }
