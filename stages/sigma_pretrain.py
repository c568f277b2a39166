"""DVC stage `sigma_pretrain`: pre-train SigmaLLM and a same-size Llama baseline, evaluate both on test."""

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import sigma_pretrain
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

OUT_DIR = PATHS.sigma_pretrain_run  # the trainer's output folder: metrics.jsonl (SigmaLLM), baseline/
PLOTS_DIR = PATHS.plots_of("sigma_pretrain")
CURVE_COLUMNS = ["step", "loss", "val_loss", "learning_rate", "grad_norm", "core_tokens_per_s"]


def main() -> None:
    """Read params, train + evaluate both models, write the model, metrics, curves and predictions."""
    params = load_or_fail()
    with stage_context("sigma_pretrain", params, params.sigma_pretrain, script=__file__) as run:
        try:
            outcome = sigma_pretrain.run(
                params.sigma_pretrain,
                params.train_seed,
                PATHS,
                log_fn=lambda metrics, step: run.log_metrics(metrics, step=step),
            )
        except Exception:
            if (OUT_DIR / "errors").is_dir():  # the trainer's crash reports go to the run before it fails
                run.log_artifact(OUT_DIR / "errors", artifact_path="sigma_pretrain/errors")
            raise
        if outcome is None:
            return  # another rank than 0: rank 0 saves, evaluates and logs
        for name in sigma_pretrain.MODELS:
            write_tsv(PLOTS_DIR / f"{name}.tsv", outcome.histories[name], CURVE_COLUMNS)
        write_jsonl(PLOTS_DIR / "predictions.jsonl", outcome.predictions)
        write_jsonl(PLOTS_DIR / "items.jsonl", outcome.items)  # every test item, for the claims' paired intervals
        write_stage_metrics("sigma_pretrain", outcome.metrics, run)
        run.log_artifact(OUT_DIR, artifact_path="sigma_pretrain")
        run.log_artifact(PLOTS_DIR)
        run.log_artifact(PATHS.sigma / "config.json", artifact_path="sigma_model")
    m = outcome.metrics
    print(
        f"sigma_pretrain: test ppl SigmaLLM {m['sigma_test_ppl']:.3f} vs Llama {m['baseline_test_ppl']:.3f} "
        f"(ratio {m['ppl_ratio']:.3f}), EM {m['sigma_em']:.1f} vs {m['baseline_em']:.1f} %, "
        f"params {m['sigma_params']} vs {m['baseline_params']}, "
        f"train {m['sigma_train_seconds']:.0f} s vs {m['baseline_train_seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
