"""DVC stage `cascade_eval`: the cascade's modes on test, the equal-compute control, the accuracy-vs-compute curve."""

from collections import defaultdict

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import cascade_eval
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("cascade_eval")
SWEEP_COLUMNS = ["curve", "threshold", "tokens_per_item", "flops_per_item", "em", "refined_share"]


def main() -> None:
    """Read params, evaluate, write metrics, the sweep and per-family tables, the PNG and a prediction sample."""
    params = load_or_fail()
    with stage_context("cascade_eval", params, params.cascade_eval, script=__file__) as run:
        outcome = cascade_eval.run(params.cascade_eval, params.train_seed, PATHS)
        write_tsv(PLOTS_DIR / "sweep.tsv", outcome.curves["sweep"], SWEEP_COLUMNS)
        write_tsv(PLOTS_DIR / "families.tsv", outcome.curves["families"])
        write_jsonl(PLOTS_DIR / "predictions.jsonl", outcome.predictions)
        write_jsonl(PLOTS_DIR / "items.jsonl", outcome.items)  # every test item, for the claims' paired intervals
        write_stage_metrics("cascade_eval", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = defaultdict(lambda: float("nan"), outcome.metrics)  # undefined rates are left out of the metrics
    print(
        f"cascade_eval: EM coarse {m['em_coarse']:.1f} / always-refine {m['em_refined']:.1f} / "
        f"cascade {m['em_cascade']:.1f} / skip_coarse {m['em_skip_coarse']:.1f} / oracle {m['em_oracle']:.1f} / "
        f"control {m['em_control']:.1f} %, "
        f"cascade fix {m['fix_rate_cascade']:.1f} % break {m['break_rate_cascade']:.1f} %, "
        f"FLOPs x{m['flops_ratio_cascade']:.2f} of coarse-only (skip_coarse x{m['flops_ratio_skip_coarse']:.2f})"
    )


if __name__ == "__main__":
    run_stage(main)
