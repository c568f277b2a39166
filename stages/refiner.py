"""DVC stage `refiner`: train the worked-steps refiner and the equal-compute control `coarse_more`."""

from collections import defaultdict

from cascadelab.io import write_tsv
from cascadelab.pipeline import refiner
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.runtime import load_or_fail, run_stage, stage_context, write_stage_metrics

PLOTS_DIR = PATHS.plots_of("refiner")
COLUMNS = ["step", "loss", "learning_rate", "grad_norm"]


def main() -> None:
    """Read params, train and save the refiner(s) and the control, write metrics and training curves."""
    params = load_or_fail()
    with stage_context("refiner", params, params.refiner, script=__file__) as run:
        report_to = ["mlflow"] if not params.refiner.parallel else []
        outcome = refiner.run(params.refiner, params.train_seed, PATHS, report_to=report_to)
        write_tsv(PLOTS_DIR / "train.tsv", outcome.curves["train"], ["model", *COLUMNS])
        write_tsv(PLOTS_DIR / "control_train.tsv", outcome.curves["control_train"], COLUMNS)
        write_stage_metrics("refiner", outcome.metrics, run)
        run.log_artifact(PLOTS_DIR)
    m = defaultdict(lambda: float("nan"), outcome.metrics)  # no control metrics when it is disabled
    per_task = ", ".join(
        f"{k.removeprefix('val_refined_em_')} {v:.1f}" for k, v in m.items() if k.startswith("val_refined_em_")
    )
    print(
        f"refiner: val refined EM {per_task} % (control {m['val_control_em']:.1f} %), "
        f"{m['train_steps']:.0f} steps, training wall {m['training_wall_seconds']:.0f} s"
    )


if __name__ == "__main__":
    run_stage(main)
