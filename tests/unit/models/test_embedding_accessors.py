"""The causal LMs rely on transformers' embedding accessors (`embed_tokens`, `lm_head`); these pin what they return."""

from tests.unit.models.acoc.acoc_helpers import make_model
from tests.unit.models.lego.lego_helpers import tiny_config
from tests.unit.models.sigma.test_sigma_model import tiny_model
from torch import nn

from cascadelab.models.lego import LEGOTransformer


def test_acoc_and_sigma_expose_their_embedding_and_head():
    for model in (make_model(), tiny_model()):
        assert model.get_input_embeddings() is model.model.embed_tokens
        assert model.model.get_input_embeddings() is model.model.embed_tokens
        assert model.get_output_embeddings() is model.lm_head
        new_head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
        model.set_output_embeddings(new_head)
        assert model.lm_head is new_head
        new_embed = nn.Embedding(model.config.vocab_size, model.config.hidden_size)
        model.set_input_embeddings(new_embed)
        assert model.model.embed_tokens is new_embed


def test_lego_exposes_its_embedding_and_final_exit_head():
    model = LEGOTransformer(tiny_config())
    assert model.get_input_embeddings() is model.model.embed_tokens
    assert model.get_output_embeddings() is model.exit_heads[-1]
    new_embed = nn.Embedding(model.config.vocab_size, model.config.hidden_size)
    model.set_input_embeddings(new_embed)
    assert model.model.embed_tokens is new_embed
