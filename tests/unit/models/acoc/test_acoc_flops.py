import pytest

from cascadelab.models.acoc import ACOCConfig
from cascadelab.models.acoc.flops import matmul_params, train_flops


def _config(experts: int) -> ACOCConfig:
    return ACOCConfig(
        vocab_size=10, hidden_size=4, num_hidden_layers=1, num_attention_heads=1, num_experts=experts, expert_width=2
    )


def test_train_flops_of_a_hand_computed_tiny_model():
    # per token: attention 4·4² = 64, expert up+down 2·4·2 = 16, router 4, LM head 4·10 = 40 -> 124 MACs
    assert matmul_params(_config(1)) == 124
    # one sequence of 3 tokens: 6·124·3 = 2232, attention scores and values 6·2·3²·4 = 432
    assert train_flops(_config(1), batch_size=1, seq_len=3) == 2232 + 432
    assert train_flops(_config(1), batch_size=5, seq_len=3) == 5 * (2232 + 432)


def test_every_expert_adds_its_matmuls_and_its_router_row():
    assert matmul_params(_config(4)) - matmul_params(_config(1)) == 3 * (16 + 4)
    assert train_flops(_config(4), 2, 7) / train_flops(_config(1), 2, 7) == pytest.approx(
        (6 * 184 * 14 + 6 * 2 * 49 * 4 * 2) / (6 * 124 * 14 + 6 * 2 * 49 * 4 * 2)
    )
