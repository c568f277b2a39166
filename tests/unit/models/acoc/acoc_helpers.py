"""Tiny ACOC models and batches shared by the ACOC tests."""

import torch

from cascadelab.models.acoc import ACOCConfig, ACOCForCausalLM


def make_model(num_experts: int = 2, top_k: int = 0, width: int = 16, seed: int = 0) -> ACOCForCausalLM:
    torch.manual_seed(seed)
    config = ACOCConfig(
        vocab_size=24,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_experts=num_experts,
        expert_width=width,
        num_experts_per_tok=top_k,
    )
    return ACOCForCausalLM(config).eval()


def make_batch(seed: int = 1, batch: int = 4, length: int = 9) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 24, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # right padding on one row
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
