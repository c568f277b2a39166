"""Configuration of ACOC, a small transformer LM whose feed-forward layers are growable mixtures of experts.

The config records the *current* architecture: `expert_widths[layer][expert]` lists the widths of the
blocks of one expert (an expert is widened by appending a block). Growth, pruning and consolidation
rewrite it, so `from_pretrained` rebuilds a grown model with the shapes its checkpoint holds.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig


class ACOCConfig(PreTrainedConfig):
    """Architecture of an ACOC model: attention sizes plus the per-layer list of expert block widths.

    Args:
        vocab_size: Tokenizer size.
        hidden_size: Residual stream width.
        num_hidden_layers: Decoder layers, each attention + a mixture of experts.
        num_attention_heads: Attention heads (hidden_size must divide evenly).
        max_position_embeddings: Longest sequence the rotary table is sized for.
        num_experts: Initial experts per layer (used when `expert_widths` is None).
        expert_width: Initial hidden width of every expert (used when `expert_widths` is None).
        expert_widths: Current widths, `[layer][expert] -> [block widths]`; overrides the two above.
        num_experts_per_tok: Experts mixed per token (top-k); 0 mixes all of them densely (softmax over all).
        norm_topk_prob: Renormalise the selected probabilities to sum to 1 under top-k.
        hidden_act: Expert activation (any `transformers.activations.ACT2FN` name).
        gate_init: Initial logit of every expert's soft gate (sigmoid(3) = 0.95).
        initializer_range: Std of the normal weight init (0.06 escapes the arithmetic plateau, STACK-NOTES).
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: Rotary base.
    """

    model_type = "acoc"
    keys_to_ignore_at_inference = ["past_key_values"]  # noqa: RUF012 (transformers class-attribute convention)

    def __init__(
        self,
        vocab_size: int = 64,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        max_position_embeddings: int = 256,
        num_experts: int = 1,
        expert_width: int = 64,
        expert_widths: list[list[list[int]]] | None = None,
        num_experts_per_tok: int = 0,
        norm_topk_prob: bool = True,
        hidden_act: str = "gelu",
        gate_init: float = 3.0,
        initializer_range: float = 0.06,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        **kwargs: Any,
    ) -> None:
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size: must be divisible by num_attention_heads ({hidden_size} % {num_attention_heads})"
            )
        if expert_widths is None:
            if num_experts < 1 or expert_width < 1:
                raise ValueError(f"num_experts and expert_width: must be >= 1 (got {num_experts}, {expert_width})")
            expert_widths = [[[expert_width] for _ in range(num_experts)] for _ in range(num_hidden_layers)]
        expert_widths = [[[int(w) for w in blocks] for blocks in layer] for layer in expert_widths]
        if len(expert_widths) != num_hidden_layers:
            raise ValueError(f"expert_widths: needs one entry per layer ({len(expert_widths)} != {num_hidden_layers})")
        for index, layer in enumerate(expert_widths):
            if not layer or any(not blocks or min(blocks) < 1 for blocks in layer):
                raise ValueError(f"expert_widths[{index}]: every layer needs >= 1 expert of blocks with width >= 1")
        if num_experts_per_tok < 0:
            raise ValueError(f"num_experts_per_tok: must be >= 0 (got {num_experts_per_tok})")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.expert_widths = expert_widths
        self.num_experts = len(expert_widths[0])
        self.expert_width = expert_widths[0][0][0]
        self.num_experts_per_tok = num_experts_per_tok
        self.norm_topk_prob = norm_topk_prob
        self.hidden_act = hidden_act
        self.gate_init = gate_init
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.use_cache = use_cache
        self.tie_word_embeddings = tie_word_embeddings
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        super().__init__(**kwargs)

    @property
    def experts_per_layer(self) -> list[int]:
        """Current number of experts in each layer."""
        return [len(layer) for layer in self.expert_widths]
