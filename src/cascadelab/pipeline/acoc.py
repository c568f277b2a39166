"""The `acoc` stage's logic: load prepare's corpus and tokenizer, grow ACOC, train both baselines, save them.

The cycle loop and the baselines are `acoc_trainer.run_acoc`; this module only feeds it the corpus (task keys
checked against the corpus before any work), saves the grown model with its per-cycle checkpoints and the
two static baselines with `save_pretrained`, and returns everything the stage writes: metrics, plot tables,
events and the per-cycle history (`acoc_outputs.py` shapes them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from cascadelab.config import ACOCParams
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.task_streams import TaskBatches, build_task_batches
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.data.user_task import GENERATED_ONLY, skip_user
from cascadelab.io import atomic_directory
from cascadelab.pipeline.acoc_outputs import plot_tables, stage_metrics
from cascadelab.pipeline.paths import Paths
from cascadelab.training.acoc_trainer import ACOCResult, LogFn, run_acoc

Record = dict[str, Any]
VAL_BATCH_SIZE = 128  # fixed validation batches: one forward each, no effect on results


@dataclass
class ACOCOutcome:
    """What the stage writes: flat metrics, plot tables, and the run (history, events, baselines)."""

    metrics: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    result: ACOCResult


@dataclass
class ACOCData:
    """Prepare's outputs as the ACOC loop consumes them."""

    tokenizer: PreTrainedTokenizerBase
    verifier: CorpusVerifier
    train: dict[str, TaskBatches]
    val: dict[str, TaskBatches]
    test: list[Record]


def check_tasks(tasks: Sequence[str], counts: Mapping[str, Mapping[str, int]]) -> None:
    """Raise a params error naming the first task key with no rows in some split of the corpus."""
    for task in tasks:
        for split in ("train", "val", "test"):
            cells = counts.get(split, {})
            if not any(n > 0 and task in (cell, cell.rstrip("0123456789")) for cell, n in cells.items()):
                raise ValueError(
                    f"params.yaml: acoc.tasks.{task}: no {split} records in data/corpus "
                    f"(corpus cells: {', '.join(sorted(cells))})"
                )


def load_acoc_data(params: ACOCParams, corpus_dir: Path, tokenizer_dir: Path) -> ACOCData:
    """Tokenize the train/val records of the scheduled tasks into per-task batches; keep the test records."""
    meta = load_meta(corpus_dir)
    keys = list(params.tasks)
    check_tasks(keys, meta.get("counts", {}))
    tokenizer = load_tokenizer(tokenizer_dir)
    train = build_task_batches(
        skip_user("acoc", load_split(corpus_dir, "train"), GENERATED_ONLY), tokenizer, keys, params.batch_size
    )
    val = build_task_batches(
        skip_user("acoc", load_split(corpus_dir, "val"), GENERATED_ONLY),
        tokenizer,
        keys,
        VAL_BATCH_SIZE,
        limit_per_task=params.val_items_per_task,
    )
    with final_evaluation("acoc"):  # scored only after growth and training: run_acoc's final metrics
        test = skip_user("acoc", load_split(corpus_dir, "test"), GENERATED_ONLY)
    return ACOCData(tokenizer, CorpusVerifier(meta), train, val, test)


def run(params: ACOCParams, seed: int, paths: Paths, log_fn: LogFn | None = None) -> ACOCOutcome:
    """Grow ACOC (checkpoint per cycle under `paths.acoc/checkpoints`), train the baselines, save all three.

    The baselines go to `paths.acoc_baselines/static_initial` and `.../static_final`.

    `log_fn(metrics, step)` gets the training losses (step = global step) and the ACOC loop's per-cycle
    metrics (step = cycle).
    """
    model_dir, baselines_dir = paths.acoc, paths.acoc_baselines
    data = load_acoc_data(params, paths.corpus, paths.tokenizer)
    with atomic_directory(model_dir) as tmp:
        result = run_acoc(
            params,
            data.train,
            data.val,
            data.test,
            data.tokenizer,
            data.verifier.verify,
            log_fn=log_fn,
            seed=seed,
            checkpoint_dir=tmp / "checkpoints",
        )
        result.model.save_pretrained(str(tmp))
        data.tokenizer.save_pretrained(str(tmp))
    with atomic_directory(baselines_dir) as tmp:  # always written: it is a declared output
        for name, run in result.baselines.items():
            run.model.save_pretrained(str(tmp / name))
            data.tokenizer.save_pretrained(str(tmp / name))
        (tmp / "README.md").write_text(baselines_readme(sorted(result.baselines)))
    return ACOCOutcome(stage_metrics(result), plot_tables(result), result)


def baselines_readme(names: list[str]) -> str:
    """What `models/acoc_baselines` holds and how each model in it loads."""
    if not names:
        return "# ACOC static baselines\n\n`acoc.baselines` is false: no static baselines were trained.\n"
    folders = ", ".join(f"`{name}/`" for name in names)
    return (
        "# ACOC static baselines\n\n"
        f"{folders}: ACOC models trained on the same batches with a fixed architecture. Each loads with "
        "`AutoModelForCausalLM.from_pretrained(folder / name, trust_remote_code=True)` "
        "(or without it after `import cascadelab.models`).\n"
    )
