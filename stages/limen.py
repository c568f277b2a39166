"""DVC stage `limen`: fit the LIMEN gate on the train pairs, calibrate it and choose its threshold on val."""

from collections import defaultdict

from cascadelab.io import write_tsv
from cascadelab.pipeline import limen
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("limen")


def main() -> None:
    """Read params, fit and save LIMEN, write its metrics and reliability diagram."""
    params = load_or_fail()
    with stage_context("limen", params, params.limen, script=__file__) as run:
        outcome = limen.run(params.limen, params.train_seed, PATHS)
        write_tsv(PLOTS_DIR / "reliability.tsv", outcome.curves["reliability"], ["predicted", "observed", "count"])
        write_stage_metrics("limen", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = defaultdict(lambda: float("nan"), outcome.metrics)  # AUROC is undefined when val has one class
    print(
        f"limen: val AUROC {m['val_auroc']:.3f}, ECE {m['val_ece']:.3f}, threshold {m['threshold']:.3f}, "
        f"approval {100 * m['val_approval_rate']:.1f} %, worst-case break {100 * m['val_worst_case_break_rate']:.1f} %"
    )


if __name__ == "__main__":
    run_stage(main)
