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

from cascadelab.data.batches import encode_prompt_response, encode_texts, pad_rows, padding_mask


@dataclass
class Scores:
    """Per-output scores, in the order of the inputs."""

    mean_logprob: torch.Tensor  # [N] mean log-prob of the output tokens and EOS
    num_tokens: torch.Tensor  # [N] scored tokens (output tokens + EOS)
    pooled_hidden: torch.Tensor | None  # [N, H] last-layer states at the scored positions, averaged


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
    sequences = encode_prompt_response(tokenizer, prompts, outputs, jointly=False) if prompts else []
    eos = int(tokenizer.eos_token_id)
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    n = len(sequences)
    mean_logprob, num_tokens = torch.zeros(n), torch.zeros(n, dtype=torch.long)
    pooled: torch.Tensor | None = None
    order = sorted(range(n), key=lambda i: (len(sequences[i].input_ids), i))
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        rows_ids = [sequences[i].input_ids for i in batch]
        ids, attention = pad_rows(rows_ids, pad), padding_mask(rows_ids)
        scored = torch.zeros(ids.shape, dtype=torch.bool)  # positions predicting output/EOS tokens
        for row, index in enumerate(batch):
            seq = sequences[index]
            scored[row, max(seq.prompt_len - 1, 0) : len(seq.input_ids) - 1] = True
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
    return [min(len(ids) + 1, max_new_tokens) for ids in (encode_texts(tokenizer, outputs) if outputs else [])]
