"""Each model section's `to_config(tokenizer)` gives exactly the HF config the hand-written translators built."""

import pytest
from transformers import LlamaConfig, Qwen2Config

from cascadelab.config import (
    ACOCModelParams,
    CausalLMParams,
    HybridRNNModelParams,
    LegoParams,
    SigmaModelParams,
    TokenizerParams,
)
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.acoc import ACOCConfig
from cascadelab.models.hybrid_rnn import HybridRNNConfig
from cascadelab.models.lego import LEGOConfig
from cascadelab.models.sigma import SigmaConfig


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([f"{i}+{i % 7}={i + i % 7}" for i in range(24)], TokenizerParams(kind="char"))


def _ids(tokenizer):
    return dict(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )


@pytest.mark.parametrize(("family", "config_class"), [("llama", LlamaConfig), ("qwen2", Qwen2Config)])
def test_causal_lm_config_matches_the_translator(tokenizer, family, config_class):
    params = CausalLMParams(family=family, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    expected = config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        initializer_range=params.initializer_range,
        max_position_embeddings=params.max_position_embeddings,
        tie_word_embeddings=True,
        use_cache=True,
        **_ids(tokenizer),
    )
    config = params.to_config(tokenizer)
    assert type(config) is config_class
    assert config.to_dict() == expected.to_dict()


def test_lego_config_matches_the_translator(tokenizer):
    params = LegoParams.model_validate(
        {"model": {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64}, "phase1": {"learning_rate": 3e-3}}
    )
    m = params.model
    expected = LEGOConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        max_position_embeddings=m.max_position_embeddings,
        initializer_range=m.initializer_range,
        num_hidden_layers=m.phase1_layers,
        **_ids(tokenizer),
    )
    assert params.to_config(tokenizer).to_dict() == expected.to_dict()


def test_hybrid_rnn_config_matches_the_translator(tokenizer):
    params = HybridRNNModelParams(preset="tiny", context="pooled", d_model=32, dropout=0.0)
    expected = HybridRNNConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        decoder_start_token_id=tokenizer.bos_token_id,
        **_ids(tokenizer),
        context="pooled",
        initializer_range=params.initializer_range,
        d_model=32,
        dropout=0.0,
    )
    assert params.to_config(tokenizer).to_dict() == expected.to_dict()


def test_acoc_config_matches_the_translator(tokenizer):
    params = ACOCModelParams(hidden_size=32, num_heads=2, initial_experts=2, top_k=1)
    widths = [[[16, 8]], [[16, 16]]]
    for expert_widths in (None, widths):
        expected = ACOCConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=params.num_layers,
            num_attention_heads=2,
            max_position_embeddings=params.max_position_embeddings,
            num_experts=2,
            expert_width=params.expert_width,
            expert_widths=expert_widths,
            num_experts_per_tok=1,
            gate_init=params.gate_init,
            initializer_range=params.initializer_range,
            **_ids(tokenizer),
        )
        assert params.to_config(tokenizer, expert_widths).to_dict() == expected.to_dict()


def test_sigma_config_matches_the_translator(tokenizer):
    params = SigmaModelParams(preset="tiny", num_layers=2, moe_top_k=1, overrides={"ssm_state_size": 8})
    expected = SigmaConfig.from_preset("tiny", vocab_size=len(tokenizer), **_ids(tokenizer), **params.config_kwargs())
    assert params.to_config(tokenizer).to_dict() == expected.to_dict()


def test_sigma_config_names_a_bad_override(tokenizer):
    with pytest.raises(ValueError, match=r"^sigma_pretrain\.model\.overrides\.bogus: not a SigmaConfig argument$"):
        SigmaModelParams(preset="tiny", overrides={"bogus": 1}).to_config(tokenizer)
