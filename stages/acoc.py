"""DVC stage `acoc`: grow an ACOC model over `acoc.cycles` cycles and train its two static baselines."""

import tempfile
from pathlib import Path

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import acoc
from cascadelab.pipeline.acoc_outputs import cycle_series, plot_cycles, save_history
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("acoc")


def main() -> None:
    """Read params, run the cycles and baselines, write models, history, metrics, curves and events."""
    params = load_or_fail()
    with stage_context("acoc", params, params.acoc, script=__file__) as run:
        outcome = acoc.run(
            params.acoc, params.seed, PATHS, log_fn=lambda metrics, step: run.log_metrics(metrics, step=step)
        )
        result = outcome.result
        for metrics, cycle in cycle_series(result):
            run.log_metrics(metrics, step=cycle)
        save_history(result, PATHS.acoc_history)
        for name, rows in outcome.tables.items():
            write_tsv(PLOTS_DIR / f"{name}.tsv", rows)
        write_jsonl(PLOTS_DIR / "events.jsonl", result.events)
        write_stage_metrics("acoc", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR, artifact_path="plots")
        run.log_artifact(PATHS.acoc / "config.json", artifact_path="acoc_model")
        with tempfile.TemporaryDirectory() as tmp:
            plot_cycles(result, Path(tmp) / "acoc_cycles.png")
            run.log_artifact(Path(tmp) / "acoc_cycles.png", artifact_path="plots")
    m, bars = outcome.metrics, outcome.metrics["bars"]
    line = ", ".join(
        f"{name} EM {m[name]['em']:.1f} % ({m[name]['params']:.0f} params)" for name in m if name != "bars"
    )
    print(f"acoc: {line}; max expansion jump {bars['max_expansion_jump_pct']:.4f} %")


if __name__ == "__main__":
    run_stage(main)
