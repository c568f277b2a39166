"""DVC stage `coarse_sft`: fine-tune the coarse model of the cascade with TRL and evaluate it on test."""

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import coarse_sft
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("coarse_sft")


def main() -> None:
    """Read params, train + evaluate, write the model, metrics, curves and a prediction sample."""
    params = load_or_fail()
    with stage_context("coarse_sft", params, params.coarse_sft, script=__file__) as run:
        outcome = coarse_sft.run(params.coarse_sft, params.train_seed, PATHS)
        if outcome is None:
            return  # another rank than 0: rank 0 saves, evaluates and logs
        write_tsv(PLOTS_DIR / "train.tsv", outcome.history, ["step", "loss", "learning_rate", "grad_norm"])
        write_jsonl(PLOTS_DIR / "predictions.jsonl", outcome.predictions)
        write_jsonl(PLOTS_DIR / "items.jsonl", outcome.items)  # every test item, for the claims' paired intervals
        write_stage_metrics("coarse_sft", outcome.metrics, run)
        run.log_metrics({"resumed_from_step": outcome.resumed_from_step})
        run.log_artifact(PLOTS_DIR)
    m = outcome.metrics
    print(
        f"coarse_sft: test EM {m['em']:.1f} % (add {m.get('em_add', 0):.1f}, sub {m.get('em_sub', 0):.1f}), "
        f"ppl {m['test_ppl']:.3f}, {m['params']} params, {m['train_tokens_per_s']:.0f} train tokens/s"
    )


if __name__ == "__main__":
    run_stage(main)
