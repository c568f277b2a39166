"""Train the corpus tokenizer with `tokenizers` and wrap it as a transformers fast tokenizer.

Two kinds, chosen by `prepare.tokenizer.kind`:

* `char`: one token per character seen in the train split (a BPE model without merges over single
  characters); the measured choice for the small models of the default pipeline. With `byte_fallback`
  (the default) the 256 byte tokens `<0x00>`..`<0xFF>` follow the alphabet, and a character the train
  split never showed encodes as its UTF-8 bytes (`tokenizers`' `byte_fallback` and `ByteFallback`
  decoder), so no text is refused; the ids of the train alphabet do not move.
* `bpe`: byte-level BPE with digits split individually (`Digits(individual_digits=True)` before
  ByteLevel), for larger vocabularies and user text; its 256-byte base alphabet encodes any text.

Both carry the special tokens the pipeline needs: `[PAD] [BOS] [EOS] [UNK]` and the cascade markers
`[COARSE] [REFINE]`. Decoding is an exact inverse of encoding on any UTF-8 text (char without
`byte_fallback`: on the train alphabet only).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from cascadelab.config import TokenizerParams

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
COARSE, REFINE = "[COARSE]", "[REFINE]"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, COARSE, REFINE]


BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]  # the names `tokenizers`' byte_fallback looks up


def _char_tokenizer(texts: Iterable[str], byte_fallback: bool) -> Tokenizer:
    alphabet = sorted({char for text in texts for char in text})
    tokens = SPECIAL_TOKENS + alphabet + (BYTE_TOKENS if byte_fallback else [])
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges=[], unk_token=UNK, byte_fallback=byte_fallback))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    steps = [decoders.ByteFallback()] if byte_fallback else []
    tokenizer.decoder = decoders.Sequence([*steps, decoders.Fuse()])
    return tokenizer


def _bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_tokenizer(texts: Iterable[str], params: TokenizerParams) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `texts` and wrap it with the pipeline's special tokens."""
    texts = list(texts)
    if not texts:
        raise ValueError("tokenizer: no training text (is the train split empty?)")
    if params.kind == "char":
        core = _char_tokenizer(texts, params.byte_fallback)
    else:
        core = _bpe_tokenizer(texts, params.vocab_size)
    core.add_special_tokens(SPECIAL_TOKENS)
    return wrap_tokenizer(core)


def wrap_tokenizer(core: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer around a `tokenizers.Tokenizer` holding SPECIAL_TOKENS."""
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens={"coarse_token": COARSE, "refine_token": REFINE},
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved pipeline tokenizer (or any local/hub tokenizer) through transformers."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(f"{path}: not a fast tokenizer ({type(tokenizer).__name__})")
    return tokenizer


def round_trip_failures(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str], limit: int = 5) -> list[str]:
    """Texts whose encode→decode is not the identity (at most `limit` of them)."""
    failures = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if tokenizer.decode(ids, clean_up_tokenization_spaces=False) != text:
            failures.append(text)
            if len(failures) >= limit:
                break
    return failures


def first_inexact_character(tokenizer: PreTrainedTokenizerFast, text: str) -> str | None:
    """The first character of `text` that does not survive encode→decode on its own (None if every one does)."""
    for char in dict.fromkeys(text):  # each distinct character once, in order of appearance
        if tokenizer.decode(tokenizer.encode(char, add_special_tokens=False)) != char:
            return char
    return None
