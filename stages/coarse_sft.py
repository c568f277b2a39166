"""DVC stage `coarse_sft`: fine-tune the coarse model of the cascade with TRL and evaluate it on test."""

from pathlib import Path

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.stage import load_or_fail, run_stage, stage_context, write_stage_metrics
from cascadelab.training.coarse_sft import run_coarse_sft

CORPUS_DIR, TOKENIZER_DIR = Path("data/corpus"), Path("data/tokenizer")
MODEL_DIR = Path("models/coarse")
PLOTS_DIR = Path("plots/coarse_sft")


def main() -> None:
    """Read params, train + evaluate, write the model, metrics, curves and a prediction sample."""
    params = load_or_fail()
    with stage_context("coarse_sft", params, params.coarse_sft, script=__file__) as run:
        outcome = run_coarse_sft(params.coarse_sft, params.seed, CORPUS_DIR, TOKENIZER_DIR, MODEL_DIR)
        write_tsv(PLOTS_DIR / "train.tsv", outcome.history, ["step", "loss", "learning_rate", "grad_norm"])
        write_jsonl(PLOTS_DIR / "predictions.jsonl", outcome.predictions)
        write_stage_metrics("coarse_sft", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = outcome.metrics
    print(
        f"coarse_sft: test EM {m['em']:.1f} % (add {m.get('em_add', 0):.1f}, sub {m.get('em_sub', 0):.1f}), "
        f"ppl {m['test_ppl']:.3f}, {m['params']} params, {m['train_tokens_per_s']:.0f} train tokens/s"
    )


if __name__ == "__main__":
    run_stage(main)
