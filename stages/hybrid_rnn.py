"""DVC stage `hybrid_rnn`: train the hybrid RNN-Transformer on prompt → response and evaluate it on test."""

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import hybrid_rnn
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("hybrid_rnn")


def main() -> None:
    """Read params, train + evaluate, write the model, metrics, curves and a prediction sample."""
    params = load_or_fail()
    with stage_context("hybrid_rnn", params, params.hybrid_rnn, script=__file__) as run:
        outcome = hybrid_rnn.run(params.hybrid_rnn, params.train_seed, PATHS, run.log_metrics)
        if outcome is None:
            return  # another rank than 0: rank 0 saves, evaluates and logs
        write_tsv(PLOTS_DIR / "train.tsv", outcome.train_history, ["step", "loss", "learning_rate"])
        write_tsv(PLOTS_DIR / "val.tsv", outcome.val_history, ["step", "val_loss"])
        write_jsonl(PLOTS_DIR / "predictions.jsonl", outcome.predictions)
        write_jsonl(PLOTS_DIR / "items.jsonl", outcome.items)  # every test item, for the claims' paired intervals
        write_stage_metrics("hybrid_rnn", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = outcome.metrics
    print(
        f"hybrid_rnn: test EM greedy {m['em']:.1f} % (add {m.get('em_add', 0):.1f}, sub {m.get('em_sub', 0):.1f}), "
        f"beam {m['beam_em']:.1f} % (add {m.get('beam_em_add', 0):.1f}, sub {m.get('beam_em_sub', 0):.1f}), "
        f"sampled {m['sample_em']:.1f} %; ppl {m['test_ppl']:.3f}, {m['params']} params, "
        f"{m['train_steps']} steps in {m['train_seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
