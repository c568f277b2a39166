"""Teacher-forced scoring of generated outputs: mean token log-prob and mean-pooled last hidden state.

Used by `cascade_pairs` (the coarse model's confidence in its own answer), by LIMEN (its features) and
by the cascade (the refiner's confidence). Prompt and output are tokenized separately and concatenated,
as generation produced them, then EOS; the scored positions are those predicting the output tokens and
EOS, so an empty output still has one (its EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Scores:
    """Per-output scores, in the order of the inputs."""

    mean_logprob: torch.Tensor  # [N] mean log-prob of the output tokens and EOS
    num_tokens: torch.Tensor  # [N] scored tokens (output tokens + EOS)
    pooled_hidden: torch.Tensor | None  # [N, H] last-layer states at the scored positions, averaged


def _ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


@torch.no_grad()
def score_outputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    outputs: Sequence[str],
    batch_size: int = 256,
    hidden: bool = False,
) -> Scores:
    """Score every (prompt, output) pair with `model`, batched by length; hidden states only if asked."""
    if len(prompts) != len(outputs):
        raise ValueError(f"{len(prompts)} prompts but {len(outputs)} outputs")
    model.eval()
    device = next(model.parameters()).device
    prompt_ids, output_ids = _ids(tokenizer, prompts), _ids(tokenizer, outputs)
    eos = int(tokenizer.eos_token_id)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    sequences = [[*p, *o, eos] for p, o in zip(prompt_ids, output_ids, strict=True)]
    n = len(sequences)
    mean_logprob, num_tokens = torch.zeros(n), torch.zeros(n, dtype=torch.long)
    pooled: torch.Tensor | None = None
    order = sorted(range(n), key=lambda i: (len(sequences[i]), i))
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)  # positions predicting output/EOS tokens
        for row, index in enumerate(batch):
            seq = sequences[index]
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
            first = max(len(prompt_ids[index]) - 1, 0)
            scored[row, first : len(seq) - 1] = True
        result = model(
            input_ids=ids.to(device), attention_mask=attention.to(device), output_hidden_states=hidden, use_cache=False
        )
        logprobs = torch.log_softmax(result.logits[:, :-1].float(), dim=-1).cpu()
        token_lp = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        mask = scored[:, :-1].float()
        counts = mask.sum(-1).clamp_min(1)
        rows = torch.tensor(batch)
        mean_logprob[rows] = (token_lp * mask).sum(-1) / counts
        num_tokens[rows] = mask.sum(-1).long()
        if hidden:
            states = result.hidden_states[-1].float().cpu()
            if pooled is None:
                pooled = torch.zeros(n, states.shape[-1])
            weights = scored.float().unsqueeze(-1)
            pooled[rows] = (states * weights).sum(1) / weights.sum(1).clamp_min(1)
    if hidden and pooled is None:
        pooled = torch.zeros(0, int(model.config.hidden_size))
    return Scores(mean_logprob=mean_logprob, num_tokens=num_tokens, pooled_hidden=pooled)


def generated_tokens(tokenizer: PreTrainedTokenizerBase, outputs: Sequence[str], max_new_tokens: int) -> list[int]:
    """Tokens each generation cost: its output tokens plus the EOS that stopped it, capped at the limit."""
    return [min(len(ids) + 1, max_new_tokens) for ids in _ids(tokenizer, outputs)]
