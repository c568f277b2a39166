"""End to end: the four cascade stages under `dvc repro` in a temporary copy of the project, tiny params."""

import json

import pytest
from e2e_project import TINY_CASCADE, TINY_COARSE, TINY_PREPARE, client, dvc, make_project, stage_figures, stage_runs

from cascadelab.io import read_tsv

pytestmark = pytest.mark.slow

STAGES = ("cascade_pairs", "limen", "refiner", "cascade_eval")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    overrides = {"prepare": TINY_PREPARE, "coarse_sft": TINY_COARSE, **TINY_CASCADE}
    return make_project(tmp_path_factory.mktemp("project"), overrides)


@pytest.fixture(scope="module")
def first_repro(project):
    return dvc(project, "repro", "cascade_eval")


def test_cascade_stages_run_in_order_after_coarse_sft(project, first_repro):
    order = [first_repro.index(f"Running stage '{s}'") for s in ("prepare", "coarse_sft", *STAGES)]
    assert order == sorted(order)
    assert "lego_phase1" not in first_repro  # not a dependency of the cascade chain
    repo, _ = project
    assert {r.data.tags["cascadelab.stage"] for r in stage_runs(repo)} == {"prepare", "coarse_sft", *STAGES}


def test_each_stage_writes_its_outputs(project, first_repro):
    repo, _ = project
    pairs = [json.loads(line) for line in (repo / "data" / "cascade_pairs" / "train.jsonl").read_text().splitlines()]
    assert pairs and {"prompt", "coarse", "steps", "answer", "task", "coarse_correct", "coarse_logprob"} <= set(
        pairs[0]
    )
    assert (repo / "models" / "limen" / "limen.safetensors").is_file()
    limen = stage_figures(repo, "limen")
    assert 0.0 <= limen["threshold"] <= 1.0 and "val_ece" in limen and "val_approval_rate" in limen
    assert (repo / "models" / "refiner" / "mul" / "model.safetensors").is_file()  # one refiner per routed family
    assert (repo / "models" / "coarse_more" / "model.safetensors").is_file()  # the equal-compute control
    refiner = stage_figures(repo, "refiner")
    assert refiner["train_steps"] == refiner["control_steps"] == 12  # control budget: the refiners' steps
    assert (repo / "models" / "refiner_nodraft" / "mul" / "model.safetensors").is_file()  # the draft ablation
    assert (repo / "models" / "refiner" / "router.json").is_file()  # routing reads the prompt, not its label
    assert "val_nodraft_refined_em" in refiner and 0.0 <= refiner["router_val_accuracy"] <= 100.0
    assert json.loads((repo / "models" / "refiner" / "refiner.json").read_text())["settings"]["format"]["use_coarse"]
    assert limen["calibration_items"] > 0 and limen["threshold_items"] > 0  # disjoint halves of val
    evaluation = stage_figures(repo, "cascade_eval")
    for key in ("em_coarse", "em_refined", "em_cascade", "em_control", "tokens_per_item_cascade"):
        assert key in evaluation  # rates over an empty set (no coarse-right item) are left out
    assert {"em_coarse_mul", "em_cascade_mul", "em_control_mul", "cascade_minus_control_mul"} <= set(evaluation)
    assert evaluation["tokens_ratio_coarse"] == 1.0
    for key in ("em_skip_coarse", "em_oracle", "flops_per_item_cascade", "flops_per_item_skip_coarse"):
        assert key in evaluation
    assert evaluation["flops_per_item_control"] > 0 and evaluation["flops_ratio_coarse"] == 1.0
    sweep = read_tsv(repo / "plots" / "cascade_eval" / "sweep.tsv")
    assert all(evaluation["em_oracle"] >= float(p["em"]) - 1e-9 for p in sweep)  # no gate beats the oracle
    assert (repo / "plots" / "cascade_eval" / "accuracy_vs_compute.png").stat().st_size > 0
    families = read_tsv(repo / "plots" / "cascade_eval" / "families.tsv")
    tasks = [row["task"] for row in families]
    assert tasks[-1] == "all" and tasks[:-1] == sorted(tasks[:-1]) and "mul" in tasks
    assert int(families[-1]["items"]) == sum(int(row["items"]) for row in families[:-1])


def test_threshold_sweep_has_a_monotone_compute_axis(project, first_repro):
    repo, _ = project
    rows = read_tsv(repo / "plots" / "cascade_eval" / "sweep.tsv")
    assert {row["curve"] for row in rows} == {"cascade", "nodraft"}  # the same gate over the no-draft refiner
    points = [row for row in rows if row["curve"] == "cascade"]
    tokens = [float(p["tokens_per_item"]) for p in points]
    assert len(points) >= 2 and tokens == sorted(tokens)
    assert float(points[0]["refined_share"]) == 0.0  # never refine: the coarse model alone
    evaluation = stage_figures(repo, "cascade_eval")
    assert float(points[0]["em"]) == pytest.approx(evaluation["em_coarse"], abs=1e-4)


def test_second_repro_runs_nothing(project, first_repro):
    assert "Running stage" not in dvc(project, "repro", "cascade_eval")


# Figures of the model stages this project does not run, written as those stages write them, so that the
# report stage (run alone with `--single-item`) decides the cascade's claims from the real tiny run.
OTHER_STAGES = {
    "hybrid_rnn": {"em": 20.0, "test_ppl": 3.0, "params": 1100, "train_tokens": 500},
    "lego_phase1": {"train_flops": 1e9},
    "lego_phase2": {"em": 5.0, "ppl": 2.6, "params": 900, "compute_cost": 0.7, "baseline_em": 15.0,
                    "baseline_ppl": 2.2, "baseline_params": 1000, "lego_train_flops": 1e9, "baseline_train_flops": 2e9},
    "acoc": {"arms": {arm: {"em": 60.0, "params": 500, "train_flops": 1e9} for arm in ("S", "L", "G", "A")}},
    "sigma_pretrain": {"sigma_em": 25.0, "sigma_test_ppl": 1.8, "sigma_params": 1200, "sigma_train_tokens": 900,
                       "baseline_em": 15.0, "baseline_test_ppl": 2.0, "baseline_params": 1190,
                       "baseline_train_tokens": 900},
    "sigma_rl": {"after_em": 26.0, "start_heldout_reward": 0.2, "end_heldout_reward": 0.25,
                 "draft_tokens_per_forward": 1.1},
}  # fmt: skip


def test_report_writes_a_claims_table_whose_entries_name_their_baselines(project, first_repro):
    repo, _ = project
    ids = [json.loads(line)["id"] for line in (repo / "plots" / "coarse_sft" / "items.jsonl").read_text().splitlines()]
    for stage, figures in OTHER_STAGES.items():
        (repo / "plots" / stage).mkdir(parents=True, exist_ok=True)
        (repo / "metrics" / f"{stage}.json").write_text(json.dumps(figures))
        (repo / "plots" / stage / "timing.json").write_text("{}")
        (repo / "plots" / stage / "details.json").write_text("{}")
    for stage in ("lego_hard_examples",):  # its timing file is a report dep too (stage wall times)
        (repo / "plots" / stage).mkdir(parents=True, exist_ok=True)
        (repo / "plots" / stage / "timing.json").write_text('{"stage_seconds": 1.0}')
    for stage in ("sigma_rl", "lego_phase2", "acoc"):  # no per-item rows: their claims have no interval here
        (repo / "plots" / stage / "items.jsonl").write_text("")
    for stage, keys in (("hybrid_rnn", ("correct",)), ("sigma_pretrain", ("sigma_correct", "baseline_correct"))):
        rows = [{"id": i, **dict.fromkeys(keys, k % 3 == 0), "sigma_nll": 1.0, "baseline_nll": 1.2,
                 "sigma_tokens": 2, "baseline_tokens": 2} for k, i in enumerate(ids)]  # fmt: skip
        (repo / "plots" / stage / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = dvc(project, "repro", "--single-item", "report")
    assert "Running stage 'report'" in out
    claims = json.loads((repo / "metrics" / "claims.json").read_text())
    entries = {e["name"]: e for e in claims["claims"]}
    assert all(e["system"] and e["baseline"] and e["verdict"] in ("holds", "refuted", "inconclusive")
               for e in entries.values())  # fmt: skip
    fixes = entries["cascade_fixes_coarse_errors"]
    assert fixes["baseline"] == "coarse_only"
    assert fixes["interval"] is not None and fixes["interval_note"].startswith("paired bootstrap over")
    assert fixes["compute"]["system"]["inference_flops_per_item"] > 0
    page = (repo / "docs" / "results.md").read_text()
    assert "`cascade_fixes_coarse_errors`" in page and "coarse_only" in page
    assert "No seed runs gathered yet" in page  # no `make claims` here: the claims over seeds wait for it
    assert json.loads((repo / "metrics" / "claims_seeds.json").read_text())["claims"] == []
    report = json.loads((repo / "metrics" / "report.json").read_text())
    assert report["claims_holds"] + report["claims_refuted"] + report["claims_inconclusive"] == len(entries)
    (report_run,) = stage_runs(repo, "report")
    assert any(a.path.endswith("claims.json") for a in client(repo).list_artifacts(report_run.info.run_id))
    # The pipeline execution's parent run carries the headline figures of every stage, read back through MLflow:
    # the report's leaderboard and verdict counts, each claim's effect and verdict, and a cached child per stage
    # DVC skipped in this execution, holding that stage's metrics.
    parent = client(repo).get_run(report_run.data.tags["mlflow.parentRunId"])
    assert {key: parent.data.metrics[key] for key in report} == pytest.approx(report)
    assert parent.data.metrics["claim.cascade_fixes_coarse_errors.verdict"] in (-1.0, 0.0, 1.0)
    assert parent.data.metrics["claim.cascade_fixes_coarse_errors.effect"] == pytest.approx(fixes["effect"])
    assert parent.data.metrics["claim.cascade_fixes_coarse_errors.low"] == pytest.approx(fixes["interval"][0])
    cached = client(repo).search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`cascadelab.role` = 'cached'",
    )
    by_stage = {run.data.tags["cascadelab.stage"]: run for run in cached}
    written = {p.stem for p in (repo / "metrics").glob("*.json")} - {"report", "claims", "claims_seeds"}
    assert set(by_stage) == written
    coarse = stage_figures(repo, "coarse_sft")
    assert by_stage["coarse_sft"].data.metrics["em"] == pytest.approx(coarse["em"])
