import math

import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_batch, make_model
from transformers import AutoModelForCausalLM

from cascadelab.models.acoc.accounting import count_parameters, expert_size
from cascadelab.models.acoc.growth import (
    expert_similarity,
    merge_experts,
    prune_expert,
    similar_pairs,
    split_expert,
    widen_expert,
)


def _train_a_little(model, steps=15):
    """Give the router a non-uniform preference so that top-k selection matters."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for step in range(steps):
        loss = model(**make_batch(seed=100 + step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("top_k", [0, 1, 2])
def test_widening_preserves_outputs_in_every_routing_mode(top_k, batch):
    model = make_model(num_experts=3, top_k=top_k)
    before = model(**batch).logits
    change = widen_expert(model, layer=1, expert=2, extra=5, generator=torch.Generator().manual_seed(0))
    assert model.config.expert_widths[1][2] == [16, 5]
    assert change.params_after - change.params_before == 5 * (2 * 32 + 1)
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=1e-5)


def test_split_with_log2_correction_is_exact_under_dense_mixing(batch):
    model = make_model(num_experts=2, top_k=0)
    before = model(**batch).logits
    bias = model.moe_layers[0].expert(1).router_bias.item()
    change = split_expert(model, layer=0, expert=1, generator=torch.Generator().manual_seed(0))
    moe = model.moe_layers[0]
    assert moe.num_experts == 3 and change.new_expert == 2
    assert moe.expert(1).router_bias.item() == pytest.approx(bias - math.log(2))
    assert moe.expert(2).router_bias.item() == pytest.approx(bias - math.log(2))
    assert not torch.equal(moe.expert(1).blocks[0].down.weight, moe.expert(2).blocks[0].down.weight)
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=1e-5)


def test_split_without_the_correction_would_change_the_function(batch):
    model = make_model(num_experts=2, top_k=0)
    before = model(**batch).logits
    split_expert(model, layer=0, expert=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for expert in model.moe_layers[0].expert_list()[1:]:
            expert.router_bias.add_(math.log(2))
    assert (model(**batch).logits - before).abs().max() > 1e-3


@pytest.mark.parametrize("top_k", [1, 2])
def test_split_under_top_k_moves_the_loss_only_a_little(top_k):
    model = _train_a_little(make_model(num_experts=3, top_k=top_k))
    batch = make_batch(seed=7, batch=16)
    with torch.no_grad():
        before = model(**batch).loss.item()
        loads = model.moe_layers[0].last_weights.mean(0)
        split_expert(model, layer=0, expert=int(loads.argmax()), generator=torch.Generator().manual_seed(0))
        after = model(**batch).loss.item()
    assert abs(after - before) / before < 0.02


def test_prune_and_merge_keep_the_model_loadable_and_accounting_exact(tmp_path, batch):
    model = make_model(num_experts=3)
    generator = torch.Generator().manual_seed(0)
    split_expert(model, 0, 0, generator)
    widen_expert(model, 1, 1, extra=4, generator=generator)
    sizes = [expert_size(e) for e in model.moe_layers[0].expert_list()]
    change = prune_expert(model, layer=0, expert=2)
    assert change.params_before - change.params_after == sizes[2]
    merge = merge_experts(model, layer=1, a=0, b=2)
    assert merge.new_expert == 0 and model.config.experts_per_layer == [3, 2]
    counts = count_parameters(model)
    assert counts.total == model.num_parameters() == counts.shared + counts.expert_total
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.expert_widths == model.config.expert_widths == [[[16], [16], [16]], [[16], [16, 4]]]
    assert count_parameters(loaded) == counts
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_merging_a_fresh_split_restores_the_function_exactly(batch):
    model = make_model(num_experts=2, top_k=0)
    before = model(**batch).logits
    split_expert(model, 0, 1, noise=0.0)
    assert expert_similarity(model.moe_layers[0].expert(1), model.moe_layers[0].expert(2)) == pytest.approx(1.0)
    assert similar_pairs(model, threshold=0.9) == [(0, 1, 2, pytest.approx(1.0))]
    merge_experts(model, 0, 1, 2)
    torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=1e-5)


def test_bad_structural_edits_raise_clear_errors():
    model = make_model(num_experts=1)
    with pytest.raises(ValueError, match="cannot prune the only expert of layer 0"):
        prune_expert(model, 0, 0)
    with pytest.raises(ValueError, match="expert: 3 out of range"):
        split_expert(model, 0, 3)
    widen_expert(model, 1, 0, extra=2)
    split_expert(model, 1, 0)
    widen_expert(model, 1, 1, extra=1)
    with pytest.raises(ValueError, match="have different widths"):
        merge_experts(model, 1, 0, 1)
