"""LEGO model: exits, routed inference, growth from a shallow model, HF round trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.unit.models.lego.lego_helpers import batch, ids
from transformers import AutoConfig, AutoModelForCausalLM

from cascadelab.models.lego import LEGOConfig, LEGOTransformer
from cascadelab.models.lego.flops import routed_compute_cost
from cascadelab.models.lego.modeling_lego import lm_loss

# ----------------------------------------------------------------------------- passes


def test_first_exit_head_is_tied_and_forward_loss_is_response_only(shallow: LEGOTransformer) -> None:
    assert shallow.exit_heads[0].weight is shallow.model.embed_tokens.weight
    b = batch()
    out = shallow(input_ids=b["input_ids"], labels=b["labels"], use_cache=False)
    logits, gold = out.logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten()
    keep = gold != -100
    assert torch.allclose(out.loss, F.cross_entropy(logits[keep], gold[keep]))
    assert torch.allclose(lm_loss(out.logits, b["labels"], num_items_in_batch=int(keep.sum())), out.loss)


def test_forward_all_layers_and_forward_train_agree_with_forward(extended: LEGOTransformer) -> None:
    x = ids()
    all_logits = extended.forward_all_layers(x)
    assert len(all_logits) == 4
    assert torch.allclose(all_logits[-1], extended(input_ids=x, use_cache=False).logits, atol=1e-6)
    train = extended.forward_train(x)
    assert torch.allclose(train.shallow_logits, all_logits[1], atol=1e-6)
    assert torch.allclose(train.deep_logits, all_logits[3], atol=1e-6)
    only = extended.forward_all_layers(x, layers=[2, 3])
    assert torch.allclose(only[0], all_logits[1]) and torch.allclose(only[1], all_logits[2])


def test_hard_tokens_deep_output_does_not_depend_on_which_neighbours_exited(extended: LEGOTransformer) -> None:
    x = ids(batch=4, length=12)
    full = extended.forward_inference(x, routing_threshold=2.0).logits  # nobody exits
    conf = F.softmax(extended.forward_all_layers(x, layers=[2])[0], -1).amax(-1)
    for threshold in (float(conf.quantile(0.3)), float(conf.median()), float(conf.quantile(0.8))):
        out = extended.forward_inference(x, routing_threshold=threshold)
        hard = ~out.exited
        assert 0 < int(hard.sum()) < hard.numel()
        assert torch.allclose(out.logits[hard], full[hard], atol=1e-5)


def test_upper_layers_attend_to_earlier_positions(extended: LEGOTransformer) -> None:
    x = ids(batch=1, length=8)
    y = x.clone()
    y[0, 0] = (int(x[0, 0]) + 1 - 3) % 13 + 3  # another first token
    ctx_x = extended.exit_hidden_states(x)
    deep_x = extended.forward_all_layers(x)[-1]
    # same lower-block state at the last position, different context: the upper block must see the difference
    ctx_y = ctx_x.clone()
    ctx_y[0, 0] += 1.0
    from cascadelab.models.lego.modeling_lego import LEGOModel  # noqa: F401 (type only)

    inputs = extended.model.prepare_inputs(x, use_cache=False)
    attention = extended.model.attention_inputs(inputs)
    a = extended.model.upper_layers(ctx_x, ctx_x, attention, 2, 4)
    b = extended.model.upper_layers(ctx_x, ctx_y, attention, 2, 4)
    assert not torch.allclose(a[0, -1], b[0, -1])
    assert torch.allclose(extended.exit_logits(a, 4), deep_x, atol=1e-5)


# ----------------------------------------------------------------------------- routing


def test_threshold_zero_exits_every_token_at_the_shallow_exit(extended: LEGOTransformer) -> None:
    x = ids()
    out = extended.forward_inference(x, routing_threshold=0.0)
    assert torch.equal(out.logits, extended.forward_all_layers(x)[1])
    assert bool(out.exited.all())
    assert out.shallow_ratio == 1.0
    assert out.compute_cost == pytest.approx(routed_compute_cost(extended.config, 2, 1.0))


def test_threshold_above_one_runs_every_token_at_full_depth(extended: LEGOTransformer) -> None:
    x = ids()
    out = extended.forward_inference(x, routing_threshold=1.01)
    assert torch.allclose(out.logits, extended.forward_all_layers(x)[-1], atol=1e-6)
    assert not bool(out.exited.any())
    assert out.shallow_ratio == 0.0
    assert out.compute_cost == pytest.approx(routed_compute_cost(extended.config, 2, 0.0))


def test_routing_mixes_exits_by_confidence_and_counts_cost(extended: LEGOTransformer) -> None:
    x = ids(batch=4, length=12)
    shallow, deep = extended.forward_all_layers(x, layers=[2, 4])
    conf = F.softmax(shallow, -1).amax(-1)
    threshold = float(conf.median())
    out = extended.forward_inference(x, routing_threshold=threshold)
    easy = conf >= threshold
    assert torch.equal(out.exited, easy)
    assert torch.equal(out.logits[easy], shallow[easy])
    assert torch.allclose(out.logits[~easy], deep[~easy], atol=1e-6)
    ratio = float(easy.float().mean())
    assert out.shallow_ratio == pytest.approx(ratio)
    assert out.compute_cost == pytest.approx(routed_compute_cost(extended.config, 2, ratio))
    # the model's own threshold (set by extend_from) is the default; routed forward uses it too
    default = extended.forward_inference(x)
    assert torch.equal(default.exited, conf >= 0.5)
    assert torch.allclose(extended(input_ids=x, routed=True, use_cache=False).logits, default.logits)


def test_predict_mask_and_padding_limit_the_routed_positions(extended: LEGOTransformer) -> None:
    x = ids()
    attn = torch.ones_like(x)
    attn[0, :3] = 0
    predict = torch.zeros_like(x, dtype=torch.bool)
    predict[:, 5:] = True
    out = extended.forward_inference(x, attn, routing_threshold=1.01, predict_mask=predict)
    assert not bool(out.exited.any())
    shallow = extended.forward_all_layers(x, attn, layers=[2])[0]
    assert torch.equal(out.logits[:, :5], shallow[:, :5])  # not routed: shallow logits only, no upper compute


def test_routing_errors_are_named(shallow: LEGOTransformer, extended: LEGOTransformer) -> None:
    with pytest.raises(ValueError, match="exit_layer: routing needs layers above it, got 2 of 2"):
        shallow.forward_inference(ids(), routing_threshold=0.5)
    with pytest.raises(ValueError, match=r"exit_layer: must be one of \[2, 4\], got 3"):
        extended.forward_inference(ids(), routing_threshold=0.5, exit_layer=3)


# ----------------------------------------------------------------------------- growth


def test_extend_from_copies_freezes_and_preserves_predictions(shallow: LEGOTransformer) -> None:
    grown = LEGOTransformer.extend_from(shallow, 4, routing_threshold=0.7, freeze_lower=True, seed=3)
    assert (grown.config.num_hidden_layers, grown.config.exit_layers) == (4, [2, 4])
    assert (grown.config.exit_layer, grown.config.routing_threshold) == (2, 0.7)
    src = shallow.state_dict()
    for name, tensor in grown.state_dict().items():
        if name in src:
            assert torch.equal(tensor, src[name]), name
    frozen = {n for n, p in grown.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in shallow.named_parameters()}
    assert all(p.requires_grad for n, p in grown.named_parameters() if n.startswith("model.layers.2"))
    x = ids()
    assert torch.allclose(grown(input_ids=x).logits, shallow(input_ids=x).logits, atol=1e-6)
    with pytest.raises(ValueError, match="num_layers: must exceed the source depth 2, got 2"):
        LEGOTransformer.extend_from(shallow, 2)


# ----------------------------------------------------------------------------- HF round trips


def test_save_load_round_trip_gives_identical_logits(extended: LEGOTransformer, tmp_path: object) -> None:
    extended.save_pretrained(str(tmp_path))
    assert isinstance(AutoConfig.from_pretrained(str(tmp_path)), LEGOConfig)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert isinstance(loaded, LEGOTransformer)
    assert loaded.exit_heads[0].weight is loaded.model.embed_tokens.weight
    assert loaded.exit_heads[1].weight is not loaded.model.embed_tokens.weight
    x = ids()
    assert torch.equal(loaded(input_ids=x).logits, extended(input_ids=x).logits)
    assert torch.equal(loaded.forward_inference(x).logits, extended.forward_inference(x).logits)


def test_generate_with_cache_and_left_padding_matches_unpadded(extended: LEGOTransformer) -> None:
    prompt = ids(batch=1, length=5)
    plain = extended.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
    no_cache = extended.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False, use_cache=False
    )
    padded = torch.cat([torch.zeros(1, 2, dtype=torch.long), prompt], dim=1)
    mask = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.ones_like(prompt)], dim=1)
    left = extended.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(plain, no_cache)
    assert torch.equal(left[:, 2:], plain)


def test_routed_generation_at_threshold_zero_is_the_shallow_model(shallow: LEGOTransformer) -> None:
    grown = LEGOTransformer.extend_from(shallow, 4, routing_threshold=0.0, seed=5)
    with torch.no_grad():
        for p in grown.model.layers[2:].parameters():
            p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    x = ids(batch=2, length=5)
    kwargs = dict(attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False)
    assert torch.equal(grown.generate(x, routed=True, **kwargs), shallow.generate(x, **kwargs))
    assert not torch.equal(grown.generate(x, **kwargs), shallow.generate(x, **kwargs))


def test_routed_generation_with_cache_equals_routed_passes_without(extended: LEGOTransformer) -> None:
    x = ids(batch=3, length=5)
    conf = F.softmax(extended.forward_all_layers(x, layers=[2])[0], -1).amax(-1)
    saved, extended.config.routing_threshold = extended.config.routing_threshold, float(conf.median())
    try:
        cached = extended.generate(x, max_new_tokens=6, do_sample=False, routed=True, pad_token_id=0, eos_token_id=None)
        y = x.clone()
        with torch.no_grad():  # exited tokens' keys/values must reach the cache as they reach a full pass
            for _ in range(6):
                step = extended(input_ids=y, routed=True, use_cache=False).logits[:, -1]
                y = torch.cat([y, step.argmax(-1, keepdim=True)], 1)
    finally:
        extended.config.routing_threshold = saved
    assert torch.equal(cached, y)
