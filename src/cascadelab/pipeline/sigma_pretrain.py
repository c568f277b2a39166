"""The `sigma_pretrain` stage's logic: pre-train SigmaLLM and a same-size Llama baseline, evaluate both.

Both models see the same batches (corpus train split, prompt + response, loss on the response only)
for the same number of steps, with the same optimizer settings and schedule, through the same loop
(:class:`cascadelab.training.sigma_loop.SigmaTrainer`). Both are evaluated on the test split like
`coarse_sft` (:func:`cascadelab.eval.lm.evaluate_lm`: exact match per task, response
perplexity, generation speed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.config import SigmaModelParams, SigmaPretrainParams, check_sigma_runtime
from cascadelab.data.corpus import CorpusVerifier, load_meta, load_split
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.hidden_eval import check_manifest, manifest_path
from cascadelab.data.mixed_batches import TokenizedRows, mixed_batches
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.data.user_task import GENERATED_ONLY, skip_user
from cascadelab.eval.lm import evaluate_lm
from cascadelab.eval.metrics import response_nll_items
from cascadelab.io import atomic_directory, write_json
from cascadelab.models.coarse import build_causal_lm
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM
from cascadelab.models.utils import count_parameters
from cascadelab.pipeline.paths import Paths
from cascadelab.ranks import is_main_process, world_size
from cascadelab.training.background import BackgroundCall
from cascadelab.training.batch_source import build_batch_source
from cascadelab.training.checkpoints import checkpoint_dir, discard
from cascadelab.training.optimizers.factory import build_optimizers
from cascadelab.training.run_checkpoints import CheckpointStore
from cascadelab.training.sigma_loop import SigmaTrainer
from cascadelab.training.trainer import LogFn, TrainResult, mean_loss

MODELS = ("sigma", "baseline")


@dataclass
class SigmaPretrainOutcome:
    """Metrics (`sigma_*`, `baseline_*`, ratios), per-model training curves, a prediction sample, metrics.jsonl."""

    metrics: dict[str, Any]
    histories: dict[str, list[dict[str, float]]]
    predictions: list[dict[str, Any]]
    metrics_jsonl: Path
    items: list[dict[str, Any]] = field(default_factory=list)  # every test item: correctness, response NLL (claims)


def build_sigma_lm(params: SigmaModelParams, tokenizer: PreTrainedTokenizerBase) -> SigmaForCausalLM:
    """A randomly initialised SigmaLLM from a preset and overrides, with ids taken from `tokenizer`."""
    config = params.to_config(tokenizer)
    assert isinstance(config, SigmaConfig)
    return SigmaForCausalLM(config)


def _seeded(build: Callable[[], nn.Module], seed: int) -> Any:
    """`build()` under a private RNG state seeded with `seed` (the caller's global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def check_param_gap(sigma: int, baseline: int, tolerance: float) -> float:
    """Relative size gap |baseline - sigma| / sigma; fails past `tolerance`."""
    gap = abs(baseline - sigma) / sigma
    if gap > tolerance:
        raise ValueError(
            f"sigma_pretrain.baseline: {baseline} parameters vs SigmaLLM's {sigma} ({100 * gap:.1f} % apart, "
            f"more than baseline_param_tolerance {100 * tolerance:.1f} %); resize the baseline"
        )
    return gap


def _save(model: nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"expected a PreTrainedModel to save, got {type(model).__name__}")
    with atomic_directory(folder) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))


@dataclass
class ModelRun:
    """One model's training and test evaluation: metrics (unprefixed), logged rows, test outputs."""

    metrics: dict[str, float]
    history: list[dict[str, float]]
    outputs: list[str]
    metrics_path: Path
    nll_items: list[tuple[float, int]] = field(default_factory=list)  # per test item: summed response NLL, tokens


def build_model(name: str, params: SigmaPretrainParams, tokenizer: PreTrainedTokenizerBase, seed: int) -> Any:
    """The untrained `sigma` or `baseline` model, initialised from `seed` (same weights in every process)."""
    if name == "sigma":
        return _seeded(lambda: build_sigma_lm(params.model, tokenizer), seed)
    if name == "baseline":
        return _seeded(lambda: build_causal_lm(params.baseline.to_config(tokenizer)), seed)
    raise ValueError(f"model name must be one of {', '.join(MODELS)}, got {name!r}")


def train_and_evaluate(
    name: str,
    params: SigmaPretrainParams,
    seed: int,
    corpus_dir: Path,
    tokenizer_dir: Path,
    model_dir: Path,
    out_dir: Path,
    log_fn: LogFn | None = None,
) -> ModelRun | None:
    """Build, train and evaluate one model; SigmaLLM is saved to `model_dir`, its log goes to `out_dir`.

    The baseline logs to `out_dir/baseline`. Every process that calls this reads and tokenizes the
    corpus itself and draws the same batches from `seed`. Under a multi-process launch every rank trains
    its rows of each batch and rank 0 alone saves and evaluates; the other ranks return None.
    """
    torch.set_num_threads(params.train.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    verifier = CorpusVerifier(load_meta(corpus_dir))
    train_rows = TokenizedRows(tokenizer, skip_user("sigma_pretrain", load_split(corpus_dir, "train"), GENERATED_ONLY))
    val_batches = TokenizedRows(
        tokenizer, skip_user("sigma_pretrain", load_split(corpus_dir, "val"), GENERATED_ONLY)
    ).sequential_batches(params.eval.batch_size, limit=params.train.eval_records)
    model = build_model(name, params, tokenizer, seed)
    settings = {"seed": seed, "sigma_pretrain": params.model_dump(mode="json")}
    folder = checkpoint_dir(f"sigma_pretrain-{name}", settings, [Path(corpus_dir) / "train.jsonl"])
    trainer = SigmaTrainer(
        model,
        build_optimizers(model, params.optimizer),
        params.train,
        out_dir if name == "sigma" else out_dir / name,
        instant=params.instant,
        log_fn=log_fn,
        eval_fn=lambda m: {"val_loss": mean_loss(m, val_batches)},
        checkpoint_fn=(lambda m, _step: _save(m, tokenizer, model_dir)) if name == "sigma" else None,
        features=params.features,
        guards=params.guards,
        data=params.data,
        credit_interval=params.optimizer.c3o.credit_interval,
        settings=settings,
        checkpoints=CheckpointStore(folder, params.train.keep_checkpoints) if params.train.checkpoint_steps else None,
    )
    train = params.train
    corpus_batches = mixed_batches(
        train_rows, params.mix, train.max_steps, train.batch_size, seed, group_by_task=train.group_batches_by_task
    )
    result = trainer.fit(build_batch_source(corpus_batches, params.data, tokenizer, train.batch_size, seed))
    if not is_main_process():
        return None
    discard(folder)  # finished: a rerun starts afresh rather than from the final checkpoint
    started = time.perf_counter()
    with final_evaluation("sigma_pretrain"):
        test_records = skip_user("sigma_pretrain", load_split(corpus_dir, "test"), GENERATED_ONLY)
        evaluation, outputs = evaluate_lm(
            model, tokenizer, test_records, verifier, params.eval.batch_size, params.eval.max_new_tokens
        )
    evaluation["eval_seconds"] = time.perf_counter() - started
    evaluation.update(_training_metrics(result, count_parameters(model)))
    nll = response_nll_items(model, tokenizer, test_records)  # after the evaluation: its figures stay as they were
    return ModelRun(evaluation, result.history, outputs, result.metrics_path, nll)


def run(
    params: SigmaPretrainParams, seed: int, paths: Paths, log_fn: LogFn | None = None
) -> SigmaPretrainOutcome | None:
    """Train and evaluate SigmaLLM (saved to `paths.sigma`) and the baseline on test; compare them.

    With `train.parallel_baseline` the baseline trains in a second process at the same time (one core
    each on a 2-core machine); otherwise after SigmaLLM. The loop writes `out_dir/metrics.jsonl` for
    SigmaLLM and `out_dir/baseline/metrics.jsonl` for the baseline (`out_dir`: `paths.sigma_pretrain_run`).
    `log_fn(metrics, step)` receives
    each logged row with keys prefixed `sigma/` or `baseline/` (the baseline's rows once it is done,
    when it runs in the other process). Under a multi-process launch both models train one after the
    other on every rank (`parallel_baseline` would start a second launch's worth of processes); rank 0
    alone writes and evaluates, and the other ranks return None once both are trained.
    """
    corpus_dir, tokenizer_dir, model_dir, out_dir = paths.corpus, paths.tokenizer, paths.sigma, paths.sigma_pretrain_run
    started = time.perf_counter()
    check_sigma_runtime(params, torch.cuda.is_available())
    if is_main_process():
        write_resolved_settings(params, seed, out_dir)
    check_hidden_eval(corpus_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    sizes = {name: count_parameters(build_model(name, params, tokenizer, seed)) for name in MODELS}
    gap = check_param_gap(sizes["sigma"], sizes["baseline"], params.baseline_param_tolerance)
    shared = (params, seed, corpus_dir, tokenizer_dir, model_dir, out_dir)
    sigma_log = None if log_fn is None else _prefixed(log_fn, "sigma")
    runs: dict[str, ModelRun | None] = {}
    if params.train.parallel_baseline and world_size() == 1:
        background = BackgroundCall(train_and_evaluate, "baseline", *shared)
        try:
            runs["sigma"] = train_and_evaluate("sigma", *shared, log_fn=sigma_log)
            runs["baseline"] = background.result()
        finally:
            background.stop()
        if log_fn is not None:
            for row in _done(runs["baseline"]).history:
                _prefixed(log_fn, "baseline")(row, int(row["step"]))
    else:
        runs["sigma"] = train_and_evaluate("sigma", *shared, log_fn=sigma_log)
        baseline_log = None if log_fn is None else _prefixed(log_fn, "baseline")
        runs["baseline"] = train_and_evaluate("baseline", *shared, log_fn=baseline_log)
    if not is_main_process():
        return None
    done = {name: _done(model_run) for name, model_run in runs.items()}
    metrics: dict[str, Any] = {"param_gap": gap}
    for name in MODELS:
        metrics.update({f"{name}_{key}": value for key, value in done[name].metrics.items()})
    metrics["ppl_ratio"] = metrics["sigma_test_ppl"] / metrics["baseline_test_ppl"]
    metrics["step_time_ratio"] = metrics["sigma_train_seconds"] / metrics["baseline_train_seconds"]
    metrics["pretrain_seconds"] = time.perf_counter() - started
    verifier = CorpusVerifier(load_meta(corpus_dir))
    with final_evaluation("sigma_pretrain"):  # the sample predictions beside the scores above
        test_records = skip_user("sigma_pretrain", load_split(corpus_dir, "test"), GENERATED_ONLY)
    predictions = [
        {
            "id": r["id"],
            "task": r["task"],
            "prompt": r["prompt"],
            "answer": r["answer"],
            **{f"{name}_output": done[name].outputs[i] for name in MODELS},
            **{f"{name}_correct": verifier.verify(r["task"], done[name].outputs[i], r["answer"]) for name in MODELS},
        }
        for i, r in enumerate(test_records[: params.eval.sample_predictions])
    ]
    histories = {name: done[name].history for name in MODELS}
    items = [
        {
            "id": r["id"],
            "task": r["task"],
            **{f"{name}_correct": verifier.verify(r["task"], done[name].outputs[i], r["answer"]) for name in MODELS},
            **{f"{name}_nll": done[name].nll_items[i][0] for name in MODELS},
            **{f"{name}_tokens": done[name].nll_items[i][1] for name in MODELS},
        }
        for i, r in enumerate(test_records)
    ]
    return SigmaPretrainOutcome(metrics, histories, predictions, done["sigma"].metrics_path, items)


def _done(model_run: ModelRun | None) -> ModelRun:
    if model_run is None:
        raise RuntimeError("a model run of rank 0 returned no evaluation")
    return model_run


def check_hidden_eval(corpus_dir: Path) -> int:
    """Check the train split against prepare's hidden-eval manifest; fails on any overlap or a missing manifest.

    Returns the number of hidden (val + test) prompts checked.
    """
    return check_manifest(manifest_path(corpus_dir), (r["prompt"] for r in load_split(corpus_dir, "train")))


def write_resolved_settings(params: SigmaPretrainParams, seed: int, out_dir: Path) -> Path:
    """Write the section as it runs (profile expanded, every default filled) to `out_dir/resolved_settings.json`."""
    path = Path(out_dir) / "resolved_settings.json"
    write_json(path, {"seed": seed, "sigma_pretrain": params.model_dump(mode="json")})
    return path


def _prefixed(log_fn: LogFn, prefix: str) -> LogFn:
    return lambda row, step: log_fn({f"{prefix}/{key}": value for key, value in row.items()}, step)


def _training_metrics(result: TrainResult, params: int) -> dict[str, float]:
    phases = {f"phase_{name}_s": seconds for name, seconds in result.phase_seconds.items()}
    last = result.history[-1] if result.history else {}
    return {
        "params": params,
        "train_steps": result.steps,
        "train_seconds": result.train_seconds,
        "train_tokens": result.train_tokens,
        "train_tokens_per_s": result.tokens_per_second,
        "final_train_loss": result.final_loss,
        **({"final_val_loss": last["val_loss"]} if "val_loss" in last else {}),
        **phases,
        **{key: value for key, value in result.features.items() if key.startswith("feature_")},
    }
