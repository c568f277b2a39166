"""The forward passes the decoder-only LMs here (ACOC, LEGO, SIGMA) share, written once.

A family's backbone derives from `DecoderBackbone`: `prepare_inputs` embeds the tokens and resolves the cache and the
positions into `DecoderInputs`, the family's `decode` runs its layers and final norm. Its causal LM derives
from `DecoderLMHead`, whose `forward` (the Hugging Face signature `generate` inspects) prepares the inputs once and
hands them to `lm_forward`: by default the backbone, the LM head on the kept positions and the next-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypedDict, TypeVar, Unpack, cast

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import ModelOutput

from cascadelab.models.attention_masks import causal_padding_mask
from cascadelab.models.auto_loading import LoadableFromFolder
from cascadelab.models.configuration_decoder import DecoderConfig
from cascadelab.models.layers import default_position_ids

ConfigT = TypeVar("ConfigT", bound=DecoderConfig)


class DecoderKwargs(TypedDict, total=False):
    """The backbone's keyword inputs besides ``input_ids``, under their Hugging Face names."""

    attention_mask: torch.Tensor | None  # (B, past + T), 1 for real tokens
    position_ids: torch.Tensor | None  # (B, T); default: real tokens before each (left padding)
    past_key_values: Cache | None
    inputs_embeds: torch.Tensor | None  # (B, T, D), instead of input_ids
    use_cache: bool | None


@dataclass
class DecoderInputs:
    """One forward's inputs once prepared: embedded tokens, their positions, the padding mask, the cache."""

    hidden: torch.Tensor  # (B, T, D)
    attention_mask: torch.Tensor | None  # (B, past + T), 1 for real tokens
    position_ids: torch.Tensor  # (B, T)
    past_length: int  # tokens already in the cache
    cache: Cache | None  # read and filled by the layers; None without use_cache

    def causal_mask(self) -> torch.Tensor:
        """Boolean (B, 1, T, past + T) attention mask: causal, padding-aware, the diagonal always allowed."""
        batch, length, _ = self.hidden.shape
        return causal_padding_mask(self.attention_mask, batch, length, self.past_length, self.hidden.device)


class DecoderBackbone(PreTrainedModel, Generic[ConfigT]):
    """Base of a family's backbone (its ``XModel``, with ``embed_tokens``): the forward around the family's `decode`."""

    config: ConfigT
    embed_tokens: nn.Embedding

    def forward(
        self, input_ids: torch.Tensor | None = None, **inputs: Unpack[DecoderKwargs]
    ) -> BaseModelOutputWithPast:
        """Run the stack on ``input_ids`` (or ``inputs_embeds``): embeddings, layers, final norm."""
        return self.decode(self.prepare_inputs(input_ids, **inputs))

    def prepare_inputs(self, input_ids: torch.Tensor | None = None, **inputs: Unpack[DecoderKwargs]) -> DecoderInputs:
        """Embed the tokens; pick the cache (the given one, a new one, or none without ``use_cache``) and positions."""
        embeds = inputs.get("inputs_embeds")
        if (input_ids is None) == (embeds is None):
            raise ValueError("input_ids / inputs_embeds: pass exactly one of them")
        hidden = self.embed_tokens(input_ids) if embeds is None else embeds
        use_cache = inputs.get("use_cache")
        if use_cache is None:
            use_cache = self.uses_cache_by_default()
        cache = inputs.get("past_key_values") if use_cache else None
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_length = self.cached_length(cache)
        attention_mask = inputs.get("attention_mask")
        position_ids = inputs.get("position_ids")
        if position_ids is None:
            batch, length, _ = hidden.shape
            position_ids = default_position_ids(attention_mask, past_length, batch, length, hidden.device)
        return DecoderInputs(hidden, attention_mask, position_ids, past_length, cache)

    def uses_cache_by_default(self) -> bool:
        """Whether a forward with ``use_cache=None`` reads and fills a KV cache: ``config.use_cache``."""
        return bool(self.config.use_cache)

    def cached_length(self, cache: Cache | None) -> int:
        """Tokens already in ``cache`` (0 without one)."""
        return cache.get_seq_length() if cache is not None else 0

    def decode(self, inputs: DecoderInputs) -> BaseModelOutputWithPast:
        """The family's layers and final norm over prepared inputs."""
        raise NotImplementedError


def final_states(output: BaseModelOutputWithPast) -> torch.Tensor:
    """A backbone output's ``last_hidden_state`` (always set by `decode`), typed as a tensor."""
    return cast(torch.Tensor, output.last_hidden_state)


def kept_positions(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions of ``hidden`` (B, T, ...) to project: the last ``logits_to_keep`` (0: all) or those indices."""
    keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
    return hidden[:, keep]


class DecoderLMHead(LoadableFromFolder, PreTrainedModel, GenerationMixin, Generic[ConfigT]):
    """Base of a family's causal LM: its ``backbone_class`` as ``model``, the output head(s), forward and loss."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # noqa: RUF012 (transformers v5 form)
    backbone_class: ClassVar[type[DecoderBackbone[Any]]]
    config: ConfigT
    model: DecoderBackbone[ConfigT]
    lm_head: nn.Linear

    def __init__(self, config: ConfigT) -> None:
        super().__init__(config)
        self.model = self.backbone_class(config)
        self.add_output_heads(config)
        self.post_init()

    def add_output_heads(self, config: ConfigT) -> None:
        """The LM head, tied to the input embeddings (families with other heads override this)."""
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> ModelOutput:
        """Logits, and with ``labels`` (the inputs: shifted inside, -100 ignored) the next-token loss.

        The loss is the mean over labelled tokens, or their sum / ``num_items_in_batch`` when that is given.
        Other keyword arguments go to the family's `lm_forward`.
        """
        inputs = self.model.prepare_inputs(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        return self.lm_forward(inputs, labels, logits_to_keep, **kwargs)

    def lm_forward(
        self, inputs: DecoderInputs, labels: torch.Tensor | None, logits_to_keep: int | torch.Tensor, **kwargs: Any
    ) -> ModelOutput:
        """The backbone, then the LM head on the kept positions and the loss."""
        out = self.model.decode(inputs)
        logits, loss = self.logits_and_loss(final_states(out), labels, logits_to_keep, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)

    def logits_and_loss(
        self, hidden: torch.Tensor, labels: torch.Tensor | None, logits_to_keep: int | torch.Tensor, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``lm_head`` over the kept positions of the final states, and the loss when ``labels`` are given."""
        logits = self.lm_head(kept_positions(hidden, logits_to_keep))
        return logits, None if labels is None else self.next_token_loss(logits, labels, **kwargs)

    def next_token_loss(self, logits: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Transformers' causal-LM loss: labels shifted left (the last position ignored), -100 ignored."""
        loss: torch.Tensor = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return loss


__all__ = ["DecoderBackbone", "DecoderInputs", "DecoderKwargs", "DecoderLMHead", "final_states", "kept_positions"]
