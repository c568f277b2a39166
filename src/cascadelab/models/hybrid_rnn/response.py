"""Text in, text out: the seed's `RNNResponseGenerator` over a trained `HybridRNNTransformer`."""

from __future__ import annotations

from typing import ClassVar, Unpack

import torch
from transformers import PreTrainedTokenizerBase

from cascadelab.data.seq2seq import encode_source
from cascadelab.models.hybrid_rnn.modeling_hybrid_rnn import DecodingOptions, HybridRNNForConditionalGeneration


class ResponseGenerator:
    """Answers a message (with optional context text) using a hybrid model and its tokenizer.

    The seed passed a context dict (user profile, ...); here the context is plain text placed before the
    message, joined by `context_separator`, so that it goes through the same tokenizer as the message.
    """

    sampling: ClassVar[DecodingOptions] = {"top_k": 50, "top_p": 0.9}  # unless `generate`'s caller sets them

    def __init__(
        self, model: HybridRNNForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, context_separator: str = " "
    ):
        config = model.config
        if config.decoder_start_token_id is None or config.eos_token_id is None:
            raise ValueError("model config needs decoder_start_token_id and eos_token_id to generate text")
        self.start_token: int = config.decoder_start_token_id
        self.end_token: int = config.eos_token_id
        if tokenizer.pad_token_id != config.pad_token_id:
            raise ValueError(
                f"tokenizer pad_token_id {tokenizer.pad_token_id} != model pad_token_id {config.pad_token_id}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.context_separator = context_separator

    def generate(
        self,
        message: str,
        context: str | None = None,
        max_length: int = 50,
        temperature: float = 0.8,
        **options: Unpack[DecodingOptions],
    ) -> str:
        """The decoded response to `message`: greedy if `temperature <= 0`, beam search if `num_beams > 1`.

        `options` (`top_k`, `top_p`, `num_beams`, `seed`) go to `generate_text` over `sampling`.
        """
        text = message if context is None else f"{context}{self.context_separator}{message}"
        src = torch.tensor([encode_source(self.tokenizer, text)], device=self.model.device)
        was_training = self.model.training
        self.model.eval()
        settings: DecodingOptions = {**self.sampling, **options}
        try:
            ids = self.model.generate_text(src, self.start_token, self.end_token, max_length, temperature, **settings)
        finally:
            self.model.train(was_training)
        return str(self.tokenizer.decode(ids[0].tolist(), skip_special_tokens=True))
