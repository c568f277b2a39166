import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_model
from transformers import AutoConfig, AutoModelForCausalLM

from cascadelab.models.acoc import ACOCConfig, ACOCForCausalLM
from cascadelab.models.acoc.accounting import count_parameters


def test_auto_classes_round_trip_and_ties_embeddings(tmp_path, batch):
    model = make_model(num_experts=3)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ACOCConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, ACOCForCausalLM)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_loss_ignores_padding_and_prompt_labels(batch):
    model = make_model()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"]
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 24), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(model(**batch).loss, expected)


@pytest.mark.parametrize("top_k", [0, 1])
def test_cached_generation_matches_full_recompute(top_k):
    model = make_model(num_experts=3, top_k=top_k)
    ids = torch.randint(3, 24, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding, as in batched generation
    generated = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=-1
    )
    seq, attention = ids, mask
    for _ in range(5):
        logits = model(input_ids=seq, attention_mask=attention, use_cache=False).logits[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
    assert torch.equal(generated, seq)


def test_gates_are_soft_and_in_unit_interval():
    model = make_model(num_experts=2)
    gates = model.moe_layers[0].gates()
    assert gates.requires_grad and torch.all((gates > 0) & (gates < 1))


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expert_widths: needs one entry per layer"):
        ACOCConfig(num_hidden_layers=2, expert_widths=[[[8]]])
    with pytest.raises(ValueError, match="num_experts_per_tok: must be >= 0"):
        ACOCConfig(num_experts_per_tok=-1)


def test_accounting_is_exact():
    model = make_model(num_experts=3)
    counts = count_parameters(model)
    assert counts.total == model.num_parameters()
    hidden, width = 32, 16
    assert counts.experts == [[2 * hidden * width + width + 1 + hidden + 1] * 3] * 2


def test_stacked_dense_path_matches_the_per_expert_loop(batch):
    model = make_model(num_experts=3)
    moe = model.moe_layers[0]
    x = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
    weights = moe.routing_weights(x)
    stacked = moe._dense_stacked(x, weights, moe.expert_list(), {"pre": []})
    looped = moe._per_expert(x, weights, moe.expert_list(), True, {"pre": []})
    torch.testing.assert_close(stacked, looped, rtol=1e-5, atol=1e-6)
