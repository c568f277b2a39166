"""The shared layers and their helpers."""

import torch

from cascadelab.models.layers import AttentionInputs, RotaryDecoderLayer, default_position_ids, rope_cos_sin


def test_positions_count_real_tokens_under_a_mask_so_left_padding_does_not_shift_them():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert default_position_ids(mask, 0, 2, 5, torch.device("cpu")).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert default_position_ids(mask, 4, 2, 1, torch.device("cpu")).tolist() == [[2], [4]]


def test_positions_run_on_from_the_cache_without_a_mask():
    positions = default_position_ids(None, 3, 2, 2, torch.device("cpu"))
    assert positions.tolist() == [[3, 4], [3, 4]]


def test_decoder_layer_is_residual_attention_then_residual_mlp_in_the_llama_key_order():
    torch.manual_seed(0)
    mlp = torch.nn.Linear(8, 8)
    layer = RotaryDecoderLayer(8, 2, 1e-6, 0, mlp)
    prefixes = [key.split(".")[0] for key in layer.state_dict()]
    assert list(dict.fromkeys(prefixes)) == ["input_layernorm", "self_attn", "post_attention_layernorm", "mlp"]
    x = torch.randn(2, 3, 8)
    positions = default_position_ids(None, 0, 2, 3, torch.device("cpu"))
    cos, sin = rope_cos_sin(positions, 4, 10000.0)
    mask = torch.ones(3, 3, dtype=torch.bool).tril()[None, None].expand(2, 1, 3, 3)
    inputs = AttentionInputs((cos[:, None], sin[:, None]), mask, None)
    with torch.no_grad():
        h = x + layer.self_attn(layer.input_layernorm(x), inputs)
        assert torch.equal(layer(x, inputs), h + mlp(layer.post_attention_layernorm(h)))
