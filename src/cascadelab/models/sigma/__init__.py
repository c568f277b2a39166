"""SIGMA: hybrid Mamba-3 / MLA-differential-attention LM with MoE, BitLinear and the INSTANT memory plan.

Importing this package registers ``SigmaConfig`` / ``SigmaForCausalLM`` with the Auto classes.
"""

from cascadelab.models.sigma.bitlinear import BitLinear, int8_activation_ste, make_linear, ternary_weight_ste
from cascadelab.models.sigma.configuration_sigma import BITLINEAR_FAMILIES, SigmaConfig, hybrid_attn_layer_idx
from cascadelab.models.sigma.features import FEATURES, FeatureCalls
from cascadelab.models.sigma.instant import (
    INSTANT_MISSING,
    InstantPlan,
    apply_instant_plan,
    chunked_cross_entropy,
)
from cascadelab.models.sigma.modeling_sigma import (
    SigmaForCausalLM,
    SigmaMambaBlock,
    SigmaMambaMixer,
    SigmaMLABlock,
    SigmaMLAttention,
    SigmaModel,
    SigmaPreTrainedModel,
    differential_attention,
)
from cascadelab.models.sigma.moe import RoutingStats, SigmaMLP, SigmaMoE, SigmaTopKRouter

__all__ = [
    "BITLINEAR_FAMILIES",
    "FEATURES",
    "INSTANT_MISSING",
    "BitLinear",
    "FeatureCalls",
    "InstantPlan",
    "RoutingStats",
    "SigmaConfig",
    "SigmaForCausalLM",
    "SigmaMLABlock",
    "SigmaMLAttention",
    "SigmaMLP",
    "SigmaMambaBlock",
    "SigmaMambaMixer",
    "SigmaMoE",
    "SigmaModel",
    "SigmaPreTrainedModel",
    "SigmaTopKRouter",
    "apply_instant_plan",
    "chunked_cross_entropy",
    "differential_attention",
    "hybrid_attn_layer_idx",
    "int8_activation_ste",
    "make_linear",
    "ternary_weight_ste",
]
