"""The `acoc` stage's logic: the growth study (issue 25) — arms S, L, G, A on one FLOP budget over paired seeds.

Every (arm, seed) run is independent: with `study.workers` > 1 they run as single-threaded processes side
by side (spawned; each loads prepare's corpus once), otherwise one after another in this process. A run's
bytes depend only on (arm, seed, params), never on which worker ran it or when. The first seed's models are
saved: A (or G when A is not an arm) to `models/acoc`, the other arms to `models/acoc_baselines/<arm>`.
`acoc_outputs.py` turns the runs into metrics, curves, items and the bars.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from cascadelab.config import ACOCParams
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.task_streams import build_task_batches, group_records
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.data.user_task import GENERATED_ONLY, skip_user
from cascadelab.io import atomic_directory
from cascadelab.pipeline.paths import Paths
from cascadelab.ranks import die_with_parent
from cascadelab.training.acoc_arms import ArmRun, StudyData, budget_flops, run_arm, step_flops

Record = dict[str, Any]
VAL_BATCH_SIZE = 128  # fixed validation batches: one forward each, no effect on results
COST_ORDER = ("A", "G", "L", "S")  # the longest runs first, so two workers finish together


@dataclass
class ACOCOutcome:
    """Every run of the study, keyed by (arm, seed), and the stage's wall time for the runs."""

    runs: dict[tuple[str, int], ArmRun]
    flops: dict[str, float]
    seconds: float


def flop_figures(params: ACOCParams, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """The budget, the nominal step FLOPs of S and L, and their ratio."""
    step_s = float(step_flops(params, tokenizer, 1))
    step_l = float(step_flops(params, tokenizer, params.study.large_experts))
    return {
        "budget": budget_flops(params, tokenizer),
        "step_S": step_s,
        "step_L": step_l,
        "ratio_L_over_S": step_l / step_s,
    }


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


def load_study_data(params: ACOCParams, corpus_dir: Path, tokenizer_dir: Path) -> StudyData:
    """Train streams, the fixed val set and the test records of the scheduled tasks."""
    meta = load_meta(corpus_dir)
    keys = list(params.tasks)
    check_tasks(keys, meta.get("counts", {}))
    tokenizer = load_tokenizer(tokenizer_dir)
    train = build_task_batches(
        skip_user("acoc", load_split(corpus_dir, "train"), GENERATED_ONLY), tokenizer, keys, params.batch_size
    )
    items = params.study.val_items_per_task
    val_batches = build_task_batches(
        skip_user("acoc", load_split(corpus_dir, "val"), GENERATED_ONLY), tokenizer, keys, VAL_BATCH_SIZE, items
    )
    val = {task: batches.fixed(items) for task, batches in val_batches.items()}
    with final_evaluation("acoc"):  # scored once, after each run's training: run_arm's test items
        test_records = skip_user("acoc", load_split(corpus_dir, "test"), GENERATED_ONLY)
    grouped = group_records(test_records, keys)
    test = {task: records[: params.test_items_per_task] for task, records in grouped.items()}
    return StudyData(tokenizer, train, val, test, CorpusVerifier(meta).verify)


_DATA: StudyData | None = None  # a worker's corpus, loaded once by `_load_worker`


def _load_worker(params: ACOCParams, corpus_dir: Path, tokenizer_dir: Path, parent: int) -> None:
    global _DATA
    die_with_parent(signal.SIGTERM, parent)  # a killed stage takes its workers with it
    _DATA = load_study_data(params, corpus_dir, tokenizer_dir)


def _work(arm: str, seed: int, params: ACOCParams, save_dir: Path | None) -> ArmRun:
    assert _DATA is not None, "worker started without its corpus"
    return run_arm(arm, seed, params, _DATA, save_dir, threads=1)


def jobs(params: ACOCParams) -> list[tuple[str, int]]:
    """(arm, seed) of every run (A's ablations as arms `A-<extra>`), the costliest arms first."""
    arms = [f"A-{extra}" for extra in params.study.ablations] + sorted(params.study.arms, key=COST_ORDER.index)
    return [(arm, seed) for arm in arms for seed in params.seeds]


def save_target(params: ACOCParams, arm: str, seed: int, model_dir: Path, baselines_dir: Path) -> Path | None:
    """Where a run's model is saved: the first seed's runs only (A, else G, to `models/acoc`)."""
    if seed != params.seeds[0]:
        return None
    main = "A" if "A" in params.study.arms else "G"
    if arm.startswith("A-"):
        return None
    return model_dir if arm == main else baselines_dir / arm


def run(params: ACOCParams, paths: Paths) -> ACOCOutcome:
    """Run every (arm, seed) of the study and save the first seed's models."""
    started = time.perf_counter()
    todo = jobs(params)
    runs: dict[tuple[str, int], ArmRun] = {}
    with atomic_directory(paths.acoc) as model_tmp, atomic_directory(paths.acoc_baselines) as base_tmp:
        targets = {job: save_target(params, *job, model_tmp, base_tmp) for job in todo}
        if params.study.workers == 1:
            data = load_study_data(params, paths.corpus, paths.tokenizer)
            for arm, seed in todo:
                runs[arm, seed] = run_arm(arm, seed, params, data, targets[arm, seed], params.num_threads)
        else:
            with ProcessPoolExecutor(
                params.study.workers,
                mp_context=get_context("spawn"),
                initializer=_load_worker,
                initargs=(params, paths.corpus, paths.tokenizer, os.getpid()),
            ) as pool:
                futures = {job: pool.submit(_work, *job, params, targets[job]) for job in todo}
                runs = {job: future.result() for job, future in futures.items()}
        (base_tmp / "README.md").write_text(baselines_readme(sorted({arm for arm, _ in todo if arm in "SLG"})))
        if not any(model_tmp.iterdir()):
            (model_tmp / "README.md").write_text("# ACOC\n\nNeither A nor G was among `acoc.study.arms`.\n")
    flops = flop_figures(params, load_tokenizer(paths.tokenizer))
    return ACOCOutcome(runs, flops, time.perf_counter() - started)


def baselines_readme(arms: list[str]) -> str:
    """What `models/acoc_baselines` holds and how each model in it loads."""
    return (
        "# ACOC study arms (first seed)\n\n"
        f"Arms run: {', '.join(arms)}. S: static, one expert per layer; L: static, the large size; G: S grown "
        "by fixed function-preserving splits (A, full ACOC, is `models/acoc`). Each folder loads with "
        "`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` "
        "(or without it after `import cascadelab.models`).\n"
    )
