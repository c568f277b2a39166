"""`make claims`: which stages a seed run retrains, gathering the runs' files, and the claims decided over seeds."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from cascadelab.config import ClaimsParams
from cascadelab.io import write_json
from cascadelab.pipeline.paths import Paths
from cascadelab.pipeline.report import CLAIM_STAGES, build_seed_claims_table
from cascadelab.pipeline.seed_runs import (
    DEFAULT_SEEDS,
    SEEDS_README,
    gather,
    gathered,
    main,
    queue_commands,
    seeded_stages,
)
from cascadelab.report.claim_defs import SEED_CLAIMS
from cascadelab.report.claims import ClaimEntry
from cascadelab.report.results_page import seed_claims_markdown
from cascadelab.report.seed_claims import SeedClaimsTable, SeedRun, build_seed_claims, near_threshold, wall_estimate

HYBRID = next(spec for spec in SEED_CLAIMS if spec.name == "hybrid_matches_transformer")
CASCADE_STAGES = ("coarse_sft", "cascade_pairs", "limen", "refiner", "cascade_eval")


def test_a_seed_run_retrains_the_claims_stages_upstream_of_its_targets_but_not_prepare_lego_or_acoc() -> None:
    stages = seeded_stages()
    assert set(stages) == {*CASCADE_STAGES, "hybrid_rnn", "sigma_pretrain", "sigma_rl"}
    assert seeded_stages(("limen",)) == ("coarse_sft", "cascade_pairs", "limen")  # in pipeline order


def test_each_seed_is_its_own_queued_experiment() -> None:
    # several `-S training_seed=...` in one `dvc exp run --queue` would queue ONE experiment (the last value)
    commands = queue_commands([1, 2], ("hybrid_rnn",))
    assert commands == [
        ["dvc", "exp", "run", "--queue", "-n", "claims-seed-1", "-S", "training_seed=1", "hybrid_rnn"],
        ["dvc", "exp", "run", "--queue", "-n", "claims-seed-2", "-S", "training_seed=2", "hybrid_rnn"],
    ]


def _fake_experiments(seeds: dict[str, int]) -> dict[tuple[str, str], bytes]:
    """Each experiment commit's files: hybrid_rnn's figures and items, coarse_sft's figures only."""
    files = {}
    for rev, em in seeds.items():
        for stage, figures in (("hybrid_rnn", {"em": em}), ("coarse_sft", {"em": 50})):
            files[(f"metrics/{stage}.json", rev)] = json.dumps(figures).encode()
            files[(f"plots/{stage}/details.json", rev)] = b"{}"
            files[(f"plots/{stage}/timing.json", rev)] = json.dumps({"stage_seconds": 10.0}).encode()
        files[("plots/hybrid_rnn/items.jsonl", rev)] = b'{"id": "a", "correct": true}\n{"id": "b", "correct": false}\n'
    return files


def _reader(files: dict[tuple[str, str], bytes]):
    def read(path: str, rev: str) -> bytes:
        if (path, rev) not in files:
            raise FileNotFoundError(path)
        return files[(path, rev)]

    return read


def test_gathering_copies_each_experiments_files_in_the_project_layout_and_replaces_the_last(tmp_path: Path) -> None:
    root = tmp_path / "seeds"
    (root / "7").mkdir(parents=True)  # a seed of an earlier gathering: not pooled with these
    files = _fake_experiments({"r1": 40, "r2": 60})
    gather([1, 2], ["r1", "r2"], _reader(files), root, ("coarse_sft", "hybrid_rnn"), {"measured_seconds": 5.0})
    assert sorted(p.name for p in root.iterdir()) == ["1", "2", "runs.json"]
    assert json.loads((root / "2/metrics/hybrid_rnn.json").read_text()) == {"em": 60}
    assert not (root / "1/plots/coarse_sft/items.jsonl.gz").exists()  # the stage wrote none
    items = gzip.decompress((root / "1/plots/hybrid_rnn/items.jsonl.gz").read_bytes())
    assert items == files[("plots/hybrid_rnn/items.jsonl", "r1")]
    runs, info = gathered(root)
    assert [(r.training_seed, r.source) for r in runs] == [(1, "experiment claims-seed-1 (r1)"),
                                                          (2, "experiment claims-seed-2 (r2)")]  # fmt: skip
    assert runs[1].figures["hybrid_rnn"]["em"] == 60 and runs[1].items["coarse_sft"] is None
    assert runs[0].items["hybrid_rnn"] == [{"id": "a", "correct": True}, {"id": "b", "correct": False}]
    assert info["measured_seconds"] == 5.0


def test_gathering_an_experiment_without_a_stages_figures_fails_naming_the_file(tmp_path: Path) -> None:
    files = _fake_experiments({"r1": 40})
    del files[("plots/coarse_sft/timing.json", "r1")]
    expected = r"^seed_runs: plots/coarse_sft/timing.json missing in claims-seed-1 \(r1\)$"
    with pytest.raises(FileNotFoundError, match=expected):
        gather([1], ["r1"], _reader(files), tmp_path, ("coarse_sft", "hybrid_rnn"))


def test_before_any_gathering_there_are_no_seed_runs(tmp_path: Path) -> None:
    assert gathered(tmp_path) == ([], {})


def _hybrid_run(seed: int, hybrid_right: int, items: int = 50) -> SeedRun:
    """A run whose hybrid gets the first `hybrid_right` of `items` right and the coarse Llama the first half."""
    rows = {"hybrid_rnn": [{"id": f"i{k}", "correct": k < hybrid_right} for k in range(items)],
            "coarse_sft": [{"id": f"i{k}", "correct": k < items // 2} for k in range(items)]}  # fmt: skip
    figures = {"hybrid_rnn": {"em": 100.0 * hybrid_right / items}, "coarse_sft": {"em": 50.0}}
    return SeedRun(seed, f"run {seed}", figures, rows)


def test_a_claim_over_seeds_gives_each_seeds_effect_and_the_mean_with_a_pooled_interval_and_verdict() -> None:
    # effects -4, 0, +4 points: the mean is 0; the pooled interval holds the seed spread, so against the
    # threshold -2 (above) the claim is inconclusive although seed 2 alone (+4) clears it
    runs = [_hybrid_run(1234, 23), _hybrid_run(1, 25), _hybrid_run(2, 27)]
    params = ClaimsParams(resamples=500)
    table = build_seed_claims([HYBRID], runs, seeded_stages(), params, 1234)
    (entry,) = table.entries
    assert [run["effect"] for run in entry.per_seed] == pytest.approx([-4.0, 0.0, 4.0])
    assert [run["training_seed"] for run in entry.per_seed] == [1234, 1, 2]
    assert entry.effect == pytest.approx(0.0, abs=1e-12)
    assert entry.interval is not None and entry.interval[0] < -4.0 and entry.interval[1] > 4.0
    assert entry.verdict == "inconclusive" and entry.threshold == -2.0
    assert entry.interval_note.startswith("hierarchical bootstrap over 3 training seeds")
    assert table.as_dict()["runs"][1] == {"training_seed": 1, "source": "run 1"}
    assert table.headline()["claim_seeds.hybrid_matches_transformer.verdict"] == 0.0
    row = next(line for line in seed_claims_markdown(table).splitlines() if "`hybrid_matches_transformer`" in line)
    assert "| -4.0, +0.0, +4.0 | +0.0 [" in row and row.endswith("| > -2 | **inconclusive** | inconclusive |")


def test_a_seed_without_per_item_rows_leaves_the_pooled_interval_unavailable_and_inconclusive() -> None:
    missing = SeedRun(2, "run 2", _hybrid_run(2, 27).figures, {"hybrid_rnn": None, "coarse_sft": None})
    table = build_seed_claims([HYBRID], [_hybrid_run(1234, 40), missing], seeded_stages(), ClaimsParams(), 1)
    (entry,) = table.entries
    assert (entry.interval, entry.verdict) == (None, "inconclusive")
    assert entry.interval_note == (
        "not available (training seed 2: plots/hybrid_rnn/items.jsonl not written: rerun `dvc repro hybrid_rnn`)"
    )


def test_claims_whose_stages_stay_at_one_seed_are_listed_with_why() -> None:
    table = build_seed_claims(SEED_CLAIMS, [_hybrid_run(1234, 25)], seeded_stages(), ClaimsParams(), 1)
    reasons = {row["name"]: row["reason"] for row in table.left_out}
    assert reasons["lego_exits_early_at_little_loss"].startswith("lego_phase2 not rerun at other training seeds")
    # acoc decides its claim over its own paired seeds (acoc.seeds), not over training seeds
    assert reasons["growth_matches_static"].startswith("acoc not rerun at other training seeds")
    assert "hybrid_matches_transformer" not in reasons


def test_the_wall_estimate_is_the_retrained_stages_times_per_extra_seed_and_says_it_is_one() -> None:
    wall = wall_estimate({"coarse_sft": 100.0, "hybrid_rnn": 50.0, "lego_phase1": 999.0}, seeded_stages(), 2)
    assert (wall["seconds_per_seed"], wall["seconds"]) == (150.0, 300.0)
    assert "sigma_rl" in wall["missing_stage_times"] and wall["how"].startswith("estimate")
    table = SeedClaimsTable([{"training_seed": 1234, "source": "the default run"}], [], [], 0.95, wall)
    text = seed_claims_markdown(table)
    assert text.startswith("No seed runs gathered yet (training seed 1234 only): `make claims`")
    assert "about **5 min** for 2 extra training seeds, an estimate until a measured run replaces it" in text


def test_the_makefile_runs_the_default_seeds_and_the_seeds_folder_says_what_it_holds() -> None:
    makefile = Path("Makefile").read_text(encoding="utf-8")
    match = re.search(r"^SEEDS \?= (.*)$", makefile, re.MULTILINE)
    assert match is not None and tuple(int(s) for s in match.group(1).split()) == DEFAULT_SEEDS
    assert "seed_runs queue $(SEEDS)" in makefile and "seed_runs gather $(SEEDS)" in makefile
    assert Path("metrics/seeds/README.md").read_text(encoding="utf-8") == SEEDS_README


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["queue", "1", "--targets", "nope"], "error: seed_runs: unknown stage 'nope' (stages: prepare, coarse_sft,"),
        (["gather", "1", "1"], "error: seed_runs: a seed is listed twice (1 1)"),
    ],
)
def test_bad_arguments_are_one_line(argv, message, capsys) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(message)


def _entry(name: str, effect: float, low: float, high: float, threshold: float) -> ClaimEntry:
    return ClaimEntry(name, name, "s", "b", "m", None, None, effect, [low, high], "", threshold, "above", "x")


def test_the_claims_near_their_threshold_at_one_seed_are_listed_with_whether_seeds_rerun_them() -> None:
    entries = [
        _entry("hybrid_matches_transformer", -1.4, -2.3, -0.5, -2.0),  # 0.6 from it, half-width 0.9: near
        _entry("lego_exits_early_at_little_loss", 0.90, 0.85, 0.95, 1.02),  # 0.12 from it, half-width 0.05: far
        _entry("cascade_fixes_coarse_errors", 3.6, 2.7, 4.5, 5.0),  # 1.4 from it, half-width 0.9: near
        _entry("sigma_beats_llama", 1.2, 1.1, 1.3, 1.0),  # 0.2 from it, half-width 0.1: exactly twice, near
    ]
    near = near_threshold(entries, ("hybrid_rnn", "coarse_sft"), SEED_CLAIMS)
    assert [(n["name"], n["over_seeds"]) for n in near] == [
        ("hybrid_matches_transformer", True), ("cascade_fixes_coarse_errors", False), ("sigma_beats_llama", False)
    ]  # fmt: skip
    table = SeedClaimsTable([{"training_seed": 1234, "source": "the default run"}], [], [], 0.95, near=near)
    assert "`cascade_fixes_coarse_errors` (**not rerun by `make claims`**)" in seed_claims_markdown(table)


def _write_project(paths: Paths, hybrid_right: int) -> None:
    """Every claim stage's three figure files (empty but hybrid_rnn's and coarse_sft's EM) and their items."""
    for stage in {*CLAIM_STAGES, *seeded_stages()}:
        for path in paths.figures_of(stage):
            write_json(path, {})
    write_json(paths.metrics_of("hybrid_rnn"), {"em": 100.0 * hybrid_right / 40})
    write_json(paths.metrics_of("coarse_sft"), {"em": 50.0})
    write_json(paths.timing_of("hybrid_rnn"), {"stage_seconds": 30.0})
    for stage, right in (("hybrid_rnn", hybrid_right), ("coarse_sft", 20)):
        rows = [json.dumps({"id": f"i{k}", "correct": k < right}) + "\n" for k in range(40)]
        (paths.plots_of(stage) / "items.jsonl").write_text("".join(rows))


def test_the_report_decides_claims_over_the_default_run_and_the_gathered_seeds(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path / "project")
    _write_project(paths, 30)
    assert build_seed_claims_table(ClaimsParams(), 1234, paths).entries == []  # nothing gathered yet
    for seed, right in ((1, 32), (2, 34)):  # what each experiment's commit holds
        _write_project(Paths.under(tmp_path / f"rev{seed}"), right)

    def read(path: str, rev: str) -> bytes:
        source = tmp_path / rev / path
        if not source.is_file():
            raise FileNotFoundError(path)
        return source.read_bytes()

    gather([1, 2], ["rev1", "rev2"], read, paths.seeds, run_info={"measured_seconds": 600.0})
    table = build_seed_claims_table(ClaimsParams(resamples=200), 1234, paths, {}, {"hybrid_rnn": 30.0})
    hybrid = next(e for e in table.entries if e.name == "hybrid_matches_transformer")
    assert [(r["training_seed"], r["effect"]) for r in hybrid.per_seed] == [(1234, 25.0), (1, 30.0), (2, 35.0)]
    assert hybrid.effect == pytest.approx(30.0) and hybrid.verdict == "holds"
    assert [r["source"] for r in table.runs] == ["the default run", "experiment claims-seed-1 (rev1)",
                                                 "experiment claims-seed-2 (rev2)"]  # fmt: skip
    assert table.wall["measured_seconds"] == 600.0 and table.wall["seconds_per_seed"] == 30.0
    assert "**10 min** measured for 2 extra training seeds" in seed_claims_markdown(table)
