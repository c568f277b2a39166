"""Several `train_sft` runs as jobs: one after another in this process, or side by side in spawned processes.

The refiner stage trains one refiner per family and the equal-compute control; on a machine with a core
per job, running them at the same time with one torch thread each costs the wall time of the longest
instead of the sum (one thread per small model is nearly as fast as two, STACK-NOTES). A parallel job
trains in its own interpreter (`BackgroundCall`) on a pickled copy of its start model and sends back the
trained weights and its `SFTResult`; the last job trains here meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from cascadelab.config import CurriculumParams, LoraParams, SFTTrainParams
from cascadelab.training.background import BackgroundCall
from cascadelab.training.sft import SFTResult, train_sft

Record = dict[str, Any]


@dataclass
class SFTJob:
    """One supervised run: a start model, its rows (prompt → `target_field`), settings and sampling mix."""

    key: str
    model: PreTrainedModel
    rows: list[Record]
    train: SFTTrainParams
    mix: dict[str, float]
    curriculum: CurriculumParams = field(default_factory=lambda: CurriculumParams(warmup_tasks=[]))
    target_field: str = "target"
    lora: LoraParams | None = None


def run_job(
    job: SFTJob,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    output_dir: Path,
    report_to: Sequence[str] = (),
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[PreTrainedModel, SFTResult]:
    """Train one job in this process with its own torch thread count (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(job.train.num_threads)
    try:
        model, result = train_sft(
            job.model,
            tokenizer,
            job.rows,
            job.train,
            job.curriculum,
            job.mix,
            seed,
            output_dir / job.key,
            lora=job.lora,
            report_to=report_to,
            target_field=job.target_field,
            callbacks=callbacks,
        )
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model, result


def _job_in_child(
    job: SFTJob, tokenizer: PreTrainedTokenizerBase, seed: int, output_dir: Path
) -> tuple[bytes, SFTResult]:
    """A spawned process's side of a parallel job: train, then send back the weights as safetensors bytes.

    Bytes rather than tensors: torch pickles tensors as shared-memory handles that die with this process.
    """
    model, result = run_job(job, tokenizer, seed, output_dir)
    return save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}), result


def run_jobs(
    jobs: Sequence[SFTJob],
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    output_dir: Path,
    parallel: bool = False,
    report_to: Sequence[str] = (),
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, tuple[PreTrainedModel, SFTResult]]:
    """Train every job; with `parallel`, all but the last in spawned processes while the last trains here.

    Parallel jobs do not report to MLflow or call `callbacks` (another process); their histories come back
    in their `SFTResult`. The trained models are the jobs' own start models, updated in place.
    """
    if len({job.key for job in jobs}) != len(jobs):
        raise ValueError("sft jobs: keys must be distinct")
    if not parallel or len(jobs) < 2:
        return {job.key: run_job(job, tokenizer, seed, output_dir, report_to, callbacks) for job in jobs}
    background = [(job, BackgroundCall(_job_in_child, job, tokenizer, seed, output_dir)) for job in jobs[:-1]]
    outcomes: dict[str, tuple[PreTrainedModel, SFTResult]] = {}
    try:
        last = jobs[-1]
        outcomes[last.key] = run_job(last, tokenizer, seed, output_dir, report_to, callbacks)
        for job, call in background:
            weights, result = call.result()
            job.model.load_state_dict(load(weights))
            job.model.eval()
            outcomes[job.key] = (job.model, result)
    finally:
        for _, call in background:
            call.stop()
    return {job.key: outcomes[job.key] for job in jobs}
