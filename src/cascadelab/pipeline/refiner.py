"""The `refiner` stage's logic: train the worked-steps refiner and the equal-compute control `coarse_more`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cascadelab.cascade.limen import Limen
from cascadelab.cascade.refiner import Refiner
from cascadelab.config import RefinerSettings
from cascadelab.data.corpus import held_out_prompts
from cascadelab.io import atomic_directory, write_json
from cascadelab.pipeline.cascade_io import DISABLED, StageOutcome, load_inputs, read_pairs, save_control
from cascadelab.pipeline.paths import Paths
from cascadelab.training.refiner_trainer import run_refiner


def run(settings: RefinerSettings, seed: int, paths: Paths, report_to: Sequence[str] = ()) -> StageOutcome:
    """Train the refiner, the equal-compute control `coarse_more` and, if asked, the answer-target baseline;
    save them (a marker file for a disabled one) and report val exact match."""
    inputs = load_inputs(paths.corpus, paths.coarse, settings.train.num_threads)
    train, val = inputs.split("train"), inputs.split("val")
    limen = None
    if settings.strategy != "teacher_forcing" and settings.self_improvement.tension_weight:
        limen = Limen.load(paths.limen, inputs.coarse, inputs.tokenizer, inputs.verifier)
    work_dir = Path(tempfile.mkdtemp(prefix="refiner-"))
    try:
        outcome = run_refiner(
            inputs.coarse,
            inputs.tokenizer,
            inputs.verifier,
            settings,
            seed,
            work_dir,
            read_pairs(paths.cascade_pairs, "train"),
            train,
            [{"prompt": prompt} for prompt in held_out_prompts(paths.corpus)],  # kept out of fresh items
            str(inputs.meta.get("answer_format", "reversed")),
            limen,
            val_records=val,
            report_to=report_to,
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    outcome.refiner.save(paths.refiner)
    save_control(outcome.control, inputs.tokenizer, paths.coarse_more)
    _save_optional(outcome.answer_baseline, paths.refiner_answer, "Answer-target refiner", "answer_baseline")
    _save_optional(outcome.nodraft, paths.refiner_nodraft, "No-draft refiner (draft ablation)", "draft_ablation")
    curves = {"train": outcome.history, "control_train": outcome.control_history}
    return StageOutcome(dict(outcome.metrics), curves)


def _save_optional(refiner: Refiner | None, folder: Path, title: str, option: str) -> None:
    """Save an optional refiner, or a marker folder saying it was not trained (DVC outs must exist)."""
    if refiner is not None:
        refiner.save(folder)
        return
    with atomic_directory(folder) as tmp:
        write_json(tmp / DISABLED, {"enabled": False})
        (tmp / "README.md").write_text(f"# {title}\n\nDisabled (`refiner.{option}` is off): no model was trained.\n")
