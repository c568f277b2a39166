"""DVC stage `cascade_pairs`: the frozen coarse model answers train and val prompts; (coarse, gold) pairs."""

from collections import defaultdict

from cascadelab.io import write_tsv
from cascadelab.pipeline import cascade_pairs
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("cascade_pairs")


def main() -> None:
    """Read params, generate and balance the pairs, write them, their metrics and the error rates per task."""
    params = load_or_fail()
    settings = params.cascade_pairs
    with stage_context("cascade_pairs", params, settings, script=__file__) as run:
        outcome = cascade_pairs.run(settings, params.train_seed, PATHS, params.coarse_sft)
        write_tsv(PLOTS_DIR / "error_rates.tsv", outcome.curves["error_rates"])
        write_stage_metrics("cascade_pairs", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = defaultdict(lambda: float("nan"), outcome.metrics)
    print(
        f"cascade_pairs: {m['train_balanced_pairs']:.0f} train / {m['val_balanced_pairs']:.0f} val pairs, "
        f"greedy coarse error {m['train_coarse_error']:.1f} % (train) {m['val_coarse_error']:.1f} % (val), "
        f"{m['pairs_seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
