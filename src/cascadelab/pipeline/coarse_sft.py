"""The `coarse_sft` stage's logic: build (or load) the coarse model, fine-tune it, evaluate on test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from cascadelab.config import CoarseSFTParams
from cascadelab.data.batches import check_fits_context, encode_texts
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split, val_prompt_records
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.data.user_task import USER, has_user, logger, training_mix, user_generation_budget
from cascadelab.eval.lm import evaluate_lm
from cascadelab.eval.metrics import correct_items
from cascadelab.io import atomic_directory
from cascadelab.models.coarse import build_causal_lm, load_base_model
from cascadelab.models.utils import count_parameters
from cascadelab.pipeline.paths import Paths
from cascadelab.ranks import is_main_process
from cascadelab.training.checkpoints import checkpoint_dir, discard
from cascadelab.training.sft import SFTResult, train_sft


@dataclass
class CoarseOutcome:
    """Metrics, training curve and a sample of test predictions of one coarse SFT run.

    `resumed_from_step` (0: a fresh start) is not among the metrics: a resumed run's metrics equal an
    uninterrupted run's.
    """

    metrics: dict[str, Any]
    history: list[dict[str, float]]
    predictions: list[dict[str, Any]]
    resumed_from_step: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)  # every test item's correctness (claims)


def coarse_model_and_tokenizer(
    params: CoarseSFTParams,
    tokenizer_dir: Path,
    seed: int,
    context: Callable[[PreTrainedTokenizerBase], int] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The untrained coarse model: from `base_model` if set (with its tokenizer), else built from config.

    `context` gives the positions the data needs (a user dataset's rows and generations): a built model's
    `max_position_embeddings` grows to it, with a warning line, when the configured value is smaller.
    """
    set_seed(seed)
    if params.base_model:
        return load_base_model(params.base_model)
    tokenizer = load_tokenizer(tokenizer_dir)
    config = params.model.to_config(tokenizer)
    needed = context(tokenizer) if context is not None else 0
    if needed > config.max_position_embeddings:
        logger.warning(
            "coarse_sft: model.max_position_embeddings %d -> %d to fit the user dataset's rows and generations",
            config.max_position_embeddings,
            needed,
        )
        config.max_position_embeddings = needed
    return build_causal_lm(config), tokenizer


def run(params: CoarseSFTParams, seed: int, paths: Paths) -> CoarseOutcome | None:
    """Train the coarse model, save it with `save_pretrained`, evaluate it on the test split.

    Under a multi-process launch every rank trains its share of each global batch; rank 0 alone saves and
    evaluates, and the other ranks return None once training is done.
    """
    corpus_dir, tokenizer_dir, model_dir = paths.corpus, paths.tokenizer, paths.coarse
    torch.set_num_threads(params.train.num_threads)
    meta = load_meta(corpus_dir)
    train_records = load_split(corpus_dir, "train")
    held_out = val_prompt_records(corpus_dir)  # test prompts are checked by the final evaluation

    def budget(tokenizer: PreTrainedTokenizerBase) -> GenerationBudget:
        return generation_budget(params, tokenizer, train_records, meta)

    def context(tokenizer: PreTrainedTokenizerBase) -> int:
        return user_context(tokenizer, train_records, held_out, budget(tokenizer)[0]) if has_user(meta) else 0

    model, tokenizer = coarse_model_and_tokenizer(params, tokenizer_dir, seed, context)
    max_new_tokens = budget(tokenizer)
    check_context(params, model, tokenizer, train_records, held_out, max_new_tokens)
    mix = training_mix(params.mix, meta)
    checkpoints = checkpoint_dir(
        "coarse_sft",
        {"params": params.model_dump(mode="json"), "seed": seed},
        [corpus_dir / "train.jsonl", tokenizer_dir / "tokenizer.json"],
    )
    model, result = train_sft(
        model,
        tokenizer,
        train_records,
        params.train,
        params.curriculum,
        mix,
        seed,
        checkpoints,
        lora=params.lora,
    )
    if not is_main_process():
        return None
    if params.lora.enabled:
        model = model.merge_and_unload()  # type: ignore[operator]  # a PeftModel here
    with atomic_directory(model_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    discard(checkpoints)
    verifier = CorpusVerifier(meta)
    with final_evaluation("coarse_sft"):
        test_records = load_split(corpus_dir, "test")
        check_prompts_fit(params, model, tokenizer, test_records, max_new_tokens)
        metrics, outputs = evaluate_lm(
            model, tokenizer, test_records, verifier, params.eval.batch_size, max_new_tokens[0]
        )
    metrics.update(_training_metrics(model, result))
    predictions = [
        {
            "id": r["id"],
            "task": r["task"],
            "prompt": r["prompt"],
            "output": o,
            "answer": r["answer"],
            "correct": verifier.verify(r["task"], o, r["answer"]),
        }
        for r, o in list(zip(test_records, outputs, strict=True))[: params.eval.sample_predictions]
    ]
    items = correct_items(test_records, outputs, verifier.verify)
    return CoarseOutcome(metrics, result.history, predictions, result.resumed_from_step, items)


GenerationBudget = tuple[int, str]  # new tokens per test prompt, and what sets that number (for errors)


def generation_budget(
    params: CoarseSFTParams,
    tokenizer: PreTrainedTokenizerBase,
    train_records: list[dict[str, Any]],
    meta: dict[str, Any],
) -> GenerationBudget:
    """New tokens every test prompt may generate, whatever its task: a prompt carries no task label.

    `eval.max_new_tokens`, raised to the user rows' budget (their longest train response with its margin) when
    the corpus holds a user dataset; generation stops at EOS, so short answers pay only for what they emit.
    """
    default = params.eval.max_new_tokens
    user = user_generation_budget(tokenizer, train_records, meta) if has_user(meta) else 0
    if user <= default:
        return default, "coarse_sft.eval.max_new_tokens"
    margin = "prepare.user_dataset.generation_margin"
    return user, f"the user generation budget (longest user train response x (1 + {margin}))"


def check_context(
    params: CoarseSFTParams,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_records: list[dict[str, Any]],
    val_prompts: list[dict[str, Any]],
    max_new_tokens: GenerationBudget,
) -> None:
    """Stop before training when a train row, or a val prompt plus its generation, exceeds the model's context.

    The test split may not be read before the final evaluation, which checks its prompts the same way.
    """
    limit, param = _context(params, model)
    if limit is None:
        return
    check_fits_context(tokenizer, train_records, ("prompt", "response"), limit, param, (1, "EOS"))
    check_prompts_fit(params, model, tokenizer, val_prompts, max_new_tokens)


def check_prompts_fit(
    params: CoarseSFTParams,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[dict[str, Any]],
    max_new_tokens: GenerationBudget,
) -> None:
    """Stop when a prompt plus the generation budget exceeds the model's context, naming the param to raise."""
    limit, param = _context(params, model)
    if limit is not None:
        check_fits_context(tokenizer, records, ("prompt",), limit, param, max_new_tokens)


def _context(params: CoarseSFTParams, model: PreTrainedModel) -> tuple[int | None, str]:
    """The model's context length and the param that sets it."""
    param = (
        f"coarse_sft.base_model ({params.base_model}): max_position_embeddings"
        if params.base_model
        else "coarse_sft.model.max_position_embeddings"
    )
    return getattr(model.config, "max_position_embeddings", None), param


def user_context(
    tokenizer: PreTrainedTokenizerBase,
    train_records: list[dict[str, Any]],
    held_out: list[dict[str, Any]],
    max_new_tokens: int,
) -> int:
    """Positions a run with user rows needs: the longest user train row + EOS, or any val prompt + the budget."""
    user_train = [r["prompt"] + r["response"] for r in train_records if r["task"] == USER]
    rows = [len(ids) + 1 for ids in encode_texts(tokenizer, user_train)]
    prompts = [len(ids) + max_new_tokens for ids in encode_texts(tokenizer, [r["prompt"] for r in held_out])]
    return max([0, *rows, *prompts])


def _training_metrics(model: PreTrainedModel, result: SFTResult) -> dict[str, Any]:
    return {
        "params": count_parameters(model),
        "train_seconds": result.train_seconds,
        "train_tokens": result.train_tokens,
        "train_tokens_per_s": result.tokens_per_second,
        "final_train_loss": result.final_loss,
        "curriculum_switch_step": -1 if result.curriculum_switch_step is None else result.curriculum_switch_step,
    }
