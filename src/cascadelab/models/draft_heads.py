"""Draft heads (the seed's Hydra, Medusa-style): small heads on a frozen causal LM that propose the next tokens.

Head ``i`` (1..k) reads the frozen model's last hidden state at position t and predicts the token at
t + 1 + i (the model's own head predicts t + 1): a residual SiLU block, then a vocabulary projection
initialised from the model's output embedding. `speculative_greedy` uses them for self-speculative
decoding: each forward of the frozen model verifies the previous drafts and yields the next verified
token plus k new drafts; a draft is kept only when it equals the model's own greedy choice, so the
output is plain greedy decoding's, token for token (up to float ties between candidate tokens), in fewer
forwards. Works on any model whose ``base_model(...)`` returns ``last_hidden_state`` and whose
``get_output_embeddings()`` maps it to logits (Llama, Qwen2, SigmaForCausalLM). Training the heads is
`cascadelab.training.draft_heads`. `measure_speculative` reports, on the same prompts, the acceptance
rate (accepted / proposed drafts), tokens per forward, the wall-clock speed-up ``t_plain / t_speculative``
(both without a KV cache, the form the speculative loop runs in) and whether both outputs are identical.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel


class DraftHeads(nn.Module):
    """k heads mapping a hidden state to logits for the tokens 2..k+1 positions ahead."""

    def __init__(self, hidden_size: int, vocab_size: int, num_heads: int) -> None:
        super().__init__()
        if num_heads <= 0:
            raise ValueError("draft_heads.num_heads: must be > 0")
        self.num_heads = num_heads
        self.blocks = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_heads))
        self.projections = nn.ModuleList(nn.Linear(hidden_size, vocab_size, bias=False) for _ in range(num_heads))
        for block in self.blocks:
            assert isinstance(block, nn.Linear)
            nn.init.zeros_(block.weight)  # start as the identity: each head begins as the model's own head
            nn.init.zeros_(block.bias)

    @classmethod
    def for_model(cls, model: PreTrainedModel, num_heads: int) -> DraftHeads:
        """Heads sized for `model`, projections copied from its output embedding."""
        output = model.get_output_embeddings()
        assert isinstance(output, nn.Linear)
        heads = cls(output.in_features, output.out_features, num_heads)
        for projection in heads.projections:
            assert isinstance(projection, nn.Linear)
            projection.weight.data.copy_(output.weight.data)
        return heads.to(output.weight.device)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., num_heads, vocab]`` from hidden states ``[..., hidden]``."""
        outs = [proj(hidden + F.silu(block(hidden))) for block, proj in zip(self.blocks, self.projections, strict=True)]
        return torch.stack(outs, dim=-2)


def _hidden_and_logits(model: PreTrainedModel, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen model's last hidden states and logits for ``ids`` ``[1, L]`` (no cache)."""
    hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    assert isinstance(head, nn.Module)
    return hidden, head(hidden)


@torch.no_grad()
def plain_greedy(
    model: PreTrainedModel, prompt: Sequence[int], max_new_tokens: int, eos_id: int | None = None
) -> list[int]:
    """Reference greedy decoding with one full forward per token (no cache), as the speculative path runs."""
    ids = list(prompt)
    new: list[int] = []
    while len(new) < max_new_tokens:
        _, logits = _hidden_and_logits(model, torch.tensor([ids]))
        token = int(logits[0, -1].argmax())
        ids.append(token)
        new.append(token)
        if token == eos_id:
            break
    return new


@dataclass
class SpeculativeStats:
    """What speculative decoding did: forwards, drafts proposed and accepted."""

    forwards: int = 0
    proposed: int = 0
    accepted: int = 0
    tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Share of proposed draft tokens that the model confirmed."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per forward of the frozen model (plain greedy: 1)."""
        return self.tokens / self.forwards if self.forwards else 0.0


@torch.no_grad()
def speculative_greedy(
    model: PreTrainedModel,
    heads: DraftHeads,
    prompt: Sequence[int],
    max_new_tokens: int,
    eos_id: int | None = None,
    stats: SpeculativeStats | None = None,
) -> list[int]:
    """Greedy decoding verified draft by draft: the same tokens as `plain_greedy`, in fewer forwards."""
    stats = stats if stats is not None else SpeculativeStats()
    ids = list(prompt)
    hidden, logits = _hidden_and_logits(model, torch.tensor([ids]))
    stats.forwards += 1
    next_token = int(logits[0, -1].argmax())
    drafts = [int(t) for t in heads(hidden[0, -1]).argmax(-1)]
    new: list[int] = []
    while True:
        accepted = [next_token]
        candidate = [*ids, next_token, *drafts]
        if len(new) + 1 >= max_new_tokens or next_token == eos_id:
            new.append(next_token)
            break
        hidden, logits = _hidden_and_logits(model, torch.tensor([candidate]))
        stats.forwards += 1
        stats.proposed += len(drafts)
        position = len(ids)  # where next_token sits; its logits predict the first draft
        for draft in drafts:
            if int(logits[0, position].argmax()) != draft or accepted[-1] == eos_id:
                break
            accepted.append(draft)
            position += 1
        stats.accepted += len(accepted) - 1
        room = max_new_tokens - len(new)
        accepted = accepted[:room]
        if eos_id in accepted:
            accepted = accepted[: accepted.index(eos_id) + 1]
        ids += accepted
        new += accepted
        if len(new) >= max_new_tokens or new[-1] == eos_id:
            break
        position = len(ids) - 1
        next_token = int(logits[0, position].argmax())
        drafts = [int(t) for t in heads(hidden[0, position]).argmax(-1)]
    stats.tokens += len(new)
    return new


@torch.no_grad()
def measure_speculative(
    model: PreTrainedModel,
    heads: DraftHeads,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_id: int | None = None,
) -> dict[str, Any]:
    """Speculative vs plain greedy on the same prompts: acceptance, tokens per forward, speed-up, identical output."""
    if prompts:  # one untimed call of each first, so neither pays the process's first-forward costs
        speculative_greedy(model, heads, prompts[0], max_new_tokens, eos_id)
        plain_greedy(model, prompts[0], max_new_tokens, eos_id)
    stats = SpeculativeStats()
    start = time.perf_counter()
    drafted = [speculative_greedy(model, heads, p, max_new_tokens, eos_id, stats) for p in prompts]
    speculative_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = [plain_greedy(model, p, max_new_tokens, eos_id) for p in prompts]
    plain_s = time.perf_counter() - start
    return {
        "identical": drafted == reference,
        "mismatches": sum(a != b for a, b in zip(drafted, reference, strict=True)),
        "acceptance_rate": stats.acceptance_rate,
        "tokens_per_forward": stats.tokens_per_forward,
        "speedup": plain_s / speculative_s if speculative_s > 0 else 0.0,
        "speculative_s": speculative_s,
        "plain_s": plain_s,
        "forwards": stats.forwards,
        "tokens": stats.tokens,
        "prompts": len(prompts),
    }
