"""The feature proof: run the `full` profile for a few dozen steps and check every counter (`make proof`).

The seed's rule is that a feature counts as present only when a counter shows it ran. The proof
takes params.yaml's `sigma_pretrain` section, switches it to the `full` profile, shortens the run
(`--steps`, logging, eval, C3O credit window and guard snapshots scaled to it), trains SigmaLLM through
the stage's loop, and fails — naming the feature — if, in the last metrics.jsonl line:

- an enabled feature has ``feature_<name>_effective_calls == 0``;
- a disabled feature has ``feature_<name>_effective_calls > 0``;
- or ``<out>/errors/`` holds a crash report.

Then it runs `sigma_rl` (params.yaml's section under its `full` profile: GRPO through TRL, verifier
cascade, asymmetric verification, sandboxed code rewards, causal replay, auto-mix, C3O credit) for
the same number of steps into ``<out>/rl``, and checks that run's last row the same way (problems
prefixed ``sigma_rl:``). RL needs a policy that sometimes writes a well-formed answer (otherwise no
output reaches the full check and no sample has an advantage to replay), so it starts from
``--rl-model`` (default ``models/sigma``, the `sigma_pretrain` output) when that exists, else from the
model the proof just trained.

    PYTHONPATH=src python -m cascadelab.training.sigma.proof [--steps 48] [--data data] [--out runs/sigma_proof]
        [--rl-model models/sigma]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from cascadelab.config import ParamsError, SigmaPretrainParams, SigmaRLParams, check_sigma_runtime, parse_params


def proof_section(raw: dict[str, Any], steps: int) -> SigmaPretrainParams:
    """`raw` (a `sigma_pretrain` mapping) under the `full` profile, shortened to `steps` steps."""
    window = max(1, steps // 6)
    shortened = {
        **raw,
        "profile": "full",
        "train": {
            **raw.get("train", {}),
            "max_steps": steps,
            "warmup_steps": min(raw.get("train", {}).get("warmup_steps", 100), steps // 4),
            "logging_steps": window,
            "eval_steps": steps // 2,
            "parallel_baseline": False,
        },
        "guards": {**raw.get("guards", {}), "snapshot_steps": window, "spike_window": max(2, window)},
    }
    optimizer = dict(raw.get("optimizer", {}))
    optimizer["c3o"] = {**optimizer.get("c3o", {}), "credit_interval": window}
    shortened["optimizer"] = optimizer
    return parse_params({"sigma_pretrain": shortened}).sigma_pretrain


def proof_rl_section(raw: dict[str, Any], steps: int) -> SigmaRLParams:
    """`raw` (a `sigma_rl` mapping) under the `full` profile, shortened to `steps` steps with RL on every window."""
    window = max(1, steps // 6)
    train = raw.get("train", {})
    shortened = {
        **raw,
        "profile": "full",
        "train": {
            **train,
            "max_steps": steps,
            "warmup_steps": 0,
            "logging_steps": window,
            "eval_steps": steps // 2,
            "checkpoint_steps": 0,
        },
        "guards": {**raw.get("guards", {}), "snapshot_steps": window, "spike_window": max(2, window)},
        "eval": {**raw.get("eval", {}), "heldout_math": 8, "heldout_code": 4, "test_records": 32},
        "evolution": {
            **raw.get("evolution", {}),
            "self_improver_problems": 4,
            "nas_trials": 2,
            "nas_steps": 5,
            "draft_steps": 10,
            "draft_prompts": 4,
        },
    }
    optimizer = dict(raw.get("optimizer", {}))
    optimizer["c3o"] = {**optimizer.get("c3o", {}), "credit_interval": window}
    shortened["optimizer"] = optimizer
    return parse_params({"sigma_rl": shortened}).sigma_rl


def check_row(row: dict[str, float]) -> list[str]:
    """Problems with the feature counters of one metrics.jsonl row (empty: the proof holds)."""
    problems = []
    names = sorted(k.removeprefix("feature_").removesuffix("_enabled") for k in row if k.endswith("_enabled"))
    if not names:
        problems.append("no feature_<name>_enabled column in metrics.jsonl")
    for name in names:
        enabled = row[f"feature_{name}_enabled"] == 1
        calls = row.get(f"feature_{name}_effective_calls", 0)
        if enabled and calls == 0:
            problems.append(f"feature {name}: enabled but 0 effective calls")
        if not enabled and calls > 0:
            problems.append(f"feature {name}: disabled but {calls:g} effective calls")
    return problems


def run_proof(
    section: SigmaPretrainParams,
    seed: int,
    corpus_dir: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    rl_section: SigmaRLParams | None = None,
    code_dir: Path | None = None,
    rl_model_dir: Path | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Train SigmaLLM with `section` into a fresh `out_dir` (then RL it with `rl_section`); last row and problems.

    The returned row is the pretraining run's; with `rl_section` the RL run's features join it.
    """
    import torch

    from cascadelab.data.corpus import load_split
    from cascadelab.data.mixed_batches import TokenizedRows, mixed_batches
    from cascadelab.data.tokenizer import load_tokenizer
    from cascadelab.pipeline.sigma_pretrain import build_model, write_resolved_settings
    from cascadelab.training.optimizers.factory import build_optimizers
    from cascadelab.training.sigma_loop import SigmaTrainer
    from cascadelab.training.trainer import mean_loss

    shutil.rmtree(out_dir, ignore_errors=True)
    check_sigma_runtime(section, torch.cuda.is_available())
    write_resolved_settings(section, seed, out_dir)
    torch.set_num_threads(section.train.num_threads)
    tokenizer = load_tokenizer(tokenizer_dir)
    rows = TokenizedRows(tokenizer, load_split(corpus_dir, "train"))
    val = TokenizedRows(tokenizer, load_split(corpus_dir, "val")).sequential_batches(
        section.eval.batch_size, limit=section.train.eval_records
    )
    model = build_model("sigma", section, tokenizer, seed)
    train = section.train
    trainer = SigmaTrainer(
        model,
        build_optimizers(model, section.optimizer),
        train,
        out_dir,
        instant=section.instant,
        eval_fn=lambda m: {"val_loss": mean_loss(m, val)},
        features=section.features,
        guards=section.guards,
        data=section.data,
        credit_interval=section.optimizer.c3o.credit_interval,
        settings={"seed": seed, "sigma_pretrain": section.model_dump(mode="json")},
    )
    problems: list[str] = []
    row: dict[str, float] = {}
    try:
        batches = mixed_batches(rows, section.mix, train.max_steps, train.batch_size, seed)
        row = trainer.fit(batches).history[-1]
    except Exception as error:
        problems.append(f"run crashed at step {trainer.step}: {type(error).__name__}: {error}")
    problems += check_row(row) if row else []
    problems += _crash_reports(out_dir)
    if rl_section is not None and code_dir is not None and not problems:
        rl_row, rl_problems = _run_rl_proof(
            rl_section, seed, model, tokenizer, corpus_dir, tokenizer_dir, code_dir, out_dir, rl_model_dir
        )
        # the RL run's own features join the row; the model's keep the pretraining run's values (its checks)
        row = {**row, **{k: v for k, v in rl_row.items() if k.startswith("feature_") and k not in row}}
        problems += [f"sigma_rl: {problem}" for problem in rl_problems]
    return row, problems


def _crash_reports(out_dir: Path) -> list[str]:
    reports = sorted((out_dir / "errors").glob("*")) if (out_dir / "errors").is_dir() else []
    return [f"errors/ is not empty: {', '.join(p.name for p in reports)}"] if reports else []


def _run_rl_proof(
    section: SigmaRLParams,
    seed: int,
    model: Any,
    tokenizer: Any,
    corpus_dir: Path,
    tokenizer_dir: Path,
    code_dir: Path,
    out_dir: Path,
    rl_model_dir: Path | None = None,
) -> tuple[dict[str, float], list[str]]:
    """`sigma_rl` on `rl_model_dir` (else the model the proof just trained); its last row and problems."""
    from cascadelab.pipeline.paths import PATHS
    from cascadelab.pipeline.sigma_rl import run

    if rl_model_dir is None:
        rl_model_dir = out_dir / "sigma"
        model.save_pretrained(str(rl_model_dir))
        tokenizer.save_pretrained(str(rl_model_dir))
    rl_out = out_dir / "rl"
    try:
        paths = replace(
            PATHS,
            corpus=corpus_dir,
            tokenizer=tokenizer_dir,
            code_tasks=code_dir,
            sigma=rl_model_dir,
            sigma_rl=out_dir / "sigma_rl",
            sigma_rl_run=rl_out,
        )
        outcome = run(section, seed, paths)
    except Exception as error:
        return {}, [f"run crashed: {type(error).__name__}: {error}", *_crash_reports(rl_out)]
    row = outcome.history[-1]
    return row, check_row(row) + _crash_reports(rl_out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proof from params.yaml; print each feature's counters; 0 when it holds, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("runs/sigma_proof"))
    parser.add_argument("--rl-model", type=Path, default=Path("models/sigma"))
    args = parser.parse_args(argv)
    raw = yaml.safe_load(args.params.read_text()) or {}
    try:
        section = proof_section(raw.get("sigma_pretrain", {}), args.steps)
        rl_section = proof_rl_section(raw.get("sigma_rl", {}), args.steps)
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seed = int(raw.get("seed", 1234))
    data = args.data
    rl_model = args.rl_model if (args.rl_model / "config.json").is_file() else None
    row, problems = run_proof(
        section, seed, data / "corpus", data / "tokenizer", args.out, rl_section, data / "code_tasks", rl_model
    )
    for key in sorted(k for k in row if k.startswith("feature_") and k.endswith("_enabled")):
        name = key.removeprefix("feature_").removesuffix("_enabled")
        print(f"{name:18s} enabled {row[key]:.0f}  effective_calls {row[f'feature_{name}_effective_calls']:.0f}")
    if problems:
        for problem in problems:
            print(f"proof failed: {problem}", file=sys.stderr)
        return 1
    print(
        f"proof holds: {args.steps} steps of the full profile and of sigma_rl's, every counter consistent "
        f"({args.out}/metrics.jsonl, {args.out}/rl/metrics.jsonl)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
