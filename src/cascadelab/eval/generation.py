"""Batched generation for evaluation: left padding, KV cache, prompts grouped by length."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def generate_batched(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    num_return_sequences: int = 1,
    seed: int = 0,
    desc: str = "generate",
    **model_kwargs: Any,
) -> list[list[str]]:
    """Generate for every prompt; returns, per prompt, `num_return_sequences` completions (prompt removed).

    `model_kwargs` go to the model's `generate` as they are (e.g. LEGO's `routed`).
    """
    model.eval()
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    outputs: list[list[str]] = [[] for _ in prompts]
    generator_seed = seed
    device = next(model.parameters()).device
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, leave=False, disable=len(batches) < 2):
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = {key: value.to(device) for key, value in encoded.items()}
        if do_sample:
            torch.manual_seed(generator_seed)
            generator_seed += 1
        generated = model.generate(  # type: ignore[operator]  # transformers types generate loosely
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_k=None,
            top_p=None,
            num_return_sequences=num_return_sequences,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
            **model_kwargs,
        )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        for row, index in enumerate(batch):
            outputs[index] = texts[row * num_return_sequences : (row + 1) * num_return_sequences]
    return outputs


def greedy_outputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    routed: bool = False,
) -> list[str]:
    """Greedy completions (prompt removed) of a LEGO model, optionally routed (tokens exit early by confidence)."""
    outputs = generate_batched(model, tokenizer, prompts, max_new_tokens, batch_size, desc="greedy", routed=routed)
    return [texts[0] for texts in outputs]
