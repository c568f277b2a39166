"""The `cascade_pairs` stage's logic: the frozen coarse model answers train and val prompts; (coarse, gold) pairs.

With cross-fitting, a coarse model trained with the `coarse_sft` recipe on all but one fold answers that fold.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from cascadelab.cascade.pairs import TrainFoldFn, run_cascade_pairs
from cascadelab.config import CoarseSFTParams, PairsSettings
from cascadelab.pipeline.cascade_io import PAIR_SPLITS, StageOutcome, load_inputs, write_pairs
from cascadelab.pipeline.coarse_sft import coarse_model_and_tokenizer
from cascadelab.pipeline.paths import Paths
from cascadelab.training.sft import train_sft


def coarse_fold_trainer(params: CoarseSFTParams, seed: int, tokenizer_dir: Path) -> TrainFoldFn:
    """A `train_fold_fn` that trains a fresh coarse model (same architecture, recipe and budget) per fold."""

    def train_fold(records: list[dict[str, Any]], fold: int) -> PreTrainedModel:
        model, tokenizer = coarse_model_and_tokenizer(params, tokenizer_dir, seed + fold)
        work = Path(tempfile.mkdtemp(prefix=f"coarse-fold{fold}-"))
        try:
            train = params.train.model_copy(update={"save_steps": 0})
            trained, _ = train_sft(
                model, tokenizer, records, train, params.curriculum, params.mix, seed + fold, work, report_to=()
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        trained.eval()
        return trained

    return train_fold


def run(settings: PairsSettings, seed: int, paths: Paths, coarse_sft: CoarseSFTParams) -> StageOutcome:
    """The coarse model answers train and val prompts; pairs go to `paths.cascade_pairs/{train,val}.jsonl`.

    With `cross_fit.folds` set, each fold's pairs come from a coarse model trained with `coarse_sft`'s recipe
    on the other folds.
    """
    train_fold_fn = coarse_fold_trainer(coarse_sft, seed, paths.coarse) if settings.cross_fit.folds else None
    inputs = load_inputs(paths.corpus, paths.coarse, settings.num_threads)
    splits = {name: inputs.split(name) for name in PAIR_SPLITS}
    outcome = run_cascade_pairs(inputs.coarse, inputs.tokenizer, splits, inputs.verifier, settings, seed, train_fold_fn)
    write_pairs(paths.cascade_pairs, outcome.pairs)
    return StageOutcome(dict(outcome.metrics), {"error_rates": error_rate_rows(outcome.metrics)})


def error_rate_rows(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Per task: the coarse model's greedy and sampled error rates (%) on train and val prompts."""
    tasks = sorted({k.rsplit("_", 1)[1] for k in metrics if k.startswith("train_coarse_error_")})
    return [
        {
            "task": task,
            **{
                f"{split}_{name}": metrics.get(f"{split}_coarse_{name}_{task}", float("nan"))
                for split in PAIR_SPLITS
                for name in ("error", "sample_error")
            },
        }
        for task in tasks
    ]
