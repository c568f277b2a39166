"""Hybrid RNN-Transformer: a bidirectional LSTM encoder with self-attention, and a Transformer decoder.

The seed design (NETY "Architecture Hybride RNN-Transformer", ../shared/seeds/001_*.txt) as a Hugging Face
encoder-decoder, in the spirit of BART/T5/MarianMT:

    source ids ─► embedding ─► biLSTM (packed, so padding never reaches a real token) (+ the embedding,
    unless encoder_embedding_residual=False) ─► multi-head self-attention over those states (+ residual,
    LayerNorm) ─► encoder states (B, S, d_model)
        context="sequence": the decoder cross-attends to all S states (default)
        context="pooled":   one attention-pooled vector (B, 1, d_model), as the seed's squeezed context
    target ids ─► shared embedding + learned positions ─► N pre-LN decoder layers (causal self-attention,
    cross-attention, GELU feed-forward) ─► LayerNorm ─► LM head tied to the embedding

Departures from the seed: pre-LN decoder layers (steadier on small models), one embedding shared by
encoder, decoder and LM head (the seed has one embedding layer), a residual connection around the biLSTM
(each state of a biLSTM summarises the whole source, so without it cross-attention cannot read back which
token sits where: on 2-digit add/sub the `small` model's units digit stayed at chance for 6,000 steps
without it, and exact match passed 50 % by step 1,500 with it), and sampling/beam search come from
`GenerationMixin` instead of a hand-written loop. The decoder's KV cache is an `EncoderDecoderCache`:
self-attention keys/values grow per step, cross-attention keys/values are computed once per source.

The seed's calls, here:
    logits = model(src, tgt)                    → model(input_ids=src, decoder_input_ids=tgt).logits
    model.generate(src, start_token, end_token, max_length, temperature, top_k, top_p)
                                                → model.generate_text(...) (same arguments; `generate` is
                                                  transformers' GenerationMixin.generate)
    RNNResponseGenerator().generate(message, context, max_length, temperature)
                                                → ResponseGenerator(model, tokenizer).generate(...)
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)

from cascadelab.models.auto_loading import LoadableFromFolder
from cascadelab.models.decoding import generate_kwargs
from cascadelab.models.hybrid_rnn.configuration_hybrid_rnn import HybridRNNConfig
from cascadelab.models.modeling_decoder import kept_positions


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher-forcing decoder inputs: the start token, then `labels[:, :-1]` with -100 read as pad."""
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class HybridRNNAttention(nn.Module):
    """Multi-head attention on SDPA; self-attention (optionally cached) or cross-attention (cached once)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float, is_cross: bool, layer_idx: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.is_cross = is_cross
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        """Attend from (B, T, D) states to themselves or to `key_value_states`; bool mask, True = attend."""
        batch, length, d_model = hidden_states.shape
        query = self._heads(self.q_proj(hidden_states))
        if self.is_cross:
            if key_value_states is None:
                raise ValueError("cross-attention needs key_value_states (the encoder's hidden states)")
            cross_cache = (
                past_key_values.cross_attention_cache if isinstance(past_key_values, EncoderDecoderCache) else None
            )
            if cross_cache is not None and past_key_values.is_updated.get(self.layer_idx):  # type: ignore[union-attr]
                layer = cross_cache.layers[self.layer_idx]
                key, value = layer.keys, layer.values  # type: ignore[union-attr]
            else:
                key = self._heads(self.k_proj(key_value_states))
                value = self._heads(self.v_proj(key_value_states))
                if cross_cache is not None:
                    key, value = cross_cache.update(key, value, self.layer_idx)
                    past_key_values.is_updated[self.layer_idx] = True  # type: ignore[union-attr]
        else:
            key = self._heads(self.k_proj(hidden_states))
            value = self._heads(self.v_proj(hidden_states))
            if past_key_values is not None:
                self_cache = (
                    past_key_values.self_attention_cache
                    if isinstance(past_key_values, EncoderDecoderCache)
                    else past_key_values
                )
                key, value = self_cache.update(key, value, self.layer_idx)
        out = F.scaled_dot_product_attention(
            query,
            cast(torch.Tensor, key),
            cast(torch.Tensor, value),
            attn_mask=attention_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, d_model))


class HybridRNNAttentionPool(nn.Module):
    """Pools encoder states into one vector with a learned query: the seed's `(batch, 1, d_model)` context."""

    def __init__(self, d_model: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(d_model))

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked softmax over positions of `states · query`; returns (B, 1, D)."""
        scores = (states @ self.query) / states.shape[-1] ** 0.5  # (B, S)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        return (weights.unsqueeze(1) @ states).to(states.dtype)


class HybridRNNEncoder(nn.Module):
    """Embedding → packed biLSTM → multi-head self-attention over its states (→ optional pooling)."""

    def __init__(self, config: HybridRNNConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.lstm = nn.LSTM(
            config.d_model,
            config.encoder_rnn_hidden_size,
            num_layers=config.encoder_rnn_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.encoder_rnn_layers > 1 else 0.0,
        )
        rnn_out = 2 * config.encoder_rnn_hidden_size
        self.rnn_proj: nn.Module = nn.Linear(rnn_out, config.d_model) if rnn_out != config.d_model else nn.Identity()
        self.self_attn = HybridRNNAttention(
            config.d_model, config.encoder_attention_heads, config.dropout, is_cross=False
        )
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.pool = HybridRNNAttentionPool(config.d_model) if config.context == "pooled" else None
        self.dropout = nn.Dropout(config.dropout)

    def _run_lstm(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run the biLSTM on the real tokens only, wherever the padding sits (left, right or inside)."""
        length = embeds.shape[1]
        if bool(mask.all()):
            return self.lstm(embeds)[0]  # no padding: nothing to pack
        # Move real tokens to the front of each row (stable, so their order is kept), pack, run, move back.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, S)
        gathered = embeds.gather(1, order.unsqueeze(-1).expand_as(embeds))
        lengths = mask.sum(dim=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(gathered, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        restored = torch.empty_like(out)
        restored.scatter_(1, order.unsqueeze(-1).expand_as(out), out)
        return restored

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        """Encode `input_ids` (B, S) under `attention_mask` (1 = token) to states (B, S or 1, d_model)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds to the hybrid_rnn encoder")
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length, _ = embeds.shape
        mask = (
            torch.ones(batch, length, dtype=torch.bool, device=embeds.device)
            if attention_mask is None
            else attention_mask.to(torch.bool)
        )
        if mask.shape != (batch, length):
            raise ValueError(f"attention_mask shape {tuple(mask.shape)} does not match input shape {(batch, length)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("attention_mask has a source row with no tokens")
        embeds = self.dropout(embeds)
        states = self.rnn_proj(self._run_lstm(embeds, mask))
        if self.config.encoder_embedding_residual:
            states = states + embeds
        # Padded queries still attend to real keys, so no row of the softmax is empty.
        attended = self.self_attn(states, attention_mask=mask[:, None, None, :])
        states = self.self_attn_norm(states + self.dropout(attended))
        if self.pool is not None:
            states = self.pool(states, mask)
        return BaseModelOutput(last_hidden_state=states)


class HybridRNNDecoderLayer(nn.Module):
    """Pre-LN Transformer decoder block: causal self-attention, cross-attention, GELU feed-forward."""

    def __init__(self, config: HybridRNNConfig, layer_idx: int):
        super().__init__()
        d, eps = config.d_model, config.layer_norm_eps
        self.self_attn_norm = nn.LayerNorm(d, eps=eps)
        self.self_attn = HybridRNNAttention(d, config.decoder_attention_heads, config.dropout, False, layer_idx)
        self.cross_attn_norm = nn.LayerNorm(d, eps=eps)
        self.cross_attn = HybridRNNAttention(d, config.decoder_attention_heads, config.dropout, True, layer_idx)
        self.ffn_norm = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        self_attn_mask: torch.Tensor | None,
        cross_attn_mask: torch.Tensor | None,
        past_key_values: Cache | None,
    ) -> torch.Tensor:
        """One block over (B, T, D) decoder states."""
        h = self.self_attn(self.self_attn_norm(hidden_states), None, self_attn_mask, past_key_values)
        hidden_states = hidden_states + self.dropout(h)
        h = self.cross_attn(
            self.cross_attn_norm(hidden_states), encoder_hidden_states, cross_attn_mask, past_key_values
        )
        hidden_states = hidden_states + self.dropout(h)
        h = self.fc2(self.dropout(F.gelu(self.fc1(self.ffn_norm(hidden_states)))))
        return hidden_states + self.dropout(h)


class HybridRNNDecoder(nn.Module):
    """Stack of decoder blocks over token embeddings plus learned positions, ending in a LayerNorm."""

    def __init__(self, config: HybridRNNConfig):
        super().__init__()
        self.config = config
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList([HybridRNNDecoderLayer(config, i) for i in range(config.decoder_layers)])
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    @staticmethod
    def _self_attn_mask(
        length: int, past_length: int, attention_mask: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor | None:
        """Causal (and padding) bool mask (B or 1, 1, T, past+T); None when every key may be seen."""
        if attention_mask is None and length == 1:
            return None
        keys = torch.arange(past_length + length, device=device)
        queries = torch.arange(length, device=device) + past_length
        mask = (keys[None, :] <= queries[:, None])[None, None]  # (1, 1, T, past+T)
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, -(past_length + length) :].to(torch.bool)
            # A query always sees itself, so a padded row never becomes an all -inf softmax (NaN).
            mask = mask | (keys[None, :] == queries[:, None])[None, None]
        return mask

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """Decode (B, T, D) target embeddings against encoder states; masks are 2-D with 1 = token."""
        length = inputs_embeds.shape[1]
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
            else:
                position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None]
        if int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(
                f"decoder position {int(position_ids.max())} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}"
            )
        self_mask = self._self_attn_mask(length, past_length, attention_mask, inputs_embeds.device)
        cross_mask = None
        if encoder_attention_mask is not None and encoder_hidden_states.shape[1] > 1:
            cross_mask = encoder_attention_mask.to(torch.bool)[:, None, None, :]
        hidden = self.dropout(inputs_embeds + self.embed_positions(position_ids))
        for layer in self.layers:
            hidden = layer(hidden, encoder_hidden_states, self_mask, cross_mask, past_key_values)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=self.final_norm(hidden), past_key_values=past_key_values
        )


class HybridRNNPreTrainedModel(PreTrainedModel):
    """Weight init and Hugging Face plumbing shared by the hybrid RNN-Transformer classes."""

    config_class = HybridRNNConfig
    config: HybridRNNConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["HybridRNNEncoder", "HybridRNNDecoderLayer"]  # noqa: RUF012
    _skip_keys_device_placement = ["past_key_values"]  # noqa: RUF012

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) linears/embeddings, Xavier LSTM, LSTM forget-gate bias 1."""
        super()._init_weights(module)
        if isinstance(module, nn.LSTM):
            hidden = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("bias_ih"):
                    forget_one = torch.zeros_like(param)
                    forget_one[hidden : 2 * hidden] = 1.0  # gates are ordered (input, forget, cell, output)
                    init.copy_(param, forget_one)
        elif isinstance(module, HybridRNNAttentionPool):
            init.normal_(module.query, mean=0.0, std=self.config.initializer_range)


class DecodingOptions(TypedDict, total=False):
    """The settings of `generate_text` beyond the seed's call, for callers that pass them on."""

    top_k: int
    top_p: float
    num_beams: int
    seed: int | None


class HybridRNNInputs(TypedDict, total=False):
    """Keyword inputs of `HybridRNNModel.forward` besides the source ids, which the LM passes through."""

    attention_mask: torch.Tensor | None  # (B, S) source mask, 1 = token
    decoder_input_ids: torch.Tensor | None
    decoder_attention_mask: torch.Tensor | None
    encoder_outputs: BaseModelOutput | tuple[torch.Tensor, ...] | None
    past_key_values: Cache | None
    decoder_position_ids: torch.Tensor | None
    use_cache: bool | None


class HybridRNNModel(HybridRNNPreTrainedModel):
    """The encoder and decoder without the LM head; the encoder owns the one shared token embedding."""

    def __init__(self, config: HybridRNNConfig):
        super().__init__(config)
        self.encoder = HybridRNNEncoder(config)
        self.decoder = HybridRNNDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding shared by encoder and decoder."""
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the shared token embedding."""
        self.encoder.embed_tokens = value  # type: ignore[assignment]

    def get_encoder(self, modality: str | None = None) -> HybridRNNEncoder:
        """The biLSTM + self-attention encoder (what `generate` runs once per source)."""
        return self.encoder

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple[torch.Tensor, ...] | None = None,
        past_key_values: Cache | None = None,
        decoder_position_ids: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> Seq2SeqModelOutput:
        """Encode the source (unless `encoder_outputs` is given) and decode `decoder_input_ids`."""
        if decoder_input_ids is None:
            raise ValueError("hybrid_rnn needs decoder_input_ids (or labels, from which they are shifted)")
        if encoder_outputs is None:
            encoder_states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        elif isinstance(encoder_outputs, BaseModelOutput):
            encoder_states = encoder_outputs.last_hidden_state
        else:
            encoder_states = encoder_outputs[0]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        if not use_cache:
            past_key_values = None
        decoder_outputs = self.decoder(
            inputs_embeds=self.encoder.embed_tokens(decoder_input_ids),
            encoder_hidden_states=encoder_states,
            attention_mask=decoder_attention_mask,
            encoder_attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=decoder_position_ids,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            past_key_values=decoder_outputs.past_key_values,
            encoder_last_hidden_state=encoder_states,
        )


class HybridRNNForConditionalGeneration(LoadableFromFolder, HybridRNNPreTrainedModel, GenerationMixin):
    """The seed's `HybridRNNTransformer`: encoder-decoder with a tied LM head; trains and `generate`s."""

    auto_model_class = "AutoModelForSeq2SeqLM"

    _tied_weights_keys = {"lm_head.weight": "model.encoder.embed_tokens.weight"}  # noqa: RUF012

    def __init__(self, config: HybridRNNConfig):
        super().__init__(config)
        self.model = HybridRNNModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The shared token embedding."""
        return self.model.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the shared token embedding."""
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head (tied to the embedding when `tie_word_embeddings`)."""
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        """Replace the LM head."""
        self.lm_head = value

    def get_encoder(self, modality: str | None = None) -> HybridRNNEncoder:
        """The encoder, run once per source by `generate`."""
        return self.model.encoder

    def get_decoder(self, modality: str | None = None) -> HybridRNNDecoder:
        """The Transformer decoder."""
        return self.model.decoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Shift labels right behind `decoder_start_token_id` (used by seq2seq data collators)."""
        return shift_tokens_right(labels, self._pad_id(), self._start_id())

    def _pad_id(self) -> int:
        if self.config.pad_token_id is None:
            raise ValueError("HybridRNNConfig.pad_token_id must be set to shift labels")
        return self.config.pad_token_id

    def _start_id(self) -> int:
        if self.config.decoder_start_token_id is None:
            raise ValueError("HybridRNNConfig.decoder_start_token_id must be set to shift labels")
        return self.config.decoder_start_token_id

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **inputs: Unpack[HybridRNNInputs],
    ) -> Seq2SeqLMOutput:
        """Teacher-forced (or one cached step of) decoding; loss is mean CE over labels that are not -100/pad.

        `labels` (B, T) are the target ids followed by EOS; when `decoder_input_ids` is absent it is
        `labels` shifted right behind `decoder_start_token_id`. Pad ids in `labels` are ignored like -100
        (unless pad and EOS share an id). With `num_items_in_batch` the summed loss is divided by it instead.
        The other inputs (`HybridRNNInputs`) go to `HybridRNNModel.forward`.
        """
        if labels is not None:
            inputs["use_cache"] = False
            if inputs.get("decoder_input_ids") is None:
                inputs["decoder_input_ids"] = self.prepare_decoder_input_ids_from_labels(labels)
        outputs = self.model(input_ids, **inputs)
        logits = self.lm_head(kept_positions(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = seq2seq_loss(logits, labels, self.config.pad_token_id, self.config.eos_token_id, num_items_in_batch)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        next_sequence_length: int | None = None,
        past_key_values: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Per-step inputs for `generate`: `input_ids` are the decoder ids so far, sliced to the new ones.

        `attention_mask` is the source mask (kept for cross-attention); `encoder_outputs`,
        `decoder_attention_mask`, `use_cache` and `logits_to_keep` pass through from `kwargs`.
        """
        if next_sequence_length is not None:
            input_ids = input_ids[:, -next_sequence_length:]
        elif past_key_values is not None and past_key_values.get_seq_length() > 0:
            input_ids = input_ids[:, past_key_values.get_seq_length() :]
        model_inputs: dict[str, Any] = {
            "decoder_input_ids": input_ids.contiguous(),
            "past_key_values": past_key_values,
            "attention_mask": attention_mask,
        }
        for key in ("encoder_outputs", "decoder_attention_mask", "use_cache", "logits_to_keep"):
            if kwargs.get(key) is not None:
                model_inputs[key] = kwargs[key]
        return model_inputs

    @torch.no_grad()
    def generate_text(
        self,
        src: torch.Tensor,
        start_token: int,
        end_token: int,
        max_length: int = 50,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.0,
        num_beams: int = 1,
        seed: int | None = None,
    ) -> torch.Tensor:
        """The seed's `generate(src, start_token, end_token, max_length, temperature, top_k, top_p)` call.

        A thin wrapper over `GenerationMixin.generate` (the name `generate` is left to transformers):
        `start_token` → `decoder_start_token_id`, `end_token` → `eos_token_id`,
        `max_length` → `max_new_tokens`, and the decoding settings through `models.decoding.generate_kwargs`:
        `temperature <= 0` → greedy (else sampling at that temperature), `top_k = 0` and `top_p = 0.0`
        disable those filters as in the seed, `num_beams > 1` → beam search. Padding in `src` (the config's
        `pad_token_id`) is masked. `seed` forks the global RNG for this call only, so sampling is reproducible
        without touching the caller's RNG state. Returns (B, ≤ max_length) generated ids without the start
        token; the end token is kept and rows that ended early are filled with `pad_token_id`.
        """
        if src.dim() != 2:
            raise ValueError(f"src must be (batch, length) token ids, got shape {tuple(src.shape)}")
        if max_length <= 0:
            raise ValueError(f"max_length must be > 0, got {max_length}")
        pad = self.config.pad_token_id
        attention_mask = (src != pad).long() if pad is not None else torch.ones_like(src)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            # mypy cannot match PreTrainedModel to transformers' GenerativePreTrainedModel protocol.
            out = self.generate(  # type: ignore[misc]
                src,
                attention_mask=attention_mask,
                decoder_start_token_id=start_token,
                eos_token_id=end_token,
                pad_token_id=pad,
                max_new_tokens=max_length,
                **generate_kwargs(temperature, top_k, top_p, num_beams),
            )
        return out[:, 1:]


def seq2seq_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    pad_token_id: int | None,
    eos_token_id: int | None,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) labels, ignoring -100 and pad (when pad != EOS)."""
    targets = labels.to(logits.device)
    if pad_token_id is not None and pad_token_id != eos_token_id:
        targets = targets.masked_fill(targets == pad_token_id, -100)
    flat_logits, flat_targets = logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1)
    if num_items_in_batch is None:
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=-100)
    total = F.cross_entropy(flat_logits, flat_targets, ignore_index=-100, reduction="sum")
    return total / torch.as_tensor(num_items_in_batch, device=total.device)


HybridRNNTransformer = HybridRNNForConditionalGeneration  # the seed's name, kept as an alias


def init_hybrid_rnn(config: HybridRNNConfig, seed: int) -> HybridRNNForConditionalGeneration:
    """A fresh model whose weights depend only on `config` and `seed`; the caller's RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HybridRNNForConditionalGeneration(config)


AutoConfig.register(HybridRNNConfig.model_type, HybridRNNConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(HybridRNNConfig, HybridRNNForConditionalGeneration, exist_ok=True)
