"""DVC stage `acoc`: the growth study — arms S, L, G, A on one training-FLOP budget over paired seeds."""

import tempfile
from pathlib import Path

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import acoc
from cascadelab.pipeline.acoc_outputs import (
    curve_series,
    curve_table,
    event_rows,
    item_rows,
    plot_curves,
    save_history,
    study_figures,
)
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("acoc")


def main() -> None:
    """Read params, run every arm on every seed, write models, curves, items, events, metrics and the plot."""
    params = load_or_fail()
    settings = params.acoc
    with stage_context("acoc", params, settings, script=__file__) as run:
        outcome = acoc.run(settings, PATHS)
        runs = outcome.runs
        figures = study_figures(settings, runs, outcome.flops)
        figures["study_seconds"] = outcome.seconds
        for step, values in curve_series(runs):
            run.log_metrics(values, step=step)
        save_history(runs, PATHS.acoc_history)
        write_tsv(PLOTS_DIR / "curves.tsv", curve_table(settings, runs))
        write_jsonl(PLOTS_DIR / "items.jsonl", item_rows(runs))
        write_jsonl(PLOTS_DIR / "events.jsonl", event_rows(runs))
        with tempfile.TemporaryDirectory() as tmp:
            plot_curves(settings, runs, Path(tmp) / "loss_vs_flops.png")
            (PLOTS_DIR / "loss_vs_flops.png").write_bytes((Path(tmp) / "loss_vs_flops.png").read_bytes())
        write_stage_metrics("acoc", figures, run)
        run.log_artifact(PLOTS_DIR, artifact_path="plots")
    arms, bars = figures["arms"], figures.get("bars", {})
    line = ", ".join(f"{arm} EM {row['em']:.1f} % val {row['val_loss_median']:.4f}" for arm, row in arms.items())
    print(f"acoc: {line}; G saving median {bars.get('G_saving_median')}; {outcome.seconds:.0f} s")


if __name__ == "__main__":
    run_stage(main)
