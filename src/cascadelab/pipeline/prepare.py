"""The `prepare` stage's logic: generate the corpus splits and train the tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascadelab.config import PrepareParams
from cascadelab.data.code_tasks import build_code_splits, write_code_tasks
from cascadelab.data.corpus import SPLITS, TEXT_FIELDS, Record, build_splits, corpus_meta, iter_texts, write_corpus
from cascadelab.data.hidden_eval import HIDDEN_SPLITS, manifest_path, write_manifest
from cascadelab.data.tokenizer import first_inexact_character, round_trip_failures, train_tokenizer
from cascadelab.io import atomic_directory
from cascadelab.pipeline.paths import Paths

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def run(params: PrepareParams, seed: int, paths: Paths) -> dict[str, Any]:
    """Write the corpus, the tokenizer, the hidden-eval manifest beside the corpus and the code tasks."""
    return prepare(params, seed, paths.corpus, paths.tokenizer, paths.code_tasks)


def prepare(
    params: PrepareParams, seed: int, corpus_dir: Path, tokenizer_dir: Path, code_dir: Path | None = None
) -> dict[str, Any]:
    """Write the corpus, the tokenizer, the hidden-eval manifest and (with `code_dir`) the code tasks.

    The code tasks are empty splits when `code.enabled` is off; the manifest holds the val/test prompts of
    the corpus and of the code tasks written.
    """
    splits = build_splits(params, seed)
    if not splits["train"]:
        raise ValueError("prepare: the train split is empty (check prepare.families and prepare.sizes)")
    tokenizer = train_tokenizer(iter_texts(splits["train"]), params.tokenizer)
    check_round_trip(tokenizer, splits, params.tokenizer.kind)
    code = params.code
    code_splits = build_code_splits(code.levels, code.sizes.train, code.sizes.val, code.sizes.test, seed)
    if not code.enabled:  # the folder is still written (a DVC output), with empty splits
        code_splits = {split: [] for split in SPLITS}
    if code_dir is not None and code.enabled:
        code_texts = [text for split in SPLITS for text in iter_texts(code_splits[split], ("prompt", "response"))]
        failures = round_trip_failures(tokenizer, code_texts, limit=1)
        if failures:
            raise ValueError(f"prepare.code: {failures[0]!r} does not round-trip through the corpus tokenizer")
    meta = corpus_meta(params, splits)
    with atomic_directory(corpus_dir) as tmp:
        write_corpus(splits, meta, tmp)
    with atomic_directory(tokenizer_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
    if code_dir is not None:
        with atomic_directory(code_dir) as tmp:
            write_code_tasks(code_splits, tmp)
    hidden = {split: [r["prompt"] for r in splits[split]] for split in HIDDEN_SPLITS}
    if code_dir is not None:
        hidden.update({f"code_{split}": [r["prompt"] for r in code_splits[split]] for split in HIDDEN_SPLITS})
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
    if code_dir is not None and code.enabled:
        metrics.update({f"code_{split}_size": len(code_splits[split]) for split in SPLITS})
    return metrics


def check_round_trip(tokenizer: PreTrainedTokenizerFast, splits: dict[str, list[Record]], kind: str) -> None:
    """Raise one line naming the first character the tokenizer loses, where it first occurs, and the fix.

    The line is the record's line in data/corpus/<split>.jsonl (the splits are written in this order).
    """
    for split in SPLITS:
        for line, record in enumerate(splits[split], start=1):
            for field in TEXT_FIELDS:
                text = str(record.get(field) or "")
                if not round_trip_failures(tokenizer, [text], limit=1):
                    continue
                where = f"{split} line {line} (id {record['id']}, field {field})"
                char = first_inexact_character(tokenizer, text)
                if char is None:
                    raise ValueError(f"tokenizer: encode/decode is not exact on {where}: {text[:80]!r}")
                fallback = "set prepare.tokenizer.byte_fallback: true (unseen characters as UTF-8 bytes)"
                fix = fallback if kind == "char" else ""
                raise ValueError(
                    f"tokenizer: the {kind} tokenizer learned on the train split cannot encode {char!r} "
                    f"(U+{ord(char):04X}), first seen in {where}" + (f"; {fix}" if fix else "")
                )
