"""LEGO: a layered decoder-only LM with an exit head after each block and confidence routing.

A LEGO model is a stack of blocks. Block 1 (layers ``1..exit_layers[0]``) is an ordinary causal
Transformer trained first to stand alone (phase 1). Every later block is added by
:meth:`LEGOForCausalLM.extend_from`, trained on the hard tokens only (phase 2), and has its own exit
head (RMSNorm + linear) after its last layer.

Design choice, and why: the upper blocks are *token-wise*. Each upper layer is a pre-norm decoder
layer evaluated at a single position (self-attention over one token reduces to a linear map, kept as
``token_proj``), followed by a SwiGLU MLP. Context is mixed by the lower, causal block; the upper
blocks refine each token's exit-layer state on their own. This is what makes the seed's design
exact rather than approximate:

- hard examples are token-level (one exit-layer hidden state + one target per token), and training
  the upper block directly on them (``train_upper_layers``) is the same computation the upper block
  performs at inference, with no missing context;
- routed inference (``forward_inference``) gathers the tokens whose exit confidence is below the
  threshold, runs only those through the upper layers and scatters the results back. Exited tokens
  never touch the upper layers, and no later token needs their upper-layer keys/values, so no KV
  copy-through or masked full pass is needed and ``compute_cost`` is real FLOPs.

A model with a single block (``exit_layers == [num_hidden_layers]``) is a plain causal Transformer:
that is the phase-1 shallow model and also the full-depth baseline.

References: early exit (Teerapittayanon et al., 2016), deep supervision (Lee et al., 2015),
confident adaptive LM / CALM (Schuster et al., 2022) for the routing rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from cascadelab.models.layers import AttentionInputs, RMSNorm, RotaryDecoderLayer, rope_cos_sin
from cascadelab.models.lego.configuration_lego import LEGOConfig
from cascadelab.models.modeling_decoder import DecoderBackbone, DecoderInputs, DecoderLMHead, kept_positions
from cascadelab.models.utils import to_device

IGNORE_INDEX = -100


# --------------------------------------------------------------------------- layers


class LEGOMLP(nn.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, config: LEGOConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply down(silu(gate(x)) * up(x))."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LEGODecoderLayer(RotaryDecoderLayer):
    """Pre-norm causal decoder layer (the lower, contextual block)."""

    mlp: LEGOMLP

    def __init__(self, config: LEGOConfig, layer_idx: int) -> None:
        heads, eps = config.num_attention_heads, config.rms_norm_eps
        super().__init__(config.hidden_size, heads, eps, layer_idx, LEGOMLP(config))

    def output_projections(self) -> list[nn.Linear]:
        """The projections writing into the residual stream."""
        return [self.self_attn.o_proj, self.mlp.down_proj]


class LEGOTokenLayer(nn.Module):
    """Pre-norm decoder layer restricted to its own position (an upper, token-wise layer).

    Self-attention over a single token is a linear map of that token (value then output
    projection); ``token_proj`` is that map. Works on hidden states of any shape ``(..., D)``, so
    the same weights serve whole sequences and gathered hard tokens.
    """

    def __init__(self, config: LEGOConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.token_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LEGOMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual token map then residual MLP."""
        x = x + self.token_proj(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))

    def output_projections(self) -> list[nn.Linear]:
        """The projections writing into the residual stream."""
        return [self.token_proj, self.mlp.down_proj]


# --------------------------------------------------------------------------- models


class LEGOPreTrainedModel(PreTrainedModel):
    """Shared Hugging Face plumbing for LEGO models."""

    config_class = LEGOConfig
    config: LEGOConfig
    base_model_prefix = "model"
    _no_split_modules = ["LEGODecoderLayer", "LEGOTokenLayer"]  # noqa: RUF012 (HF class attribute)
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)


class LEGOModel(LEGOPreTrainedModel, DecoderBackbone[LEGOConfig]):
    """Backbone: embeddings, the causal lower block, token-wise upper layers and the exit norms."""

    def __init__(self, config: LEGOConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        ctx = config.contextual_layers
        layers: list[nn.Module] = [LEGODecoderLayer(config, i) for i in range(ctx)]
        layers += [LEGOTokenLayer(config) for _ in range(ctx, config.depth)]
        self.layers = nn.ModuleList(layers)
        self.exit_norms = nn.ModuleList([RMSNorm(config.hidden_size, config.rms_norm_eps) for _ in config.exit_points])
        self.post_init()

    def contextual(self, inputs: DecoderInputs, collect: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Run the causal block on prepared inputs; return the residual stream after it (B, T, D).

        If ``collect`` is a list, the residual stream after each causal layer is appended to it.
        """
        x = inputs.hidden
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        cos, sin = rope_cos_sin(inputs.position_ids, head_dim, self.config.rope_theta)
        cos_sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (B, 1, T, hd): broadcast over heads
        attention = AttentionInputs(cos_sin, inputs.causal_mask(), inputs.cache)
        for layer in self.layers[: self.config.contextual_layers]:
            x = layer(x, attention)
            if collect is not None:
                collect.append(x)
        return x

    def contextual_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        collect: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`contextual` on whole sequences without a cache (training passes and routed inference)."""
        return self.contextual(self.prepare_inputs(input_ids, attention_mask=attention_mask, use_cache=False), collect)

    def token_layers(
        self, hidden: torch.Tensor, start: int, end: int, collect: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Run token-wise layers ``start+1..end`` (1-based) on hidden states of any shape (..., D)."""
        if start < self.config.contextual_layers or end > self.config.depth or start > end:
            raise ValueError(
                f"token layers: need {self.config.contextual_layers} <= start <= end <= {self.config.depth}, "
                f"got start={start}, end={end}"
            )
        for layer in self.layers[start:end]:
            hidden = layer(hidden)
            if collect is not None:
                collect.append(hidden)
        return hidden

    def decode(self, inputs: DecoderInputs) -> BaseModelOutputWithPast:
        """Full-depth pass; ``last_hidden_state`` is normalised by the final exit norm."""
        h = self.token_layers(self.contextual(inputs), self.config.contextual_layers, self.config.depth)
        return BaseModelOutputWithPast(last_hidden_state=self.exit_norms[-1](h), past_key_values=inputs.cache)


@dataclass
class LEGOTrainOutput:
    """Logits of the routing exit (shallow) and of the final exit (deep), plus the exit-layer state."""

    shallow_logits: torch.Tensor
    deep_logits: torch.Tensor
    exit_hidden_states: torch.Tensor


@dataclass
class LEGOInferenceOutput:
    """Routed logits with the routing decision and its cost.

    ``exited`` is True where a token stopped at the exit layer; ``shallow_ratio`` and ``compute_cost``
    (layers run per token / depth) are over the routed positions (attention mask and ``predict_mask``).
    """

    logits: torch.Tensor
    exited: torch.Tensor
    confidence: torch.Tensor
    shallow_ratio: float
    compute_cost: float


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with positions: position t predicts ``labels[t+1]``; the last position -100."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | None = None) -> torch.Tensor:
    """Next-token cross-entropy over labels != -100 (labels aligned with inputs, shifted here)."""
    targets = shifted_targets(labels)
    if num_items_in_batch is None:
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return total / num_items_in_batch


class LEGOForCausalLM(LEGOPreTrainedModel, DecoderLMHead[LEGOConfig]):
    """Causal LM with an exit head after every block and confidence-routed inference.

    ``forward`` is the standard full-depth pass (loss, KV cache, ``generate``); ``forward(routed=True)``
    and ``forward_inference`` route tokens at ``exit_layer``. Exit head ``i`` is ``exit_heads[i]``
    applied after ``model.exit_norms[i]``; the first head is tied to the embeddings.
    """

    _tied_weights_keys = {"exit_heads.0.weight": "model.embed_tokens.weight"}  # noqa: RUF012 (HF API)
    backbone_class = LEGOModel
    model: LEGOModel

    def add_output_heads(self, config: LEGOConfig) -> None:
        """One exit head per block instead of a single LM head."""
        self.exit_heads = nn.ModuleList(
            [nn.Linear(config.hidden_size, config.vocab_size, bias=False) for _ in config.exit_points]
        )

    # ----------------------------------------------------------------- HF plumbing

    def get_output_embeddings(self) -> nn.Module:
        """The final exit's projection (what ``last_hidden_state`` is decoded with)."""
        return self.exit_heads[-1]

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        """Replace the final exit's projection."""
        self.exit_heads[-1] = new_embeddings

    # ----------------------------------------------------------------- exits

    def exit_index(self, layer: int) -> int:
        """Index of the exit head serving ``layer``: the first exit at or after it."""
        if not 1 <= layer <= self.config.depth:
            raise ValueError(f"layer: must be in 1..{self.config.depth}, got {layer}")
        return next(i for i, e in enumerate(self.config.exit_points) if e >= layer)

    def exit_logits(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """Logits of the exit head serving ``layer`` for residual states ``hidden`` (..., D)."""
        i = self.exit_index(layer)
        return self.exit_heads[i](self.model.exit_norms[i](hidden))

    def _resolve_exit_layer(self, exit_layer: int | None) -> int:
        layer = self.config.exit_layer if exit_layer is None else exit_layer
        assert layer is not None
        if layer not in self.config.exit_points:
            raise ValueError(f"exit_layer: must be one of {self.config.exit_points}, got {layer}")
        return int(layer)

    def exit_hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        exit_layer: int | None = None,
    ) -> torch.Tensor:
        """Residual stream after ``exit_layer`` (B, T, D): the input of the upper block."""
        layer = self._resolve_exit_layer(exit_layer)
        h = self.model.contextual_states(input_ids, attention_mask)
        return self.model.token_layers(h, self.config.contextual_layers, layer)

    # ----------------------------------------------------------------- passes

    def lm_forward(
        self,
        inputs: DecoderInputs,
        labels: torch.Tensor | None,
        logits_to_keep: int | torch.Tensor,
        routed: bool = False,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Standard causal-LM pass at full depth; with ``routed=True`` tokens exit early by confidence."""
        h = kept_positions(self.model.contextual(inputs), logits_to_keep)
        if routed:
            layer = self._resolve_exit_layer(None)
            h = self.model.token_layers(h, self.config.contextual_layers, layer)
            logits = self._route(h, None, layer, inputs.attention_mask, None).logits
        else:
            h = self.model.token_layers(h, self.config.contextual_layers, self.config.depth)
            logits = self.exit_logits(h, self.config.depth)
        loss = None if labels is None else self.next_token_loss(logits, labels, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=inputs.cache)

    def prepare_inputs_for_generation(
        self, *args: Any, inputs_embeds: torch.Tensor | None = None, routed: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """The per-step inputs of ``generate``; naming ``routed`` here lets ``generate(routed=True)`` pass it on."""
        step: dict[str, Any] = super().prepare_inputs_for_generation(  # type: ignore[misc]
            *args, inputs_embeds=inputs_embeds, routed=routed, **kwargs
        )
        return step

    def forward_all_layers(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        layers: Iterable[int] | None = None,
    ) -> list[torch.Tensor]:
        """Logits after every layer (index ``l-1`` is layer ``l``), each through its block's exit head.

        ``layers`` restricts which logits are computed (others are skipped from the list order: the
        result then holds the requested layers, ascending). Used by deep supervision and by tests.
        """
        depth = self.config.depth
        wanted = sorted(set(range(1, depth + 1) if layers is None else layers))
        if not wanted or wanted[0] < 1 or wanted[-1] > depth:
            raise ValueError(f"layers: must be a non-empty subset of 1..{depth}, got {wanted}")
        states: list[torch.Tensor] = []
        h = self.model.contextual_states(input_ids, attention_mask, collect=states)
        if wanted[-1] > self.config.contextual_layers:
            self.model.token_layers(h, self.config.contextual_layers, wanted[-1], collect=states)
        return [self.exit_logits(states[layer - 1], layer) for layer in wanted]

    def forward_train(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        exit_layer: int | None = None,
    ) -> LEGOTrainOutput:
        """Shallow logits at ``exit_layer`` and deep logits at full depth from one pass."""
        layer = self._resolve_exit_layer(exit_layer)
        h = self.exit_hidden_states(input_ids, attention_mask, layer)
        deep = self.model.token_layers(h, layer, self.config.depth)
        return LEGOTrainOutput(
            shallow_logits=self.exit_logits(h, layer),
            deep_logits=self.exit_logits(deep, self.config.depth),
            exit_hidden_states=h,
        )

    @torch.no_grad()
    def forward_inference(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        routing_threshold: float | None = None,
        exit_layer: int | None = None,
        predict_mask: torch.Tensor | None = None,
    ) -> LEGOInferenceOutput:
        """Confidence-routed inference: tokens with exit confidence >= threshold stop at ``exit_layer``.

        The other tokens are gathered, run through the upper layers alone and scattered back; exited
        tokens never enter them. ``predict_mask`` (B, T) limits which positions need a prediction
        (e.g. response tokens); the others keep their shallow logits and are not counted.
        Threshold 0 exits every token; a threshold above 1 routes every token to full depth.
        """
        layer = self._resolve_exit_layer(exit_layer)
        h = self.model.contextual_states(input_ids, attention_mask)
        h = self.model.token_layers(h, self.config.contextual_layers, layer)
        return self._route(h, routing_threshold, layer, attention_mask, predict_mask)

    def _route(
        self,
        h: torch.Tensor,
        routing_threshold: float | None,
        layer: int,
        attention_mask: torch.Tensor | None,
        predict_mask: torch.Tensor | None,
    ) -> LEGOInferenceOutput:
        """Route exit-layer states ``h`` (B, T, D): shallow logits for all, upper layers for the hard."""
        threshold = self.config.routing_threshold if routing_threshold is None else routing_threshold
        if threshold is None:
            raise ValueError("routing_threshold: not set on the call nor in the model config")
        depth = self.config.depth
        if layer >= depth:
            raise ValueError(f"exit_layer: routing needs layers above it, got {layer} of {depth}")
        shallow = self.exit_logits(h, layer)
        confidence = F.softmax(shallow.float(), dim=-1).amax(dim=-1)
        active = torch.ones_like(confidence, dtype=torch.bool)
        if attention_mask is not None:
            active &= attention_mask[:, -h.shape[1] :].bool()
        if predict_mask is not None:
            active &= predict_mask.bool()
        hard = active & (confidence < threshold)
        logits = shallow
        n_hard = int(hard.sum())
        if n_hard:
            deep = self.model.token_layers(h[hard], layer, depth)  # gather (N, D), upper layers only
            logits = shallow.clone()
            logits[hard] = self.exit_logits(deep, depth).to(logits.dtype)  # scatter back
        n_active = max(int(active.sum()), 1)
        return LEGOInferenceOutput(
            logits=logits,
            exited=active & ~hard,
            confidence=confidence,
            shallow_ratio=1.0 - n_hard / n_active,
            compute_cost=(layer * n_active + (depth - layer) * n_hard) / (depth * n_active),
        )

    # ----------------------------------------------------------------- growth

    def freeze_lower(self, num_lower_layers: int) -> None:
        """Freeze embeddings, layers ``1..num_lower_layers`` and the exits at or below that layer."""
        if num_lower_layers not in self.config.exit_points[:-1]:
            raise ValueError(
                f"num_lower_layers: must be an exit layer below the top, one of "
                f"{self.config.exit_points[:-1]}, got {num_lower_layers}"
            )
        frozen: list[nn.Module] = [self.model.embed_tokens, *self.model.layers[:num_lower_layers]]
        for i, e in enumerate(self.config.exit_points):
            if e <= num_lower_layers:
                frozen += [self.model.exit_norms[i], self.exit_heads[i]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    @classmethod
    def extend_from(
        cls,
        source_model: LEGOForCausalLM,
        num_layers: int,
        routing_threshold: float | None = None,
        freeze_lower: bool = True,
        seed: int = 0,
    ) -> LEGOForCausalLM:
        """Grow ``source_model`` to ``num_layers`` by adding one token-wise block on top.

        Copies every source weight exactly; the new block's exit norm and head start as copies of the
        source's final exit and its output projections start at zero, so the extended model
        initially predicts exactly what the source does. ``freeze_lower`` freezes the embeddings and
        all copied layers and exits. ``seed`` drives the new layers' initialisation (local RNG).
        """
        src = source_model.config
        if num_layers <= src.depth:
            raise ValueError(f"num_layers: must exceed the source depth {src.depth}, got {num_layers}")
        config = src.derive(
            num_hidden_layers=num_layers,
            exit_layers=[*src.exit_points, num_layers],
            exit_layer=src.depth,
            routing_threshold=routing_threshold,
        )
        device = next(source_model.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
        to_device(model, device, next(source_model.parameters()).dtype)
        missing, unexpected = model.load_state_dict(source_model.state_dict(), strict=False)
        n_src = len(src.exit_points)
        expected_new = {f"exit_heads.{n_src}.weight", f"model.exit_norms.{n_src}.weight"} | {
            f"model.layers.{i}." for i in range(src.depth, num_layers)
        }
        if unexpected or any(not any(m.startswith(e) for e in expected_new) for m in missing):
            raise ValueError(f"source_model: weights do not match the LEGO layout (missing {missing})")
        with torch.no_grad():
            model.model.exit_norms[n_src].load_state_dict(source_model.model.exit_norms[-1].state_dict())
            model.exit_heads[n_src].load_state_dict(source_model.exit_heads[-1].state_dict())
            for layer in model.model.layers[src.depth :]:
                for proj in cast(LEGOTokenLayer, layer).output_projections():
                    proj.weight.zero_()
        if freeze_lower:
            model.freeze_lower(src.depth)
        return model


LEGOTransformer = LEGOForCausalLM  # the seed's name, kept as an alias


def build_lego_model(config: LEGOConfig, seed: int = 0) -> LEGOForCausalLM:
    """Build a freshly initialised model with a local RNG seeded by ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LEGOForCausalLM(config)


__all__ = [
    "IGNORE_INDEX",
    "LEGOForCausalLM",
    "LEGOInferenceOutput",
    "LEGOModel",
    "LEGOPreTrainedModel",
    "LEGOTrainOutput",
    "LEGOTransformer",
    "build_lego_model",
    "lm_loss",
    "shifted_targets",
]
