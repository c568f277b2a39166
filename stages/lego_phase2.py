"""DVC stage `lego_phase2`: upper block on the hard examples, routed test evaluation vs a full-depth baseline."""

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import lego_phase2
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("lego_phase2")
COLUMNS = {
    "upper_train": ["step", "train_loss", "lr", "train_tokens"],
    "upper_val": ["step", "val_loss", "val_ppl"],
    "baseline_train": ["step", "train_loss", "lr", "train_tokens"],
    "baseline_val": ["step", "val_loss", "val_ppl"],
    # val (where the threshold is chosen) and test at the same thresholds
    "tradeoff_val": ["threshold", "shallow_ratio", "compute_cost", "ppl", "ppl_ratio_full", "acc"],
    "tradeoff": ["threshold", "shallow_ratio", "compute_cost", "ppl", "ppl_ratio_full", "acc"],
}


def main() -> None:
    """Read params, train phase 2 and the baseline, write both models, metrics and curves."""
    params = load_or_fail()
    with stage_context("lego_phase2", params, params.lego, script=__file__) as run:
        outcome = lego_phase2.run(params.lego, params.train_seed, PATHS, log_fn=run.log_metrics)
        for name, columns in COLUMNS.items():
            write_tsv(PLOTS_DIR / f"{name}.tsv", outcome.curves.get(name, []), columns)
        write_jsonl(PLOTS_DIR / "items.jsonl", outcome.curves["items"])  # every test item, for the claims
        write_stage_metrics("lego_phase2", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = outcome.metrics
    print(
        f"lego_phase2: routed test ppl {m['ppl']:.3f} vs baseline {m['baseline_ppl']:.3f} "
        f"(ratio {m['ppl_ratio']:.4f}), shallow_ratio {m['shallow_ratio']:.3f}, compute_cost {m['compute_cost']:.3f}, "
        f"EM {m['em']:.1f} % vs {m['baseline_em']:.1f} %"
    )


if __name__ == "__main__":
    run_stage(main)
