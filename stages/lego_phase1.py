"""DVC stage `lego_phase1`: train LEGO's shallow model on train, early-stopped on val."""

from cascadelab.io import write_tsv
from cascadelab.pipeline import lego_phase1
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("lego_phase1")


def main() -> None:
    """Read params, train the shallow model, write it, its metrics and its curves."""
    params = load_or_fail()
    with stage_context("lego_phase1", params, params.lego, script=__file__) as run:
        outcome = lego_phase1.run(params.lego, params.train_seed, PATHS, log_fn=run.log_metrics)
        columns = ["step", "train_loss", "lr", "train_tokens"]
        write_tsv(PLOTS_DIR / "train.tsv", outcome.curves.get("train", []), columns)
        write_tsv(PLOTS_DIR / "val.tsv", outcome.curves.get("val", []), ["step", "val_loss", "val_ppl"])
        write_stage_metrics("lego_phase1", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = outcome.metrics
    print(
        f"lego_phase1: val ppl {m['val_ppl']:.3f} (acc {m['val_acc']:.3f}) after {m['steps']} steps "
        f"({m['train_seconds']:.0f} s, {m['train_tokens_per_s']:.0f} tokens/s), {m['params']} params"
    )


if __name__ == "__main__":
    run_stage(main)
