"""Cross-fitting for `cascade_pairs`: a coarse model trained with the `coarse_sft` recipe on all but one fold."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from cascadelab.cascade.pairs import TrainFoldFn
from cascadelab.config import CoarseSFTParams
from cascadelab.training.coarse_sft import coarse_model_and_tokenizer
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
