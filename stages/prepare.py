"""DVC stage `prepare`: generate the verifiable corpus splits and train the tokenizer."""

from cascadelab.pipeline import prepare
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics


def main() -> None:
    """Read params, build the corpus and tokenizer, write metrics."""
    params = load_or_fail()
    with stage_context("prepare", params, params.prepare, script=__file__) as run:
        metrics = prepare.run(params.prepare, params.seed, PATHS)
        write_stage_metrics("prepare", metrics, run)
        run.log_artifact(PATHS.corpus / "meta.json")
    print(
        f"prepare: {metrics['train_size']} train / {metrics['val_size']} val / {metrics['test_size']} test, "
        f"vocab {metrics['vocab_size']}"
    )


if __name__ == "__main__":
    run_stage(main)
