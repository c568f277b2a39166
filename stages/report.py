"""DVC stage `report`: every trained model in one table (Markdown, TSV plot, PNG) and one MLflow run."""

from cascadelab.pipeline import report
from cascadelab.pipeline.paths import PATHS, STAGES
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics
from cascadelab.tracking import log_pipeline_summary


def main() -> None:
    """Read params, collect the stages' metrics, write the report and log it."""
    params = load_or_fail()
    section = params.report
    with stage_context("report", params, section, script=__file__) as run:
        settings = {"refiner.format.use_coarse": params.refiner.format.use_coarse}  # dvc.yaml lists these keys
        outputs = report.run(section, params.seed, PATHS, params.claims, settings)
        write_stage_metrics("report", outputs.metrics, run)
        for path in outputs.files:
            run.log_artifact(path)
        # The pipeline run shows every model's headline figures and every claim's verdict, at one seed and over
        # seeds (MLflow only: the claims stay out of DVC's metrics table), and stages DVC skipped as cached children.
        headline = outputs.metrics | (outputs.claims.headline() if outputs.claims else {})
        headline |= outputs.over_seeds.headline() if outputs.over_seeds else {}
        files = {s: PATHS.figures_of(s) for s in STAGES if s != "report"}
        cached = log_pipeline_summary(run, headline, files)
        if cached:
            print(f"MLflow: logged as cached (DVC skipped them): {', '.join(cached)}")
    print((PATHS.plots_of("report") / "report.md").read_text(encoding="utf-8"))
    print(PATHS.results.read_text(encoding="utf-8"))


if __name__ == "__main__":
    run_stage(main)
