"""DVC stage `prepare`: generate the verifiable corpus splits and train the tokenizer."""

from pathlib import Path

from cascadelab.data.prepare import prepare
from cascadelab.stage import load_or_fail, run_stage, stage_context, write_stage_metrics

CORPUS_DIR = Path("data/corpus")
TOKENIZER_DIR = Path("data/tokenizer")
CODE_DIR = Path("data/code_tasks")


def main() -> None:
    """Read params, build the corpus and tokenizer, write metrics."""
    params = load_or_fail()
    with stage_context("prepare", params, params.prepare, script=__file__) as run:
        metrics = prepare(params.prepare, params.seed, CORPUS_DIR, TOKENIZER_DIR, CODE_DIR)
        write_stage_metrics("prepare", metrics, run)
        run.log_artifact(CORPUS_DIR / "meta.json")
    print(
        f"prepare: {metrics['train_size']} train / {metrics['val_size']} val / {metrics['test_size']} test, "
        f"vocab {metrics['vocab_size']}"
    )


if __name__ == "__main__":
    run_stage(main)
