"""ACOC: a small decoder-only transformer whose feed-forward layers are growable mixtures of expert blocks.

Each layer is RMSNorm → rotary self-attention → RMSNorm → `ACOCMoE`. The MoE's router (the "central
controller" of the ACOC design) scores every expert with its own router row; an expert is a list of
GELU-MLP blocks (widening appends a block) scaled by a soft gate `sigmoid(gate_logit)` in [0, 1], so that
the growth penalty can push unneeded experts toward zero. Every expert owns its router row and gate:
growing, pruning or merging an expert adds or removes whole parameter tensors, which keeps the parameter
accounting exact and lets the optimizer give exactly the new tensors their own learning rate.

Routing: `num_experts_per_tok == 0` mixes every expert with softmax weights (dense mixing: an expert split with its
router logit lowered by log 2 is then function-preserving); k > 0 keeps the k largest.

References: Net2Net (Chen et al., 2015); Switch/Mixtral-style top-k routing; the ACOC analysis v0.2
(../shared/seeds/002_34ebd63c8b792573.txt).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPast

from cascadelab.models.acoc.configuration_acoc import ACOCConfig
from cascadelab.models.layers import AttentionInputs, RMSNorm, RotaryDecoderLayer
from cascadelab.models.modeling_decoder import DecoderBackbone, DecoderInputs, DecoderLMHead


class ACOCRotaryEmbedding(nn.Module):
    """Rotary position embedding: cos/sin tables for given positions."""

    inv_freq: torch.Tensor

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        """The rotary frequencies theta^(-2i/d)."""
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (B, T, head_dim) for `position_ids` (B, T)."""
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


class ACOCExpertBlock(nn.Module):
    """One block of expert units: `down(act(up(x)))`; widening an expert appends a block."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, width, bias=True)
        self.down = nn.Linear(width, hidden_size, bias=False)

    @property
    def width(self) -> int:
        """Number of hidden units in this block."""
        return self.up.out_features


class ACOCExpert(nn.Module):
    """An expert: MLP blocks, a soft gate in [0, 1] and its own router row (weight + bias)."""

    def __init__(self, hidden_size: int, widths: list[int], hidden_act: str, gate_init: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ACOCExpertBlock(hidden_size, width) for width in widths])
        self.gate_logit = nn.Parameter(torch.tensor(float(gate_init)))
        self.router_weight = nn.Parameter(torch.zeros(hidden_size))
        self.router_bias = nn.Parameter(torch.zeros(()))
        self.act = ACT2FN[hidden_act]

    def block_list(self) -> list[ACOCExpertBlock]:
        """The blocks, in order (typed access into the ModuleList)."""
        blocks = list(self.blocks)
        assert all(isinstance(block, ACOCExpertBlock) for block in blocks)
        return blocks  # type: ignore[return-value]

    @property
    def widths(self) -> list[int]:
        """Widths of the blocks, in order."""
        return [block.width for block in self.block_list()]

    @property
    def gate(self) -> torch.Tensor:
        """The soft gate sigmoid(gate_logit), differentiable."""
        return torch.sigmoid(self.gate_logit)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The blocks concatenated: up weight (W, H), up bias (W,), down weight (H, W)."""
        blocks = self.block_list()
        if len(blocks) == 1:
            return blocks[0].up.weight, blocks[0].up.bias, blocks[0].down.weight
        up_w = torch.cat([b.up.weight for b in blocks], dim=0)
        up_b = torch.cat([b.up.bias for b in blocks], dim=0)
        down_w = torch.cat([b.down.weight for b in blocks], dim=1)
        return up_w, up_b, down_w

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden pre-activations (N, W)."""
        up_w, up_b, _ = self.weights()
        return F.linear(x, up_w, up_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ungated expert output (N, H)."""
        up_w, up_b, down_w = self.weights()
        return F.linear(self.act(F.linear(x, up_w, up_b)), down_w)


class ACOCMoE(nn.Module):
    """Router + experts: y = Σ_e weight_e(x) · gate_e · expert_e(x).

    Training hooks, all off by default: `force_experts`/`force_share` make the router send that share of
    tokens to the listed (new) experts by raising their logit above the token's maximum (post-expansion
    warmup); `capture` keeps detached inputs, pre-activations and routing weights (saturation metrics, routing
    replay). The last routing weights (with gradient) and the valid-token mask are kept for the growth penalty.
    """

    def __init__(self, config: ACOCConfig, layer_idx: int) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.hidden_act = config.hidden_act
        self.gate_init = config.gate_init
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.experts = nn.ModuleList(
            [
                ACOCExpert(config.hidden_size, widths, config.hidden_act, config.gate_init)
                for widths in config.expert_widths[layer_idx]
            ]
        )
        self.force_experts: list[int] = []
        self.force_share = 0.0
        self.force_generator: torch.Generator | None = None
        self.capture = False
        self.captured: list[dict[str, Any]] = []
        self.last_weights: torch.Tensor | None = None
        self.last_valid: torch.Tensor | None = None

    @property
    def num_experts(self) -> int:
        """Current number of experts."""
        return len(self.experts)

    def expert(self, index: int) -> ACOCExpert:
        """Expert `index` (typed access into the ModuleList)."""
        expert = self.experts[index]
        assert isinstance(expert, ACOCExpert)
        return expert

    def expert_list(self) -> list[ACOCExpert]:
        """All experts, in order."""
        return [self.expert(i) for i in range(len(self.experts))]

    def gates(self) -> torch.Tensor:
        """Soft gates (E,) of the experts, differentiable."""
        return torch.sigmoid(torch.stack([e.gate_logit for e in self.expert_list()]))

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits (N, E) from each expert's router row."""
        experts = self.expert_list()
        weight = torch.stack([e.router_weight for e in experts])  # (E, H)
        bias = torch.stack([e.router_bias for e in experts])  # (E,)
        return F.linear(x, weight, bias)

    def _force(self, logits: torch.Tensor) -> torch.Tensor:
        """Raise a new expert's logit above the token maximum for a `force_share` of tokens."""
        N = logits.shape[0]
        gen = self.force_generator
        device = gen.device if gen is not None else logits.device
        chosen = torch.rand(N, generator=gen, device=device) < self.force_share
        pick = torch.randint(len(self.force_experts), (N,), generator=gen, device=device)
        target = torch.tensor(self.force_experts, device=device)[pick].to(logits.device)[:, None]
        # Just above the token's best logit: selected under top-k, the largest weight under dense mixing.
        top = logits.max(-1, keepdim=True).values.detach() + 1e-3
        raised = torch.maximum(logits.gather(1, target), top)
        return torch.where(chosen.to(logits.device)[:, None], logits.scatter(1, target, raised), logits)

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Combine weights (N, E): softmax probabilities, restricted to the top k when `top_k > 0`."""
        logits = self.router_logits(x)
        if self.training and self.force_experts and self.force_share > 0:
            logits = self._force(logits)
        probs = logits.float().softmax(-1)
        if 0 < self.top_k < probs.shape[-1]:
            top, index = probs.topk(self.top_k, dim=-1)
            if self.norm_topk_prob:
                top = top / top.sum(-1, keepdim=True)
            probs = torch.zeros_like(probs).scatter(1, index, top)
        return probs.to(x.dtype)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Mix the experts over the tokens of `x` (B, T, H); `valid` (B, T) marks non-padding tokens."""
        B, T, H = x.shape
        flat = x.reshape(-1, H)
        weights = self.routing_weights(flat)  # (N, E)
        self.last_weights = weights
        self.last_valid = valid.reshape(-1) if valid is not None else None
        dense = self.top_k == 0 or self.top_k >= len(self.experts)
        record: dict[str, Any] = {
            "inputs": flat.detach(),
            "weights": weights.detach(),
            "valid": self.last_valid,
            "pre": [],
        }
        experts = self.expert_list()
        if dense and len(experts) > 1 and len({sum(e.widths) for e in experts}) == 1:
            out = self._dense_stacked(flat, weights, experts, record)
        else:
            out = self._per_expert(flat, weights, experts, dense, record)
        if self.capture:
            self.captured.append(record)
        return out.view(B, T, H)

    def _dense_stacked(
        self, flat: torch.Tensor, weights: torch.Tensor, experts: list[ACOCExpert], record: dict[str, Any]
    ) -> torch.Tensor:
        """Dense mixing of equal-width experts as two batched matmuls (same result as the per-expert loop)."""
        parts = [e.weights() for e in experts]
        up_w = torch.stack([p[0] for p in parts])  # (E, W, H)
        up_b = torch.stack([p[1] for p in parts])  # (E, W)
        down_w = torch.stack([p[2] for p in parts])  # (E, H, W)
        pre = torch.einsum("nh,ewh->enw", flat, up_w) + up_b[:, None, :]  # (E, N, W)
        if self.capture:
            record["pre"].extend((None, p.detach()) for p in pre)
        y = torch.einsum("enw,ehw->enh", experts[0].act(pre), down_w)  # (E, N, H)
        mix = weights * self.gates().to(weights.dtype)  # (N, E)
        return torch.einsum("ne,enh->nh", mix, y)

    def _per_expert(
        self,
        flat: torch.Tensor,
        weights: torch.Tensor,
        experts: list[ACOCExpert],
        dense: bool,
        record: dict[str, Any],
    ) -> torch.Tensor:
        """Loop over experts; under top-k each expert sees only the tokens routed to it."""
        out = torch.zeros_like(flat)
        for e, expert in enumerate(experts):
            if dense:
                rows = None
                inputs = flat
            else:
                rows = weights[:, e].nonzero().squeeze(-1)
                if rows.numel() == 0:
                    if self.capture:
                        record["pre"].append((rows, flat.new_zeros(0, sum(expert.widths))))
                    continue
                inputs = flat[rows]
            up_w, up_b, down_w = expert.weights()
            pre = F.linear(inputs, up_w, up_b)
            if self.capture:
                record["pre"].append((rows, pre.detach()))
            y = F.linear(expert.act(pre), down_w) * expert.gate
            # Dense: every row; top-k: only the rows routed to this expert.
            mixed = weights[:, e : e + 1] * y if rows is None else weights[rows, e : e + 1] * y
            out = out + mixed if rows is None else out.index_add(0, rows, mixed)
        return out


class ACOCDecoderLayer(RotaryDecoderLayer):
    """Pre-norm block: attention then the mixture of experts (told which tokens are padding), each with a residual."""

    def __init__(self, config: ACOCConfig, layer_idx: int) -> None:
        heads, eps = config.num_attention_heads, config.rms_norm_eps
        super().__init__(config.hidden_size, heads, eps, layer_idx, ACOCMoE(config, layer_idx))


class ACOCPreTrainedModel(PreTrainedModel):
    """Weight init and HF plumbing shared by the ACOC models."""

    config: ACOCConfig
    config_class = ACOCConfig
    base_model_prefix = "model"
    _no_split_modules = ["ACOCDecoderLayer"]  # noqa: RUF012 (transformers class-attribute convention)
    _skip_keys_device_placement = ["past_key_values"]  # noqa: RUF012
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, ACOCRotaryEmbedding):
            # A non-persistent buffer: from_pretrained builds on the meta device and never loads it.
            init.copy_(module.inv_freq, module.compute_inv_freq())
        elif isinstance(module, ACOCExpert):
            init.constant_(module.gate_logit, self.config.gate_init)
            init.normal_(module.router_weight, mean=0.0, std=std)
            init.zeros_(module.router_bias)


class ACOCModel(ACOCPreTrainedModel, DecoderBackbone[ACOCConfig]):
    """The ACOC decoder stack: embeddings, layers, final norm."""

    def __init__(self, config: ACOCConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([ACOCDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = ACOCRotaryEmbedding(config.hidden_size // config.num_attention_heads, config.rope_theta)
        self.post_init()

    @property
    def moe_layers(self) -> list[ACOCMoE]:
        """The mixture-of-experts module of every layer."""
        moes = [layer.mlp for layer in self.layers]
        assert all(isinstance(moe, ACOCMoE) for moe in moes)
        return moes  # type: ignore[return-value]

    def decode(self, inputs: DecoderInputs) -> BaseModelOutputWithPast:
        """The layers (each MoE told which tokens are padding) and the final norm."""
        x = inputs.hidden
        cos, sin = self.rotary_emb(x, inputs.position_ids)
        attention = AttentionInputs((cos[:, None], sin[:, None]), inputs.causal_mask(), inputs.cache)
        mask = inputs.attention_mask
        valid = mask[:, -x.shape[1] :].bool() if mask is not None else None
        for layer in self.layers:
            x = layer(x, attention, valid)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), past_key_values=inputs.cache)


class ACOCForCausalLM(ACOCPreTrainedModel, DecoderLMHead[ACOCConfig]):
    """ACOC with a (tied) LM head; loss is next-token cross-entropy over labels != -100."""

    backbone_class = ACOCModel
    model: ACOCModel

    @property
    def moe_layers(self) -> list[ACOCMoE]:
        """The mixture-of-experts module of every layer."""
        return self.model.moe_layers

    def next_token_loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Cross-entropy of the logits before the last position against the labels after the first.

        ACOC keeps this form rather than transformers' padded shift: the two sum in another order, and
        trained ACOC checkpoints are reproduced bit for bit.
        """
        shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
        shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
        if num_items_in_batch is None:
            return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
        return loss / num_items_in_batch
