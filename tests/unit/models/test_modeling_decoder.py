"""The decoder base shared by ACOC, LEGO and SIGMA: input preparation, the head's forward and its config fields."""

from __future__ import annotations

import inspect

import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_model
from tests.unit.models.lego.lego_helpers import tiny_config
from tests.unit.models.sigma.test_sigma_model import tiny_model
from transformers import DynamicCache

from cascadelab.models.acoc import ACOCConfig
from cascadelab.models.attention_masks import causal_padding_mask
from cascadelab.models.configuration_decoder import DecoderConfig, LMConfig
from cascadelab.models.hybrid_rnn import HybridRNNConfig
from cascadelab.models.lego import LEGOConfig, LEGOTransformer
from cascadelab.models.modeling_decoder import DecoderLMHead, kept_positions
from cascadelab.models.sigma import SigmaConfig

torch.set_num_threads(1)


def all_heads() -> list[DecoderLMHead]:
    return [make_model(), LEGOTransformer(tiny_config()).eval(), tiny_model().eval()]


def test_each_family_is_a_decoder_head_that_generate_can_drive():
    for model in all_heads():
        assert isinstance(model, DecoderLMHead) and type(model).can_generate()
        params = inspect.signature(model.forward).parameters
        assert {"attention_mask", "position_ids", "logits_to_keep"} <= set(params)  # what generate() inspects


def test_prepare_inputs_embeds_once_and_resolves_cache_and_positions():
    model = make_model()
    ids = torch.randint(3, 24, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    inputs = model.model.prepare_inputs(ids, attention_mask=mask)
    assert torch.equal(inputs.hidden, model.model.embed_tokens(ids))
    assert inputs.position_ids.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert isinstance(inputs.cache, DynamicCache) and inputs.past_length == 0  # config.use_cache
    assert torch.equal(inputs.causal_mask(), causal_padding_mask(mask, 2, 5, 0, ids.device))
    assert model.model.prepare_inputs(ids, use_cache=False).cache is None
    given = DynamicCache(config=model.config)
    assert model.model.prepare_inputs(ids, past_key_values=given).cache is given
    with pytest.raises(ValueError, match=r"^input_ids / inputs_embeds: pass exactly one of them$"):
        model.model.prepare_inputs(ids, inputs_embeds=inputs.hidden)


def test_sigma_does_not_cache_while_training():
    model = tiny_model().train()
    assert model.model.prepare_inputs(torch.randint(3, 64, (1, 4))).cache is None


def test_backbone_forward_is_decode_of_prepared_inputs():
    ids = torch.randint(3, 16, (2, 6))
    for model in all_heads():
        with torch.no_grad():
            direct = model.model(input_ids=ids, use_cache=False).last_hidden_state
            staged = model.model.decode(model.model.prepare_inputs(ids, use_cache=False)).last_hidden_state
        assert torch.equal(direct, staged)


def test_logits_to_keep_selects_the_last_positions_or_given_indices():
    hidden = torch.arange(2 * 5).view(2, 5, 1)
    assert torch.equal(kept_positions(hidden, 0), hidden)
    assert kept_positions(hidden, 2).squeeze(-1).tolist() == [[3, 4], [8, 9]]
    assert kept_positions(hidden, torch.tensor([0, 2])).squeeze(-1).tolist() == [[0, 2], [5, 7]]
    model = make_model()
    ids = torch.randint(3, 24, (2, 7))
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        last = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
    assert last.shape == (2, 1, 24) and torch.allclose(last, full[:, -1:], atol=1e-6)


def test_shared_config_fields_keep_each_familys_defaults():
    for config_class in (ACOCConfig, LEGOConfig, SigmaConfig):
        assert issubclass(config_class, DecoderConfig)
    assert issubclass(HybridRNNConfig, LMConfig) and not issubclass(HybridRNNConfig, DecoderConfig)
    defaults = {
        ACOCConfig: (64, 64, 2, 256, 0.06),
        LEGOConfig: (128, 128, 2, 512, 0.06),
        SigmaConfig: (256, 128, 4, 2048, 0.02),
    }
    for config_class, expected in defaults.items():
        config = config_class()
        sizes = (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.max_position_embeddings)
        assert (*sizes, config.initializer_range) == expected
        assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 1, 2)
        assert config.use_cache and config.tie_word_embeddings and config.rope_theta == 10000.0
    hybrid = HybridRNNConfig()
    assert (hybrid.vocab_size, hybrid.max_position_embeddings, hybrid.initializer_range) == (128, 128, 0.02)


def test_acoc_config_derives_the_initial_widths_from_none_or_empty():
    for widths in (None, []):
        config = ACOCConfig(num_hidden_layers=2, num_experts=2, expert_width=8, expert_widths=widths)
        assert config.expert_widths == [[[8], [8]], [[8], [8]]]


def test_sigma_config_round_trips_its_derived_fields():
    config = SigmaConfig.from_preset("tiny", mamba_ratio=1, attention_ratio=1, bitlinear_families=("mla_out",))
    again = SigmaConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.layer_types == ["linear_attention", "full_attention"] and again.bitlinear_families == ["mla_out"]
