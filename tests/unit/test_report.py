"""The final report: every stage's models in one table, from the metrics, details and timing files the stages write."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cascadelab.config import ReportStage
from cascadelab.io import read_tsv, write_json
from cascadelab.pipeline.headline import split_headline
from cascadelab.pipeline.measurements import split_measurements
from cascadelab.pipeline.paths import PATHS, Paths
from cascadelab.pipeline.paths import STAGES as PIPELINE_STAGES
from cascadelab.pipeline.report import CLAIM_STAGES, build_report
from cascadelab.report.table import BUILDERS, collect_rows

FAMILIES = {"add": 100.0, "sub": 90.0, "mul": 5.0, "expr": 4.0, "reverse": 0.0, "word": 2.5}
METRICS = {
    "coarse_sft": {"em": 30.0, **{f"em_{k}": v for k, v in FAMILIES.items()}, "test_ppl": 2.5, "params": 1000,
                   "train_seconds": 200.0},
    "refiner": {"refiner_bytes": 4000.0, "training_wall_seconds": 100.0},
    "cascade_eval": {"em_cascade": 40.0, "em_cascade_word": 50.0, "em_refined": 41.0, "em_control": 31.0,
                     "tokens_ratio_cascade": 1.5, "tokens_ratio_refined": 1.7},
    "hybrid_rnn": {"em": 22.0, "test_ppl": 2.9, "params": 1100, "train_seconds": 120.0},
    "lego_phase1": {"train_seconds": 50.0},
    "lego_phase2": {"em": 6.0, "ppl": 2.5, "params": 900, "train_seconds": 10.0, "compute_cost": 0.74,
                    "baseline_em": 17.0, "baseline_ppl": 2.2, "baseline_params": 1000, "baseline_train_seconds": 170.0},
    "acoc": {"arms": {"G": {"em": 59.0, "em_add": 49.5, "em_sub": 69.0, "params": 53904, "train_seconds": 55.0},
                      "S": {"em": 64.0, "em_add": 60.0, "em_sub": 68.0, "params": 41124},
                      "L": {"em": 87.0, "em_add": 86.0, "em_sub": 88.0, "params": 53904}}},
    "sigma_pretrain": {"sigma_em": 25.3, "sigma_test_ppl": 1.75, "sigma_params": 1161760, "baseline_em": 15.8,
                       "baseline_test_ppl": 1.95, "baseline_params": 1155584, "sigma_train_seconds": 200.0},
    "sigma_rl": {"after_em": 26.4, "after_em_add": 14.0, "train_seconds": 160.0},
}  # fmt: skip
STAGES = ["coarse_sft", "cascade_eval", "hybrid_rnn", "lego_phase2", "acoc", "sigma_pretrain", "sigma_rl"]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A project whose stages wrote METRICS as the stages do: headline in metrics/, the rest in details and timing."""
    paths = Paths.under(tmp_path)
    for name, payload in METRICS.items():
        science, measured = split_measurements(payload)
        for path, part in zip(paths.figures_of(name), (*split_headline(name, science), measured), strict=True):
            write_json(path, part)
    return paths


def _files(paths: Paths) -> Callable[[str], tuple[Path, ...]]:
    return paths.figures_of


def test_every_stage_the_schema_allows_has_a_row_builder() -> None:
    assert set(typing.get_args(ReportStage)) == set(BUILDERS)


def test_the_report_stage_depends_on_every_metrics_details_and_timing_file_it_reads() -> None:
    deps = yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"]["report"]["deps"]
    read = {name for names, _ in BUILDERS.values() for name in names} | set(CLAIM_STAGES)
    expected = {path.as_posix() for name in read for path in PATHS.figures_of(name)}
    timings = {PATHS.timing_of(stage).as_posix() for stage in PIPELINE_STAGES if stage != "report"}
    assert expected | timings <= set(deps)


def test_rows_carry_each_stages_figures(paths: Paths) -> None:
    assert "train_seconds" not in json.loads(paths.metrics_of("coarse_sft").read_text())  # the splits happened
    assert "em_add" not in json.loads(paths.metrics_of("coarse_sft").read_text())
    rows = {r.model: r for r in collect_rows(_files(paths), STAGES)}
    assert len(rows) == 13
    coarse = rows["coarse (Llama)"]
    assert (coarse.em, coarse.ppl, coarse.params, coarse.em_by_family) == (30.0, 2.5, 1000.0, FAMILIES)
    cascade = rows["Transformer² cascade (gated)"]
    assert (cascade.em, cascade.params, cascade.train_seconds, cascade.inference_compute) == (40.0, 2000.0, 300.0, 1.5)
    assert cascade.em_by_family == {"word": 50.0}
    assert rows["LEGO (routed early exit)"].inference_compute == 0.74
    assert rows["LEGO (routed early exit)"].train_seconds == 60.0
    grown = rows["ACOC study G (fixed splits)"]
    assert grown.tasks == "add+sub" and grown.em_by_family == {"add": 49.5, "sub": 69.0}
    assert grown.train_seconds == 55.0 and grown.em == 59.0  # nested files merged
    assert rows["SigmaLLM"].ppl == 1.75 and rows["SIGMA baseline (Llama)"].params == 1155584
    rl = rows["SigmaLLM after RL (GRPO)"]
    assert (rl.em, rl.em_by_family, rl.params, rl.train_seconds) == (26.4, {"add": 14.0}, 1161760.0, 360.0)


def test_the_report_writes_table_tsv_plot_and_flat_metrics(paths: Paths) -> None:
    out = build_report(STAGES, paths, "Title")
    report = paths.plots_of("report")
    text = (report / "report.md").read_text()
    assert text.startswith("# Title\n") and "| coarse (Llama) | `coarse_sft` | all | 30.0 | 100.0 | 90.0 |" in text
    tsv = read_tsv(report / "models.tsv")
    assert [r["model"] for r in tsv][:2] == ["coarse (Llama)", "Transformer² cascade (gated)"]
    assert tsv[0]["em_word"] == "2.5" and tsv[1]["ppl"] == "" and tsv[0]["train_seconds"] == "200"
    assert (report / "accuracy.png").stat().st_size > 1000
    assert out.metrics["models"] == 13 and out.metrics["coarse_llama_em"] == 30.0
    assert out.metrics["transformer_cascade_gated_inference_compute"] == 1.5


def test_a_missing_metrics_details_or_timing_file_names_it_and_its_stage(paths: Paths) -> None:
    paths.timing_of("hybrid_rnn").unlink()
    with pytest.raises(FileNotFoundError, match=r"report: .*hybrid_rnn/timing.json not found \(run its stage first"):
        collect_rows(_files(paths), ["hybrid_rnn"])
    paths.details_of("hybrid_rnn").unlink()
    with pytest.raises(FileNotFoundError, match=r"report: .*hybrid_rnn/details.json not found \(run its stage first"):
        collect_rows(_files(paths), ["hybrid_rnn"])
    paths.metrics_of("hybrid_rnn").unlink()
    with pytest.raises(FileNotFoundError, match=r"report: .*hybrid_rnn.json not found \(run its stage first"):
        collect_rows(_files(paths), ["hybrid_rnn"])
