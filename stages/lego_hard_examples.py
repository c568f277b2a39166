"""DVC stage `lego_hard_examples`: confidence threshold on val, token-level hard examples from train."""

from cascadelab.io import write_tsv
from cascadelab.pipeline import lego_hard_examples
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("lego_hard_examples")


def main() -> None:
    """Read params, collect the hard examples, write them (fp16 safetensors), metrics and a histogram."""
    params = load_or_fail()
    with stage_context("lego_hard_examples", params, params.lego, script=__file__) as run:
        outcome = lego_hard_examples.run(params.lego, params.train_seed, PATHS)
        write_tsv(PLOTS_DIR / "confidence.tsv", outcome.curves["confidence"], ["confidence", "share", "hard"])
        write_stage_metrics("lego_hard_examples", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = outcome.metrics
    print(
        f"lego_hard_examples: threshold {m['threshold']:.4f}, {m['train_rows']} train / {m['val_rows']} val "
        f"hard tokens, {m['bytes'] / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    run_stage(main)
