"""LEGO: a layered decoder-only LM with an exit head after each block and confidence routing.

A LEGO model is a stack of blocks. Block 1 (layers ``1..exit_layers[0]``) is an ordinary causal
Transformer trained first to stand alone (phase 1). Every later block is added by
:meth:`LEGOForCausalLM.extend_from`, trained on the hard tokens only (phase 2), and has its own exit
head (RMSNorm + linear) after its last layer.

Design choice, and why: the upper layers are standard pre-norm causal decoder layers whose keys and
values come, at every position, from the state the lower block left there (the exit-layer state, frozen
for the upper block): CALM's state propagation ("attending back to missing hidden representations due
to early exits"), where a skipped layer still runs its key/value projections on the exited token's
state. Queries come from the token's own state as it climbs. Hence:

- a hard token's deep output does not depend on which of its neighbours exited (their keys/values are
  the same either way), so training the upper block on the hard tokens of whole sequences, with the
  sequence's exit-layer states as context, is exactly the computation routed inference performs;
- routed inference (``forward_inference``, ``forward(routed=True)``, ``generate(routed=True)``) runs the
  upper layers' key/value projections for every position and the rest of each upper layer (query,
  output projection, MLP) only for the tokens whose exit confidence is below the threshold, gathered;
  the FLOP accounting (:mod:`cascadelab.models.lego.flops`) counts both.

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

from cascadelab.models.layers import AttentionInputs, RMSNorm, RotaryDecoderLayer, rope_cos_sin, rotate_half
from cascadelab.models.lego.configuration_lego import LEGOConfig
from cascadelab.models.lego.flops import routed_compute_cost
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


class LEGOUpperLayer(LEGODecoderLayer):
    """Pre-norm causal decoder layer of an upper block: queries from its input, keys/values from a context state.

    The context is the exit-layer state of every position (see the module docstring). ``forward`` runs
    it densely on whole sequences; ``context_kv`` + ``forward_rows`` run it for gathered positions only.
    """

    def context_kv(self, context: torch.Tensor, attention: AttentionInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values (B, H, S, hd) of the context states (B, T, D), cache included (and filled)."""
        attn = self.self_attn
        b, t, _ = context.shape
        c = self.input_layernorm(context)
        k = attn.k_proj(c).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(c).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        cos, sin = attention.cos_sin
        k = k * cos + rotate_half(k) * sin
        if attention.cache is not None:
            k, v = attention.cache.update(k, v, attn.layer_idx)
        return k, v

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, attention: AttentionInputs, context: torch.Tensor
    ) -> torch.Tensor:
        """Residual attention of ``x`` (B, T, D) over the context's keys/values, then the residual MLP."""
        k, v = self.context_kv(context, attention)
        attn = self.self_attn
        b, t, _ = x.shape
        q = attn.q_proj(self.input_layernorm(x)).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        cos, sin = attention.cos_sin
        q = q * cos + rotate_half(q) * sin
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention.mask)
        x = x + attn.o_proj(y.transpose(1, 2).reshape(b, t, -1))
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_rows(
        self,
        x: torch.Tensor,
        rows: tuple[torch.Tensor, torch.Tensor],
        kv: tuple[torch.Tensor, torch.Tensor],
        attention: AttentionInputs,
    ) -> torch.Tensor:
        """The layer for gathered positions only: ``x`` (N, D) at ``rows`` = (batch index, position index)."""
        attn = self.self_attn
        b_idx, t_idx = rows
        n = x.shape[0]
        q = attn.q_proj(self.input_layernorm(x)).view(n, attn.num_heads, 1, attn.head_dim)
        cos, sin = attention.cos_sin  # (B, 1, T, hd)
        cos_r, sin_r = cos[b_idx, :, t_idx][:, :, None], sin[b_idx, :, t_idx][:, :, None]  # (N, 1, 1, hd)
        q = q * cos_r + rotate_half(q) * sin_r
        k, v = kv[0][b_idx], kv[1][b_idx]  # (N, H, S, hd): each row's own sequence
        mask = attention.mask[b_idx, :, t_idx][:, :, None]  # (N, 1, 1, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + attn.o_proj(y.reshape(n, -1))
        return x + self.mlp(self.post_attention_layernorm(x))


# --------------------------------------------------------------------------- models


class LEGOPreTrainedModel(PreTrainedModel):
    """Shared Hugging Face plumbing for LEGO models."""

    config_class = LEGOConfig
    config: LEGOConfig
    base_model_prefix = "model"
    _no_split_modules = ["LEGODecoderLayer", "LEGOUpperLayer"]  # noqa: RUF012 (HF class attribute)
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)


class LEGOModel(LEGOPreTrainedModel, DecoderBackbone[LEGOConfig]):
    """Backbone: embeddings, the causal lower block, the attending upper layers and the exit norms."""

    def __init__(self, config: LEGOConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        ctx = config.contextual_layers
        layers: list[nn.Module] = [LEGODecoderLayer(config, i) for i in range(ctx)]
        layers += [LEGOUpperLayer(config, i) for i in range(ctx, config.depth)]
        self.layers = nn.ModuleList(layers)
        self.exit_norms = nn.ModuleList([RMSNorm(config.hidden_size, config.rms_norm_eps) for _ in config.exit_points])
        self.post_init()

    def attention_inputs(self, inputs: DecoderInputs) -> AttentionInputs:
        """RoPE tables, causal mask and cache of one forward, shared by every layer."""
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        cos, sin = rope_cos_sin(inputs.position_ids, head_dim, self.config.rope_theta)
        dtype = inputs.hidden.dtype
        cos_sin = cos[:, None].to(dtype), sin[:, None].to(dtype)  # (B, 1, T, hd): broadcast over heads
        return AttentionInputs(cos_sin, inputs.causal_mask(), inputs.cache)

    def lower(
        self, inputs: DecoderInputs, collect: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, AttentionInputs]:
        """Run the causal lower block; return the residual stream after it (B, T, D) and the attention inputs.

        If ``collect`` is a list, the residual stream after each lower layer is appended to it.
        """
        x = inputs.hidden
        attention = self.attention_inputs(inputs)
        for layer in self.layers[: self.config.contextual_layers]:
            x = layer(x, attention)
            if collect is not None:
                collect.append(x)
        return x, attention

    def contextual(self, inputs: DecoderInputs, collect: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`lower` without the attention inputs."""
        return self.lower(inputs, collect)[0]

    def contextual_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        collect: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`contextual` on whole sequences without a cache (training passes and routed inference)."""
        return self.contextual(self.prepare_inputs(input_ids, attention_mask=attention_mask, use_cache=False), collect)

    def _check_upper_range(self, start: int, end: int) -> None:
        if start < self.config.contextual_layers or end > self.config.depth or start > end:
            raise ValueError(
                f"upper layers: need {self.config.contextual_layers} <= start <= end <= {self.config.depth}, "
                f"got start={start}, end={end}"
            )

    def upper_layers(
        self,
        hidden: torch.Tensor,
        context: torch.Tensor,
        attention: AttentionInputs,
        start: int,
        end: int,
        collect: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Upper layers ``start+1..end`` (1-based), dense on ``hidden`` (B, T, D), over ``context``'s keys/values."""
        self._check_upper_range(start, end)
        for layer in self.layers[start:end]:
            hidden = layer(hidden, attention, context)
            if collect is not None:
                collect.append(hidden)
        return hidden

    def upper_rows(
        self,
        hidden: torch.Tensor,
        context: torch.Tensor,
        attention: AttentionInputs,
        rows: tuple[torch.Tensor, torch.Tensor],
        start: int,
        end: int,
    ) -> torch.Tensor:
        """Upper layers ``start+1..end`` for the gathered positions ``rows`` only (``hidden`` (N, D)).

        Every layer still projects keys/values for all positions of ``context`` (and fills the cache):
        exited tokens stay visible to later ones through their exit-layer state.
        """
        self._check_upper_range(start, end)
        for layer in self.layers[start:end]:
            upper = cast(LEGOUpperLayer, layer)
            kv = upper.context_kv(context, attention)
            if hidden.shape[0]:
                hidden = upper.forward_rows(hidden, rows, kv, attention)
        return hidden

    def decode(self, inputs: DecoderInputs) -> BaseModelOutputWithPast:
        """Full-depth pass; ``last_hidden_state`` is normalised by the final exit norm."""
        h, attention = self.lower(inputs)
        h = self.upper_layers(h, h, attention, self.config.contextual_layers, self.config.depth)
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

    def _lower_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, AttentionInputs]:
        """Lower-block states of whole sequences (no cache) and the attention inputs of the pass."""
        inputs = self.model.prepare_inputs(input_ids, attention_mask=attention_mask, use_cache=False)
        return self.model.lower(inputs)

    def exit_hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        exit_layer: int | None = None,
    ) -> torch.Tensor:
        """Residual stream after ``exit_layer`` (B, T, D): the context of the upper block."""
        layer = self._resolve_exit_layer(exit_layer)
        ctx, attention = self._lower_states(input_ids, attention_mask)
        return self.model.upper_layers(ctx, ctx, attention, self.config.contextual_layers, layer)

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
        ctx, attention = self.model.lower(inputs)
        if routed:
            positions = torch.arange(ctx.shape[1], device=ctx.device)
            keep = torch.zeros(ctx.shape[:2], dtype=torch.bool, device=ctx.device)
            keep[:, kept_positions(positions[None], logits_to_keep)[0]] = True
            out = self._route(ctx, attention, None, self._resolve_exit_layer(None), inputs.attention_mask, keep)
            logits = kept_positions(out.logits, logits_to_keep)
        else:
            depth = self.config.depth
            h = self.model.upper_layers(ctx, ctx, attention, self.config.contextual_layers, depth)
            logits = self.exit_logits(kept_positions(h, logits_to_keep), depth)
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
        inputs = self.model.prepare_inputs(input_ids, attention_mask=attention_mask, use_cache=False)
        ctx, attention = self.model.lower(inputs, collect=states)
        if wanted[-1] > self.config.contextual_layers:
            self.model.upper_layers(ctx, ctx, attention, self.config.contextual_layers, wanted[-1], collect=states)
        return [self.exit_logits(states[layer - 1], layer) for layer in wanted]

    def forward_train(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        exit_layer: int | None = None,
    ) -> LEGOTrainOutput:
        """Shallow logits at ``exit_layer`` and deep logits at full depth from one dense pass."""
        layer = self._resolve_exit_layer(exit_layer)
        ctx, attention = self._lower_states(input_ids, attention_mask)
        h = self.model.upper_layers(ctx, ctx, attention, self.config.contextual_layers, layer)
        deep = self.model.upper_layers(h, ctx, attention, layer, self.config.depth)
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

        The other tokens are gathered and run through the upper layers alone (queries, output
        projections, MLPs), attending over every position's exit-layer keys/values; exited tokens
        cost only those key/value projections there. ``predict_mask`` (B, T) limits which positions
        need a prediction (e.g. response tokens); the others keep their shallow logits and are not
        counted. Threshold 0 exits every token; a threshold above 1 routes every token to full depth.
        """
        layer = self._resolve_exit_layer(exit_layer)
        ctx, attention = self._lower_states(input_ids, attention_mask)
        return self._route(ctx, attention, routing_threshold, layer, attention_mask, predict_mask)

    def _route(
        self,
        ctx: torch.Tensor,
        attention: AttentionInputs,
        routing_threshold: float | None,
        layer: int,
        attention_mask: torch.Tensor | None,
        predict_mask: torch.Tensor | None,
    ) -> LEGOInferenceOutput:
        """Route lower-block states ``ctx`` (B, T, D): shallow logits for all, upper layers for the hard."""
        threshold = self.config.routing_threshold if routing_threshold is None else routing_threshold
        if threshold is None:
            raise ValueError("routing_threshold: not set on the call nor in the model config")
        depth = self.config.depth
        if layer >= depth:
            raise ValueError(f"exit_layer: routing needs layers above it, got {layer} of {depth}")
        h = self.model.upper_layers(ctx, ctx, attention, self.config.contextual_layers, layer)
        shallow = self.exit_logits(h, layer)
        confidence = F.softmax(shallow.float(), dim=-1).amax(dim=-1)
        active = torch.ones_like(confidence, dtype=torch.bool)
        if attention_mask is not None:
            active &= attention_mask[:, -h.shape[1] :].bool()
        if predict_mask is not None:
            active &= predict_mask.bool()
        hard = active & (confidence < threshold)
        rows = cast(tuple[torch.Tensor, torch.Tensor], hard.nonzero(as_tuple=True))
        deep = self.model.upper_rows(h[hard], ctx, attention, rows, layer, depth)
        logits = shallow
        n_hard = int(hard.sum())
        if n_hard:
            logits = shallow.clone()
            logits[hard] = self.exit_logits(deep, depth).to(logits.dtype)  # scatter back
        n_active = max(int(active.sum()), 1)
        share = 1.0 - n_hard / n_active
        return LEGOInferenceOutput(
            logits=logits,
            exited=active & ~hard,
            confidence=confidence,
            shallow_ratio=share,
            compute_cost=routed_compute_cost(self.config, layer, share),
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
        """Grow ``source_model`` to ``num_layers`` by adding one block of attending upper layers on top.

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
                for proj in cast(LEGOUpperLayer, layer).output_projections():
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
