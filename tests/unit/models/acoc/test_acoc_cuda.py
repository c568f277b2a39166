"""CUDA checks of the ACOC model and cycle loop (skipped where no GPU exists, e.g. CI)."""

import pytest
import torch
from tests.unit.models.acoc.acoc_helpers import make_batch, make_model

from cascadelab.data.batches import LMBatch
from cascadelab.models.acoc.growth import split_expert, widen_expert
from cascadelab.training.acoc.saturation import SaturationParams, measure_saturation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("top_k", [0, 2])
def test_cuda_matches_cpu_through_growth(top_k):
    cpu = make_model(num_experts=2, top_k=top_k)
    gpu = make_model(num_experts=2, top_k=top_k).cuda()
    batch = make_batch()
    for model in (cpu, gpu):
        split_expert(model, 0, 1, generator=torch.Generator().manual_seed(0))
        widen_expert(model, 1, 0, extra=3, generator=torch.Generator().manual_seed(1))
    expected = cpu(**batch).logits
    got = gpu(**{k: v.cuda() for k, v in batch.items()}).logits.cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_cuda_forced_routing_saturation_and_generation():
    model = make_model(num_experts=3, top_k=1).cuda().train()
    moe = model.moe_layers[0]
    moe.force_experts, moe.force_share, moe.force_generator = [2], 0.3, torch.Generator().manual_seed(0)
    batch = {k: v.cuda() for k, v in make_batch().items()}
    model(**batch).loss.backward()
    moe.force_experts = []
    stats = measure_saturation(model, [LMBatch("t", **make_batch()).to("cuda")], SaturationParams())
    assert sum(s.load for s in stats[0]) == pytest.approx(1.0, abs=1e-5)
    model.eval()
    out = model.generate(
        input_ids=batch["input_ids"][:, :4],
        attention_mask=batch["attention_mask"][:, :4],
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=-1,
    )
    assert out.shape == (4, 7) and out.is_cuda
