"""DVC stage `sigma_rl`: GRPO/GSPO with verifier rewards on the pretrained SigmaLLM, mixed with LM steps."""

from cascadelab.data.corpus import write_jsonl
from cascadelab.io import write_tsv
from cascadelab.pipeline import sigma_rl
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

OUT_DIR = PATHS.sigma_rl_run  # the trainer's output folder: metrics.jsonl, resolved_settings.json
PLOTS_DIR = PATHS.plots_of("sigma_rl")
REWARD_COLUMNS = ["step", "heldout_reward", "heldout_reward_math", "heldout_reward_code", "val_loss", "rl_share"]
MIX_COLUMNS = ["step", "share_before", "share_after", "heldout_reward", "lm_val_loss", "reason"]


def main() -> None:
    """Read params, run RL + LM steps, write the model, metrics, curves, mix decisions and predictions."""
    params = load_or_fail()
    with stage_context("sigma_rl", params, params.sigma_rl, script=__file__) as run:
        try:
            outcome = sigma_rl.run(
                params.sigma_rl,
                params.train_seed,
                PATHS,
                log_fn=lambda metrics, step: run.log_metrics(metrics, step=step),
                tracking_run=run,
                data_seed=params.seed,  # the held-out steering/reporting split is data: it keeps the data seed
            )
        except Exception:
            if (OUT_DIR / "errors").is_dir():
                run.log_artifact(OUT_DIR / "errors", artifact_path="sigma_rl/errors")
            raise
        write_tsv(PLOTS_DIR / "reward.tsv", outcome.curve, REWARD_COLUMNS)
        write_tsv(PLOTS_DIR / "mix.tsv", outcome.decisions, MIX_COLUMNS)
        write_jsonl(PLOTS_DIR / "predictions.jsonl", outcome.predictions)
        write_jsonl(PLOTS_DIR / "items.jsonl", outcome.items)  # start / RL / control per prompt and test item (claims)
        write_stage_metrics("sigma_rl", outcome.metrics, run)
        run.log_artifact(OUT_DIR, artifact_path="sigma_rl")
        run.log_artifact(PLOTS_DIR)
    m = outcome.metrics
    print(
        f"sigma_rl: held-out reward {m['start_heldout_reward']:.3f} -> {m['end_heldout_reward']:.3f}, "
        f"math EM {m['before_em']:.1f} -> {m['after_em']:.1f} %, "
        f"code pass {m.get('before_code_pass', 0.0):.1f} -> {m.get('after_code_pass', 0.0):.1f} %, "
        f"{m['rl_steps']} RL / {m['lm_steps']} LM steps, {m['wall_seconds']:.0f} s"
    )
    if "rl_vs_control_heldout_reward" in m:
        print(
            f"sigma_rl: RL - LM-only control: held-out reward {m['rl_vs_control_heldout_reward']:+.3f} "
            f"[{m['rl_vs_control_heldout_reward_low']:+.3f}, {m['rl_vs_control_heldout_reward_high']:+.3f}], "
            f"math EM {m['rl_vs_control_em']:+.1f} "
            f"[{m['rl_vs_control_em_low']:+.1f}, {m['rl_vs_control_em_high']:+.1f}] points (paired bootstrap 95 %)"
        )


if __name__ == "__main__":
    run_stage(main)
