"""End to end: a GSM8K-format file with non-ASCII characters (some only in val/test) through prepare ->
coarse_sft -> cascade_pairs under `dvc repro`, tiny params plus the one line that names the file."""

import json

import pytest
import yaml
from e2e_project import TINY_CASCADE, TINY_COARSE, TINY_PREPARE, dvc, make_project, stage_figures
from tests.fixtures.gsm8k_like import write_gsm8k_like

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    overrides = {
        "prepare": {**TINY_PREPARE, "user_dataset": {"path": "my_gsm8k.jsonl"}},
        "coarse_sft": TINY_COARSE,
        "cascade_pairs": TINY_CASCADE["cascade_pairs"],
    }
    repo, env = make_project(tmp_path_factory.mktemp("project"), overrides)
    write_gsm8k_like(repo / "my_gsm8k.jsonl", rows=60, seed=0)
    return repo, env


@pytest.fixture(scope="module")
def repro(project):
    return dvc(project, "repro", "cascade_pairs")


def test_the_user_file_is_prepared_trained_and_evaluated_with_its_extraction_rate(project, repro):
    repo, _ = project
    families = yaml.safe_load((repo / "params.yaml").read_text())["prepare"]["families"]
    assert stage_figures(repo, "prepare")["tasks"] == len(families) + 1  # the generated families and user
    coarse = stage_figures(repo, "coarse_sft")
    assert 0.0 <= coarse["em_user"] <= 100.0
    assert 0.0 <= coarse["user_answer_extraction_rate"] <= 100.0
    config = json.loads((repo / "models" / "coarse" / "config.json").read_text())
    assert config["max_position_embeddings"] > 256  # grown to the worked solutions
    assert "coarse_sft: model.max_position_embeddings 256 -> " in repro


def test_the_cascade_says_in_one_line_that_it_skips_the_user_task(project, repro):
    repo, _ = project
    assert repro.count("cascade: skips task user: ") == 1
    pairs = (repo / "data" / "cascade_pairs" / "train.jsonl").read_text().splitlines()
    assert pairs and all(json.loads(line)["task"] != "user" for line in pairs)
