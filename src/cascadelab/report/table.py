"""One row per trained model, read from the stages' `metrics/<stage>.json` and `plots/<stage>/{details,timing}.json`.

Every model stage evaluates on the same test split of the same corpus, so the rows compare: exact
match overall and per family, test perplexity of the responses, parameters, training seconds and the
inference compute relative to one full pass of the model per generated token (the cascade's generated
tokens per item over coarse-only, LEGO's share of layers run per token). ACOC trains and evaluates on
its own tasks (add/sub by default): its row says so in `tasks`. Training seconds are wall times measured
on the machine that ran the stage, so they compare only between stages run on the same quiet machine
(they live in the timing files, apart from the metrics DVC hashes: `pipeline.measurements`); the per-family
figures live in the details files (`pipeline.headline`).
The cascade's parameters are the coarse model's plus its refiners' (saved bytes at 4 bytes per fp32
parameter); its training seconds are the coarse model's plus the refiner stage's wall time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cascadelab.config import TASK_FAMILIES

Metrics = Mapping[str, Any]


@dataclass(frozen=True)
class ModelRow:
    """A model's figures on the test split (None where its stage does not measure one)."""

    model: str
    stage: str
    em: float | None
    em_by_family: dict[str, float] = field(default_factory=dict)
    ppl: float | None = None
    params: float | None = None
    train_seconds: float | None = None
    inference_compute: float | None = 1.0  # 1 = one pass of the model per generated token
    tasks: str = "all"

    def as_dict(self) -> dict[str, Any]:
        """Flat mapping (em_<family> columns) for JSON, TSV and MLflow."""
        flat = asdict(self)
        flat.update({f"em_{family}": value for family, value in flat.pop("em_by_family").items()})
        return flat


def _families(metrics: Metrics, prefix: str) -> dict[str, float]:
    return {f: float(metrics[f"{prefix}{f}"]) for f in TASK_FAMILIES if f"{prefix}{f}" in metrics}


def _get(metrics: Metrics, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _coarse(m: Metrics) -> list[ModelRow]:
    return [
        ModelRow("coarse (Llama)", "coarse_sft", _get(m, "em"), _families(m, "em_"), _get(m, "test_ppl"),
                 _get(m, "params"), _get(m, "train_seconds"))
    ]  # fmt: skip


def _cascade(m: Metrics, coarse: Metrics, refiner: Metrics) -> list[ModelRow]:
    coarse_params = _get(coarse, "params")
    refiner_params = _get(refiner, "refiner_bytes")
    total = None if coarse_params is None or refiner_params is None else coarse_params + refiner_params / 4
    refiner_seconds = _get(refiner, "training_wall_seconds")
    seconds = None if refiner_seconds is None else (_get(coarse, "train_seconds") or 0.0) + refiner_seconds
    return [
        ModelRow("Transformer² cascade (gated)", "cascade_eval", _get(m, "em_cascade"), _families(m, "em_cascade_"),
                 None, total, seconds, _get(m, "tokens_ratio_cascade")),
        ModelRow("Transformer² always refine", "cascade_eval", _get(m, "em_refined"), _families(m, "em_refined_"),
                 None, total, seconds, _get(m, "tokens_ratio_refined")),
        ModelRow("coarse_more (equal-compute control)", "cascade_eval", _get(m, "em_control"),
                 _families(m, "em_control_"), None, coarse_params, seconds),
    ]  # fmt: skip


def _hybrid(m: Metrics) -> list[ModelRow]:
    return [
        ModelRow("hybrid RNN-Transformer (NETY)", "hybrid_rnn", _get(m, "em"), _families(m, "em_"),
                 _get(m, "test_ppl"), _get(m, "params"), _get(m, "train_seconds"))
    ]  # fmt: skip


def _lego(m: Metrics, phase1: Metrics) -> list[ModelRow]:
    seconds = (_get(phase1, "train_seconds") or 0.0) + (_get(m, "train_seconds") or 0.0)
    return [
        ModelRow("LEGO (routed early exit)", "lego_phase2", _get(m, "em"), _families(m, "em_"), _get(m, "ppl"),
                 _get(m, "params"), seconds, _get(m, "compute_cost")),
        ModelRow("LEGO baseline (full depth)", "lego_phase2", _get(m, "baseline_em"), _families(m, "baseline_em_"),
                 _get(m, "baseline_ppl"), _get(m, "baseline_params"), _get(m, "baseline_train_seconds")),
    ]  # fmt: skip


def _acoc(m: Metrics) -> list[ModelRow]:
    rows = []
    arms = m.get("arms", {})
    for key, label in (("S", "ACOC study S (static small)"), ("L", "ACOC study L (static large)"),
                       ("G", "ACOC study G (fixed splits)"), ("A", "ACOC study A (adaptive ACOC)")):  # fmt: skip
        if key not in arms:
            continue
        r = arms[key]
        tasks = "+".join(f.removeprefix("em_") for f in sorted(r) if f.startswith("em_") and "_" not in f[3:])
        rows.append(ModelRow(label, "acoc", _get(r, "em"), _families(r, "em_"), None, _get(r, "params"),
                             _get(r, "train_seconds"), tasks=tasks or "own"))  # fmt: skip
    return rows


def _sigma(m: Metrics) -> list[ModelRow]:
    return [
        ModelRow(label, "sigma_pretrain", _get(m, f"{p}_em"), _families(m, f"{p}_em_"), _get(m, f"{p}_test_ppl"),
                 _get(m, f"{p}_params"), _get(m, f"{p}_train_seconds"))
        for p, label in (("sigma", "SigmaLLM"), ("baseline", "SIGMA baseline (Llama)"))
    ]  # fmt: skip


def _sigma_rl(m: Metrics, pretrain: Metrics) -> list[ModelRow]:
    seconds = (_get(pretrain, "sigma_train_seconds") or 0.0) + (_get(m, "train_seconds") or 0.0)
    return [
        ModelRow("SigmaLLM after RL (GRPO)", "sigma_rl", _get(m, "after_em"), _families(m, "after_em_"), None,
                 _get(pretrain, "sigma_params"), seconds)
    ]  # fmt: skip


BUILDERS: dict[str, tuple[tuple[str, ...], Callable[..., list[ModelRow]]]] = {
    # stage -> (stages whose metrics, details and timing files it reads, row builder)
    "coarse_sft": (("coarse_sft",), _coarse),
    "cascade_eval": (("cascade_eval", "coarse_sft", "refiner"), _cascade),
    "hybrid_rnn": (("hybrid_rnn",), _hybrid),
    "lego_phase2": (("lego_phase2", "lego_phase1"), _lego),
    "acoc": (("acoc",), _acoc),
    "sigma_pretrain": (("sigma_pretrain",), _sigma),
    "sigma_rl": (("sigma_rl", "sigma_pretrain"), _sigma_rl),
}


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s keys added, nested mappings merged (a stage's metrics, details and timing files)."""
    merged = dict(base)
    for key, value in extra.items():
        inner = merged.get(key)
        merged[key] = _merged(inner, value) if isinstance(inner, Mapping) and isinstance(value, Mapping) else value
    return merged


def load_figures(files_of: Callable[[str], Sequence[Path]], stages: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each stage's figures: its files (`files_of(stage)`) merged; a missing file fails naming it and its stage."""
    loaded: dict[str, dict[str, Any]] = {}
    for name in stages:
        figures: dict[str, Any] = {}
        for path in files_of(name):
            if not path.is_file():
                raise FileNotFoundError(f"report: {path} not found (run its stage first: dvc repro {name})")
            figures = _merged(figures, json.loads(path.read_text(encoding="utf-8")))
        loaded[name] = figures
    return loaded


def collect_rows(files_of: Callable[[str], Sequence[Path]], stages: Sequence[str]) -> list[ModelRow]:
    """The rows of `stages` (keys of :data:`BUILDERS`); `files_of(stage)` are the files holding a stage's figures.

    A missing file fails naming it and the stage to run.
    """
    rows: list[ModelRow] = []
    for stage in stages:
        if stage not in BUILDERS:
            raise ValueError(f"report.stages: unknown stage {stage!r} (known: {', '.join(BUILDERS)})")
        names, build = BUILDERS[stage]
        loaded = load_figures(files_of, names)
        rows.extend(build(*(loaded[name] for name in names)))
    return rows
