"""The `hybrid_rnn` stage's logic: build the hybrid RNN-Transformer, train it on prompt → response, evaluate.

Training is teacher-forced (`train_hybrid_rnn`) under the coarse recipe's curriculum (add+sub alone until
their loss falls below `switch_loss`, then the full mix, one task per batch), with early stopping on the
val split. The test split is decoded three ways (greedy, sampled, beam search) and scored with the
corpus verifiers, per task and per (task, difficulty) cell, like `coarse_sft`: greedy metrics carry the
same keys as `metrics/coarse_sft.json` (`em`, `em_add`, `em_add2`, ...), the others are prefixed
`sample_` and `beam_`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from cascadelab.config import HybridRNNModelParams, HybridRNNParams, Seq2SeqEvalParams
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split
from cascadelab.data.curriculum import LoopCurriculum
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.data.user_task import GENERATED_ONLY, skip_user
from cascadelab.eval.metrics import correct_items, exact_match_report
from cascadelab.eval.seq2seq import Decoding, evaluate_seq2seq
from cascadelab.io import atomic_directory
from cascadelab.models.hybrid_rnn import HybridRNNConfig, HybridRNNTransformer, init_hybrid_rnn
from cascadelab.pipeline.paths import Paths
from cascadelab.ranks import is_main_process
from cascadelab.training.hybrid_rnn_trainer import LogFn, TrainResult, train_hybrid_rnn

Record = dict[str, Any]
# Metric-key prefix of each decoding; greedy has none, so its keys line up with coarse_sft's.
DECODINGS: dict[Decoding, str] = {"greedy": "", "sample": "sample_", "beam": "beam_"}


@dataclass
class HybridOutcome:
    """Metrics, training and validation curves, and a sample of test predictions of one hybrid run."""

    metrics: dict[str, Any]
    train_history: list[dict[str, float]]
    val_history: list[dict[str, float]]
    predictions: list[Record]
    items: list[Record] = field(default_factory=list)  # every test item's greedy correctness (claims)


def build_hybrid_model(
    params: HybridRNNModelParams, tokenizer: PreTrainedTokenizerBase, seed: int
) -> HybridRNNTransformer:
    """A fresh model of the preset (with overrides), sized and given token ids by the corpus tokenizer."""
    config = params.to_config(tokenizer)
    assert isinstance(config, HybridRNNConfig)
    return init_hybrid_rnn(config, seed)


def build_curriculum(params: HybridRNNParams, tasks: Sequence[str], seed: int) -> LoopCurriculum:
    """The add+sub warm-up, then the full mix, over the training rows' tasks."""
    train, curriculum = params.train, params.curriculum
    return LoopCurriculum(
        tasks,
        params.mix,
        curriculum.warmup_tasks,
        switch_loss=curriculum.switch_loss,
        max_warmup_steps=int(train.max_steps * curriculum.max_warmup_fraction),
        max_steps=train.max_steps,
        batch_size=train.batch_size,
        seed=seed,
        group_by_task=curriculum.group_batches_by_task,
    )


def evaluate_decodings(
    model: HybridRNNTransformer,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    verifier: CorpusVerifier,
    params: Seq2SeqEvalParams,
    seed: int,
) -> tuple[dict[str, float], dict[Decoding, list[str]]]:
    """Exact match (overall, per task, per cell), decoding speed for each decoding; test perplexity once."""
    metrics: dict[str, float] = {}
    outputs: dict[Decoding, list[str]] = {}
    for decoding, prefix in DECODINGS.items():
        result = evaluate_seq2seq(
            model,
            tokenizer,
            records,
            decoding,
            verifier.verify,
            batch_size=params.batch_size,
            max_new_tokens=params.max_new_tokens,
            num_beams=params.num_beams,
            **params.sampling.model_dump(),  # temperature, top_k, top_p: named as evaluate_seq2seq names them
            seed=seed,
            perplexity=decoding == "greedy",
        )
        outputs[decoding] = result.predictions
        report = exact_match_report(records, result.predictions, verifier.verify)
        metrics.update({f"{prefix}{key}": value for key, value in report.items()})
        metrics[f"{prefix}eval_tokens_per_s"] = result.tokens_per_s
        metrics[f"{prefix}eval_seconds"] = result.seconds
        if decoding == "greedy":
            metrics["test_ppl"] = result.perplexity
    return metrics, outputs


def run(params: HybridRNNParams, seed: int, paths: Paths, log_fn: LogFn | None = None) -> HybridOutcome | None:
    """Train the hybrid model, save it (+ tokenizer) with `save_pretrained`, evaluate it on the test split.

    `log_fn(metrics, step)` receives the trainer's evaluation-time metrics (train/val loss, lr, tokens/s).
    Under a multi-process launch every rank trains its rows of each batch; rank 0 alone saves and
    evaluates, and the other ranks return None once training is done.
    """
    corpus_dir, tokenizer_dir, model_dir = paths.corpus, paths.tokenizer, paths.hybrid_rnn
    torch.set_num_threads(params.train.num_threads)
    verifier = CorpusVerifier(load_meta(corpus_dir))
    train_records = skip_user("hybrid_rnn", load_split(corpus_dir, "train"), GENERATED_ONLY)
    val_records = skip_user("hybrid_rnn", load_split(corpus_dir, "val"), GENERATED_ONLY)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_hybrid_model(params.model, tokenizer, seed)
    result = train_hybrid_rnn(
        model,
        [(r["prompt"], r["response"]) for r in train_records],
        [(r["prompt"], r["response"]) for r in val_records],
        tokenizer,
        params.train,
        log_fn=log_fn,
        curriculum=build_curriculum(params, [r["task"] for r in train_records], seed),
        seed=seed,
    )
    if not is_main_process():
        return None
    with atomic_directory(model_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    with final_evaluation("hybrid_rnn"):
        test_records = skip_user("hybrid_rnn", load_split(corpus_dir, "test"), GENERATED_ONLY)
        metrics, outputs = evaluate_decodings(model, tokenizer, test_records, verifier, params.eval, seed)
    metrics.update(_training_metrics(model, result))
    predictions = [
        {
            "id": r["id"],
            "task": r["task"],
            "prompt": r["prompt"],
            "answer": r["answer"],
            **{decoding: outputs[decoding][i] for decoding in DECODINGS},
            "correct": verifier.verify(r["task"], outputs["greedy"][i], r["answer"]),
        }
        for i, r in enumerate(test_records[: params.eval.sample_predictions])
    ]
    val_history = [{"step": row["step"], "val_loss": row["val_loss"]} for row in result.history]
    items = correct_items(test_records, outputs["greedy"], verifier.verify)
    return HybridOutcome(metrics, result.train_history, val_history, predictions, items)


def _training_metrics(model: HybridRNNTransformer, result: TrainResult) -> dict[str, Any]:
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "train_steps": result.steps,
        "best_step": result.best_step,
        "best_val_loss": result.best_val_loss,
        "stopped_early": int(result.stopped_early),
        "train_seconds": result.train_seconds,
        "train_tokens": result.train_tokens,
        "train_tokens_per_s": result.tokens_per_s,
        "curriculum_switch_step": -1 if result.curriculum_switch_step is None else result.curriculum_switch_step,
    }
