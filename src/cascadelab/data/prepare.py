"""The `prepare` stage's logic: generate the corpus splits and train the tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cascadelab.config import PrepareParams
from cascadelab.data.corpus import SPLITS, build_splits, corpus_meta, iter_texts, write_corpus
from cascadelab.data.hidden_eval import HIDDEN_SPLITS, manifest_path, write_manifest
from cascadelab.data.tokenizer import round_trip_failures, train_tokenizer
from cascadelab.io import atomic_directory


def prepare(params: PrepareParams, seed: int, corpus_dir: Path, tokenizer_dir: Path) -> dict[str, Any]:
    """Write the corpus, its hidden-eval manifest and the tokenizer atomically; return summary metrics."""
    splits = build_splits(params, seed)
    if not splits["train"]:
        raise ValueError("prepare: the train split is empty (check prepare.families and prepare.sizes)")
    tokenizer = train_tokenizer(iter_texts(splits["train"]), params.tokenizer)
    all_texts = [text for split in SPLITS for text in iter_texts(splits[split])]
    failures = round_trip_failures(tokenizer, all_texts)
    if failures:
        raise ValueError(f"tokenizer: encode/decode is not exact on the corpus, e.g. {failures[0]!r}")
    meta = corpus_meta(params, splits)
    with atomic_directory(corpus_dir) as tmp:
        write_corpus(splits, meta, tmp)
    with atomic_directory(tokenizer_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
    hidden = {split: [r["prompt"] for r in splits[split]] for split in HIDDEN_SPLITS}
    with atomic_directory(manifest_path(corpus_dir).parent) as tmp:
        write_manifest(tmp / manifest_path(corpus_dir).name, hidden)
    lengths = [
        len(tokenizer(r["prompt"] + r["response"], add_special_tokens=False)["input_ids"]) + 1 for r in splits["train"]
    ]
    metrics: dict[str, Any] = {f"{split}_size": len(splits[split]) for split in SPLITS}
    metrics.update(
        vocab_size=len(tokenizer),
        train_tokens=sum(lengths),
        mean_train_sequence_tokens=sum(lengths) / len(lengths),
        tasks=len({r["task"] for r in splits["train"]}),
        hidden_eval_prompts=sum(len(set(prompts)) for prompts in hidden.values()),
    )
    return metrics
