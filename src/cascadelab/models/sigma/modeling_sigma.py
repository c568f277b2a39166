"""SIGMA: a hybrid LM stacking Mamba-3 SSM blocks and MLA/differential-attention blocks, each with an MoE FFN.

Features and the papers they follow:

- ``SigmaMambaMixer`` — Mamba-3 SISO mixer (Lahoti et al., 2026; ``mamba_ssm.modules.mamba3.Mamba3``):
  data-dependent decay ``A_t = -softplus(·) <= -A_floor``, complex (rotary) state transition applied by
  rotating B/C by accumulated angles ``φ_t = φ_{t-1} + π tanh(θ_t) Δ_t``, trapezoidal two-term input
  ``h_t = e^{Δ_t A_t} h_{t-1} + (1-λ_t) Δ_t e^{Δ_t A_t} B_{t-1} x_{t-1} + λ_t Δ_t B_t x_t``, B/C RMSNorm
  and biases, ``y = (C_tᵀ h_t + D x_t) · silu(z_t)``, no short convolution. The scan is
  :func:`cascadelab.kernels.complex_scan` (equations in its docstring; Triton on CUDA).
- ``SigmaMLAttention`` — multi-head latent attention (DeepSeek-V2/V3): keys and values come from a
  compressed, normalised latent ``c_kv`` (the only thing cached, with the shared RoPE key), queries and
  keys have a no-RoPE part and a decoupled RoPE part. With ``use_diff_attn`` it is differential
  attention (Ye et al., 2024, "Differential Transformer"): two softmax maps from paired heads,
  ``(softmax(Q1K1ᵀ) - λ softmax(Q2K2ᵀ)) V``, ``λ = e^{λq1·λk1} - e^{λq2·λk2} + λ_init``, per-head
  RMSNorm and a ``(1 - λ_init)`` scale.
- ``SigmaMoE`` (``moe.py``) — shared + routed experts, top-k, DeepSeek-V3 aux-loss-free bias balancing.
- ``BitLinear`` (``bitlinear.py``) — BitNet b1.58 projections, chosen per family by ``bitlinear_families``.
- INSTANT (``instant.py``) — per-block activation checkpointing and chunked cross-entropy, required for
  training forwards with labels.

Every feature counts its executions in ``SigmaForCausalLM.feature_calls``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, MoeCausalLMOutputWithPast

from cascadelab.kernels import TRITON_AVAILABLE, ScanInputs, ScanState, complex_scan, select_backend
from cascadelab.models.layers import RMSNorm, rope_cos_sin, rotate_half
from cascadelab.models.modeling_decoder import DecoderBackbone, DecoderInputs, DecoderLMHead, final_states
from cascadelab.models.sigma.bitlinear import make_linear
from cascadelab.models.sigma.configuration_sigma import SigmaConfig
from cascadelab.models.sigma.features import FeatureCalls
from cascadelab.models.sigma.instant import (
    INSTANT_MISSING,
    InstantPlan,
    checkpointed_call,
    chunked_cross_entropy,
)
from cascadelab.models.sigma.moe import SigmaMLP, SigmaMoE, SigmaTopKRouter


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, [heads,] dim) by RoPE tables (B, T, dim)."""
    if x.ndim == 4:
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def differential_attention(
    q1: torch.Tensor,
    k1: torch.Tensor,
    q2: torch.Tensor,
    k2: torch.Tensor,
    v: torch.Tensor,
    lam: torch.Tensor | float,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """(softmax(q1 k1ᵀ) - λ softmax(q2 k2ᵀ)) v, all (B, H, L, d); both maps run as one SDPA call."""
    bsz, heads, length, _ = q1.shape
    q = torch.stack((q1, q2), dim=2).flatten(1, 2)
    k = torch.stack((k1, k2), dim=2).flatten(1, 2)
    out = F.scaled_dot_product_attention(
        q, k, v.repeat_interleave(2, dim=1), attn_mask=attn_mask, is_causal=is_causal, scale=scale
    )
    out = out.view(bsz, heads, 2, length, v.shape[-1])
    return out[:, :, 0] - lam * out[:, :, 1]


@dataclass
class SigmaBlockInputs:
    """Per-forward context shared by all blocks (masks, RoPE tables, cache)."""

    token_mask: torch.Tensor | None  # (B, T) 1 for real tokens, None when there is no padding
    attn_mask: torch.Tensor | None  # (B, 1, T, S) boolean, None when plain causal
    cos: torch.Tensor
    sin: torch.Tensor
    cache: Cache | None


class SigmaMambaMixer(nn.Module):
    """Mamba-3 SISO mixer: in_proj -> complex trapezoidal scan -> D skip -> silu(z) gate -> out_proj."""

    def __init__(self, config: SigmaConfig, layer_idx: int, features: FeatureCalls) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.features = features
        self.config = config
        self.d_inner = config.ssm_expand * config.hidden_size
        self.head_dim = config.ssm_head_dim
        self.num_heads = self.d_inner // self.head_dim
        self.state_size = config.ssm_state_size
        self.num_angles = config.ssm_num_angles
        n, h = self.state_size, self.num_heads
        self.split_sizes = [self.d_inner, self.d_inner, n, n, h, h, h, self.num_angles]  # z x B C dt A λ θ
        fam, triton = config.bitlinear_families, config.use_triton
        self.in_proj = make_linear(
            "mamba_in", config.hidden_size, sum(self.split_sizes), fam, features, use_triton=triton
        )
        self.out_proj = make_linear("mamba_out", self.d_inner, config.hidden_size, fam, features, use_triton=triton)
        self.dt_bias = nn.Parameter(torch.zeros(h))
        self.D = nn.Parameter(torch.ones(h))
        self.B_bias = nn.Parameter(torch.ones(h, n))
        self.C_bias = nn.Parameter(torch.ones(h, n))
        self.B_norm = RMSNorm(n, eps=1e-5)
        self.C_norm = RMSNorm(n, eps=1e-5)

    def _cached_state(self, cache: Cache | None) -> ScanState | None:
        if cache is None or self.layer_idx >= len(cache.layers):
            return None
        layer: Any = cache.layers[self.layer_idx]
        if not all(layer.has_previous_state.values()):
            return None
        return ScanState(*(layer.recurrent_states[i] for i in range(4)))

    def _store_state(self, cache: Cache, state: ScanState) -> None:
        for i, tensor in enumerate(state):
            cache.update_recurrent_state(tensor.detach(), self.layer_idx, state_idx=i)
            # recurrent-only layers never get the flag from update_conv_state: set it so reads see the state
            cache.layers[self.layer_idx].has_previous_state[i] = True  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor, ctx: SigmaBlockInputs) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); reads and updates the SSM state in ``ctx.cache``."""
        self.features.hit("mamba")
        bsz, seqlen, _ = x.shape
        z, xs, b_in, c_in, dd_dt, dd_a, trap, theta = torch.split(self.in_proj(x), self.split_sizes, dim=-1)
        a = -F.softplus(dd_a.float()).clamp(min=self.config.ssm_a_floor)
        dt = F.softplus(dd_dt.float() + self.dt_bias)
        if ctx.token_mask is not None:  # padding: no step, no input, no rotation
            dt = dt * ctx.token_mask[..., None]
            xs = xs * ctx.token_mask[..., None].to(xs.dtype)
        angle_rate = (torch.tanh(theta.float()) * math.pi).unsqueeze(2).expand(-1, -1, self.num_heads, -1)
        k = self.B_norm(b_in).unsqueeze(2) + self.B_bias
        q = self.C_norm(c_in).unsqueeze(2) + self.C_bias
        v = xs.view(bsz, seqlen, self.num_heads, self.head_dim)
        backend = select_backend(x) if self.config.use_triton else "ref"
        if backend == "triton":
            self.features.hit("triton")
        y, final = complex_scan(
            ScanInputs(q, k, v, a * dt, dt, torch.sigmoid(trap.float()), angle_rate),
            initial_state=self._cached_state(ctx.cache),
            chunk_size=self.config.ssm_chunk_size,
            return_final_state=ctx.cache is not None,
            backend=backend,
        )
        if ctx.cache is not None and final is not None:
            self._store_state(ctx.cache, final)
        y = y + self.D[:, None] * v.float()
        y = y.to(x.dtype).reshape(bsz, seqlen, self.d_inner) * F.silu(z)
        return self.out_proj(y)


class SigmaMLAttention(nn.Module):
    """Multi-head latent attention with a decoupled RoPE key; optionally differential (paired heads, λ)."""

    def __init__(self, config: SigmaConfig, layer_idx: int, features: FeatureCalls) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.features = features
        self.num_heads = config.num_attention_heads
        self.diff = config.use_diff_attn
        self.qk_heads = 2 * self.num_heads if self.diff else self.num_heads
        self.nope, self.rope, self.v_dim = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.qk_dim = self.nope + self.rope
        self.kv_lora_rank = config.kv_lora_rank
        self.scale = self.qk_dim**-0.5
        fam, triton, hidden = config.bitlinear_families, config.use_triton, config.hidden_size
        q_out = self.qk_heads * self.qk_dim
        if config.q_lora_rank > 0:
            self.q_proj: nn.Module = nn.Sequential(
                make_linear("mla_q", hidden, config.q_lora_rank, fam, features, use_triton=triton),
                RMSNorm(config.q_lora_rank, config.rms_norm_eps),
                make_linear("mla_q", config.q_lora_rank, q_out, fam, features, use_triton=triton),
            )
        else:
            self.q_proj = make_linear("mla_q", hidden, q_out, fam, features, use_triton=triton)
        self.kv_a_proj = make_linear("mla_kv", hidden, self.kv_lora_rank + self.rope, fam, features, use_triton=triton)
        self.kv_a_norm = RMSNorm(self.kv_lora_rank, config.rms_norm_eps)
        self.kv_b_proj = make_linear(
            "mla_kv",
            self.kv_lora_rank,
            self.qk_heads * self.nope + self.num_heads * self.v_dim,
            fam,
            features,
            use_triton=triton,
        )
        self.o_proj = make_linear("mla_out", self.num_heads * self.v_dim, hidden, fam, features, use_triton=triton)
        if self.diff:
            self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * layer_idx)
            self.lambda_q1 = nn.Parameter(torch.zeros(self.qk_dim))
            self.lambda_k1 = nn.Parameter(torch.zeros(self.qk_dim))
            self.lambda_q2 = nn.Parameter(torch.zeros(self.qk_dim))
            self.lambda_k2 = nn.Parameter(torch.zeros(self.qk_dim))
            self.subln = RMSNorm(self.v_dim, eps=1e-5)

    def diff_lambda(self) -> torch.Tensor:
        """λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init."""
        return (
            torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
            - torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
            + self.lambda_init
        )

    def forward(self, x: torch.Tensor, ctx: SigmaBlockInputs) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); caches the normalised latent and the rotated shared key."""
        self.features.hit("mla")
        bsz, seqlen, _ = x.shape
        q = self.q_proj(x).view(bsz, seqlen, self.qk_heads, self.qk_dim)
        q = torch.cat((q[..., : self.nope], apply_rope(q[..., self.nope :], ctx.cos, ctx.sin)), dim=-1)
        c_kv, k_pe = self.kv_a_proj(x).split([self.kv_lora_rank, self.rope], dim=-1)
        c_kv = self.kv_a_norm(c_kv)
        k_pe = apply_rope(k_pe, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            c_all, kpe_all = ctx.cache.update(c_kv.unsqueeze(1), k_pe.unsqueeze(1), self.layer_idx)
            c_kv, k_pe = c_all.squeeze(1), kpe_all.squeeze(1)
        total = c_kv.shape[1]
        k_nope, v = self.kv_b_proj(c_kv).split([self.qk_heads * self.nope, self.num_heads * self.v_dim], dim=-1)
        k_nope = k_nope.view(bsz, total, self.qk_heads, self.nope)
        k = torch.cat((k_nope, k_pe.unsqueeze(2).expand(-1, -1, self.qk_heads, -1)), dim=-1)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, heads, L, qk_dim)
        v = v.view(bsz, total, self.num_heads, self.v_dim).transpose(1, 2)
        causal = ctx.attn_mask is None
        if self.diff:
            self.features.hit("diff_attn")
            q, k = q.unflatten(1, (self.num_heads, 2)), k.unflatten(1, (self.num_heads, 2))
            out = differential_attention(
                q[:, :, 0],
                k[:, :, 0],
                q[:, :, 1],
                k[:, :, 1],
                v,
                self.diff_lambda().to(v.dtype),
                attn_mask=ctx.attn_mask,
                is_causal=causal,
                scale=self.scale,
            )
            out = self.subln(out) * (1.0 - self.lambda_init)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.attn_mask, is_causal=causal, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(bsz, seqlen, self.num_heads * self.v_dim))


class _SigmaBlock(nn.Module):
    """Pre-norm residual block: mixer, then the MoE (or dense SwiGLU) feed-forward."""

    mixer: nn.Module

    def __init__(self, config: SigmaConfig, features: FeatureCalls) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn: nn.Module
        if config.moe_num_routed_experts > 0:
            self.ffn = SigmaMoE(config, features)
        else:
            size = config.moe_num_shared_experts * config.moe_shared_intermediate_size
            self.ffn = SigmaMLP(config, size, "moe_shared", features)

    def forward(self, hidden: torch.Tensor, ctx: SigmaBlockInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the new hidden state and this block's (unweighted) balance loss."""
        hidden = hidden + self.mixer(self.input_norm(hidden), ctx)
        out = self.ffn(self.ffn_norm(hidden))
        aux = hidden.new_zeros((), dtype=torch.float32)
        if isinstance(out, tuple):
            out, aux = out
        return hidden + out, aux


class SigmaMambaBlock(_SigmaBlock):
    """Mamba-3 mixer + MoE feed-forward."""

    def __init__(self, config: SigmaConfig, layer_idx: int, features: FeatureCalls) -> None:
        super().__init__(config, features)
        self.mixer = SigmaMambaMixer(config, layer_idx, features)


class SigmaMLABlock(_SigmaBlock):
    """MLA / differential attention + MoE feed-forward."""

    def __init__(self, config: SigmaConfig, layer_idx: int, features: FeatureCalls) -> None:
        super().__init__(config, features)
        self.mixer = SigmaMLAttention(config, layer_idx, features)


class SigmaPreTrainedModel(PreTrainedModel):
    """Weight initialisation and HF plumbing shared by the SIGMA models."""

    config_class = SigmaConfig
    config: SigmaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False  # INSTANT owns checkpointing (instant.py)
    _no_split_modules = ["SigmaMambaBlock", "SigmaMLABlock"]  # noqa: RUF012 (HF attribute)
    _supports_sdpa = True
    _is_stateful = True  # Mamba states cannot be rolled back (no assisted decoding)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """HF defaults plus Mamba-3 dt/D/bias, router and differential-λ initialisation."""
        super()._init_weights(module)
        cfg = self.config
        if isinstance(module, SigmaMambaMixer):
            lo, hi = math.log(cfg.ssm_dt_min), math.log(cfg.ssm_dt_max)
            dt = torch.exp(torch.rand(module.num_heads) * (hi - lo) + lo).clamp(min=cfg.ssm_dt_init_floor)
            init.copy_(module.dt_bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            init.ones_(module.D)
            init.ones_(module.B_bias)
            init.ones_(module.C_bias)
        elif isinstance(module, SigmaMLAttention) and module.diff:
            for p in (module.lambda_q1, module.lambda_k1, module.lambda_q2, module.lambda_k2):
                init.normal_(p, mean=0.0, std=0.1)
        elif isinstance(module, SigmaTopKRouter):
            init.normal_(module.weight, mean=0.0, std=cfg.initializer_range)
            init.zeros_(module.e_score_correction_bias)
        elif isinstance(module, SigmaMoE):
            init.zeros_(module.last_load)


@dataclass
class SigmaModelOutput(BaseModelOutputWithPast):
    """Backbone output plus the summed (unweighted) MoE balance loss."""

    aux_loss: torch.Tensor | None = None


class SigmaModel(SigmaPreTrainedModel, DecoderBackbone[SigmaConfig]):
    """Embedding, the hybrid block stack and the final norm; the cache holds MLA latents and Mamba states."""

    def __init__(self, config: SigmaConfig) -> None:
        super().__init__(config)
        self.features = FeatureCalls()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            SigmaMLABlock(config, i, self.features) if kind == "mla" else SigmaMambaBlock(config, i, self.features)
            for i, kind in enumerate(config.block_types)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.checkpoint_blocks = False
        self.post_init()

    def uses_cache_by_default(self) -> bool:
        """``config.use_cache``, but never while training."""
        return self.config.use_cache and not self.training

    def cached_length(self, cache: Cache | None) -> int:
        """Tokens in the MLA layers' cache; 0 when there are none (Mamba states have no length)."""
        return super().cached_length(cache) if "mla" in self.config.block_types else 0

    def _block_inputs(self, inputs: DecoderInputs) -> SigmaBlockInputs:
        hidden, attention_mask, past = inputs.hidden, inputs.attention_mask, inputs.past_length
        bsz, seqlen, _ = hidden.shape
        padded = attention_mask is not None and not bool(attention_mask.all())
        cos, sin = rope_cos_sin(inputs.position_ids, self.config.qk_rope_head_dim, self.config.rope_theta)
        token_mask = attention_mask[:, -seqlen:].float() if padded and attention_mask is not None else None
        attn_mask = None
        if padded or past > 0:
            total = past + seqlen
            keys = (
                attention_mask.bool()
                if attention_mask is not None
                else torch.ones(bsz, total, dtype=torch.bool, device=hidden.device)
            )[:, -total:]
            q_pos = torch.arange(past, total, device=hidden.device)[:, None]
            k_pos = torch.arange(total, device=hidden.device)[None, :]
            # a token always sees itself, so fully padded query rows stay finite
            attn_mask = ((k_pos <= q_pos) & keys[:, None, :]) | (k_pos == q_pos)
            attn_mask = attn_mask.unsqueeze(1)
        return SigmaBlockInputs(token_mask, attn_mask, cos, sin, inputs.cache)

    def decode(self, inputs: DecoderInputs) -> SigmaModelOutput:
        """The blocks (checkpointed under INSTANT while training), the final norm and the summed balance loss."""
        hidden = inputs.hidden
        ctx = self._block_inputs(inputs)
        aux_total = hidden.new_zeros((), dtype=torch.float32)
        checkpoint = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        for block in self.layers:
            if checkpoint:
                hidden, aux = checkpointed_call(block, self.features, hidden, ctx)
            else:
                hidden, aux = block(hidden, ctx)
            aux_total = aux_total + aux
        return SigmaModelOutput(last_hidden_state=self.norm(hidden), past_key_values=inputs.cache, aux_loss=aux_total)


class SigmaForCausalLM(SigmaPreTrainedModel, DecoderLMHead[SigmaConfig]):
    """SIGMA language model with a (tied) LM head; training forwards need :func:`apply_instant_plan`."""

    backbone_class = SigmaModel
    model: SigmaModel
    instant_plan: InstantPlan | None = None  # set by apply_instant_plan

    @property
    def feature_calls(self) -> FeatureCalls:
        """Executions per feature (mamba, mla, diff_attn, moe, bitlinear, instant, triton)."""
        return self.model.features

    def enabled_features(self) -> dict[str, bool]:
        """Features this model will run: the config's, with Triton only on CUDA and INSTANT once applied."""
        flags = self.config.enabled_features()
        flags["triton"] = flags["triton"] and TRITON_AVAILABLE and self.device.type == "cuda"
        flags["instant"] = self.instant_plan is not None
        return flags

    def routing_stats(self) -> dict[str, float]:
        """Last-forward expert loads per MoE layer, e.g. ``layer1/load_max_over_mean``."""
        stats: dict[str, float] = {}
        for i, block in enumerate(self.model.layers):
            if isinstance(block.ffn, SigmaMoE):
                stats.update(block.ffn.routing_stats().summary(prefix=f"layer{i}/"))
        return stats

    def lm_forward(
        self, inputs: DecoderInputs, labels: torch.Tensor | None, logits_to_keep: int | torch.Tensor, **kwargs: Any
    ) -> MoeCausalLMOutputWithPast:
        """The causal-LM pass plus the weighted MoE balance loss while training.

        Under INSTANT in training the loss comes from chunked cross-entropy and ``logits`` is None.
        """
        if self.training and labels is not None and self.instant_plan is None:
            raise RuntimeError(INSTANT_MISSING)
        out = self.model.decode(inputs)
        hidden = final_states(out)
        logits: torch.Tensor | None = None
        loss: torch.Tensor | None
        if labels is not None and self.training and self.instant_plan is not None:
            self.feature_calls.hit("instant")
            targets = labels[:, 1:].reshape(-1)
            flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])
            total = chunked_cross_entropy(flat, self.lm_head.weight, targets, self.instant_plan.chunk_size)
            count = kwargs.get("num_items_in_batch")
            loss = total / (count if count is not None else (targets != -100).sum().clamp(min=1))
        else:
            logits, loss = self.logits_and_loss(hidden, labels, logits_to_keep, **kwargs)
        aux = out.aux_loss
        if loss is not None and aux is not None and self.training and self.config.moe_aux_loss_coef > 0:
            loss = loss + self.config.moe_aux_loss_coef * aux
        return MoeCausalLMOutputWithPast(loss=loss, aux_loss=aux, logits=logits, past_key_values=out.past_key_values)


AutoConfig.register("sigma", SigmaConfig)
AutoModelForCausalLM.register(SigmaConfig, SigmaForCausalLM)

__all__ = [
    "SigmaForCausalLM",
    "SigmaMLABlock",
    "SigmaMLAttention",
    "SigmaMambaBlock",
    "SigmaMambaMixer",
    "SigmaModel",
    "SigmaPreTrainedModel",
    "differential_attention",
]
