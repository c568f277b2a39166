"""DVC stage `report`: every trained model in one table (Markdown, TSV plot, PNG) and one MLflow run."""

from pathlib import Path

from cascadelab.report.stage import build_report
from cascadelab.stage import load_or_fail, run_stage, stage_context, write_stage_metrics

METRICS_DIR = Path("metrics")
OUT_DIR = Path("plots/report")


def main() -> None:
    """Read params, collect the stages' metrics, write the report and log it."""
    params = load_or_fail()
    section = params.report
    with stage_context("report", params, section, script=__file__) as run:
        outputs = build_report(list(section.stages), METRICS_DIR, OUT_DIR, section.title)
        write_stage_metrics("report", outputs.metrics, run)
        for path in outputs.files:
            run.log_artifact(path)
    print((OUT_DIR / "report.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    run_stage(main)
