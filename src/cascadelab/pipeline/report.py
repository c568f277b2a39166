"""The `report` stage's logic: collect every model's row, write the table, TSV, plot and summary metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascadelab.config import ClaimsParams, ReportParams
from cascadelab.io import atomic_write_text, write_json, write_tsv
from cascadelab.pipeline.paths import STAGES, Paths
from cascadelab.pipeline.seed_runs import DEFAULT_SEEDS, gathered, seeded_stages
from cascadelab.report.claim_defs import SEED_CLAIMS
from cascadelab.report.claims import ClaimsTable, Figures, Items, build_claims, read_items
from cascadelab.report.render import COLUMNS, markdown_table, plot_accuracy
from cascadelab.report.results_page import results_page
from cascadelab.report.seed_claims import SeedClaimsTable, SeedRun, build_seed_claims, near_threshold, wall_estimate
from cascadelab.report.table import ModelRow, collect_rows, load_figures

# Stages whose figures the claims read, and those whose per-item test rows (plots/<stage>/items.jsonl) pair them.
CLAIM_STAGES = ("coarse_sft", "cascade_eval", "refiner", "hybrid_rnn", "lego_phase1", "lego_phase2", "acoc",
                "sigma_pretrain", "sigma_rl")  # fmt: skip
ITEM_STAGES = ("coarse_sft", "cascade_eval", "hybrid_rnn", "sigma_pretrain", "sigma_rl", "lego_phase2", "acoc")


@dataclass(frozen=True)
class ReportOutputs:
    """What the report wrote, and the flat metrics for metrics/report.json."""

    rows: list[ModelRow]
    metrics: dict[str, Any]
    files: list[Path]
    claims: ClaimsTable | None = None
    over_seeds: SeedClaimsTable | None = None


def _key(model: str) -> str:
    """An ASCII metric-name prefix for a model label (`Transformer² cascade (gated)` -> `transformer_cascade_gated`)."""
    return re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")


def run(
    section: ReportParams,
    seed: int,
    paths: Paths,
    claims: ClaimsParams | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ReportOutputs:
    """The report of `section.stages` into `plots/report`, and the claims table (`seed` seeds its bootstrap).

    `settings` are the other sections' params a claim depends on (`refiner.format.use_coarse`), by dotted key.
    """
    outputs = build_report(list(section.stages), paths, section.title)
    table = build_claims_table(claims or ClaimsParams(), seed, paths, settings)
    seconds = stage_seconds(paths)
    over_seeds = build_seed_claims_table(claims or ClaimsParams(), seed, paths, settings, seconds)
    over_seeds.near = near_threshold(table.entries, seeded_stages(), SEED_CLAIMS)
    write_json(paths.claims, table.as_dict())
    write_json(paths.claims_seeds, over_seeds.as_dict())
    atomic_write_text(paths.results, results_page(table, outputs.rows, seed, seconds, over_seeds))
    outputs.metrics.update({f"claims_{verdict}": count for verdict, count in table.as_dict()["verdicts"].items()})
    files = [*outputs.files, paths.claims, paths.claims_seeds, paths.results]
    return ReportOutputs(outputs.rows, outputs.metrics, files, table, over_seeds)


def stage_seconds(paths: Paths) -> dict[str, float]:
    """Each other stage's measured wall time (`stage_seconds` of its timing file), in pipeline order."""
    seconds = {}
    for stage in STAGES:
        timing = paths.timing_of(stage)
        if stage != "report" and timing.is_file():
            value = json.loads(timing.read_text(encoding="utf-8")).get("stage_seconds")
            if isinstance(value, int | float):
                seconds[stage] = float(value)
    return seconds


def build_claims_table(
    claims: ClaimsParams, seed: int, paths: Paths, settings: Mapping[str, Any] | None = None
) -> ClaimsTable:
    """Every seed claim decided from the stages' metrics and per-item files under `paths`, and `settings`."""
    figures, items = claim_inputs(paths, settings)
    return build_claims(SEED_CLAIMS, figures, items, claims, seed)


def claim_inputs(paths: Paths, settings: Mapping[str, Any] | None = None) -> tuple[Figures, Items]:
    """The claim stages' figures (with `settings` as `params`) and per-item rows under `paths`."""
    figures: dict[str, Any] = load_figures(paths.figures_of, CLAIM_STAGES)
    figures["params"] = dict(settings or {})
    items = {stage: read_items(paths.plots_of(stage) / "items.jsonl") for stage in ITEM_STAGES}
    return figures, items


def build_seed_claims_table(
    claims: ClaimsParams,
    seed: int,
    paths: Paths,
    settings: Mapping[str, Any] | None = None,
    seconds: Mapping[str, float] | None = None,
) -> SeedClaimsTable:
    """The claims over the default run (training seed `seed`) and the seed runs gathered under `paths.seeds`.

    Before any `make claims` there are no seed runs: the table lists none, and carries the wall-time estimate.
    """
    figures, items = claim_inputs(paths, settings)
    runs, info = gathered(paths.seeds)
    seeded = seeded_stages()
    default = SeedRun(seed, "the default run", figures, items)
    # a seed run changes only training_seed: it shares the default run's other params (`settings`)
    runs = [SeedRun(r.training_seed, r.source, {**r.figures, "params": figures["params"]}, r.items) for r in runs]
    if runs:
        table = build_seed_claims(SEED_CLAIMS, [default, *runs], seeded, claims, seed)
    else:
        table = SeedClaimsTable([{"training_seed": seed, "source": default.source}], [], [], claims.confidence)
    table.wall = wall_estimate(seconds or {}, seeded, len(runs) or len(DEFAULT_SEEDS))
    if "measured_seconds" in info:
        table.wall["measured_seconds"] = info["measured_seconds"]
    return table


def build_report(stages: list[str], paths: Paths, title: str) -> ReportOutputs:
    """Write `plots/report/{report.md, models.tsv, accuracy.png}` from the stages' metrics, details and timing files."""
    rows = collect_rows(paths.figures_of, stages)
    out_dir = paths.plots_of("report")
    table = markdown_table(rows)
    text = (
        f"# {title}\n\nEvery model of the pipeline on the test split of the same corpus (exact match in %, "
        "test perplexity of the responses, parameters, training wall seconds, inference compute relative to "
        "one pass of the model per generated token). Regenerate with `dvc repro report`.\n\n" + table
    )
    files = [out_dir / "report.md", out_dir / "models.tsv", out_dir / "accuracy.png"]
    atomic_write_text(files[0], text)
    write_tsv(files[1], [r.as_dict() for r in rows], COLUMNS)
    plot_accuracy(files[2], rows)
    metrics: dict[str, Any] = {"models": len(rows)}
    for row in rows:
        for name in ("em", "ppl", "params", "inference_compute"):
            value = getattr(row, name)
            if value is not None:
                metrics[f"{_key(row.model)}_{name}"] = value
    return ReportOutputs(rows, metrics, files)
