import json

import pytest

from cascadelab.config import PrepareParams, UserDatasetParams
from cascadelab.data.corpus import (
    SPLITS,
    CorpusVerifier,
    build_splits,
    corpus_meta,
    load_split,
    normalise_prompt,
    write_corpus,
)
from cascadelab.data.held_out import final_evaluation
from cascadelab.data.user_dataset import RegexVerifier, user_records


def small_params(**overrides):
    raw = {
        "families": {"add": {"difficulties": [1, 2]}, "mul": {"difficulties": [1]}, "word": {"difficulties": [1]}},
        "sizes": {"train": 60, "val": 10, "test": 15},
    }
    raw.update(overrides)
    return PrepareParams.model_validate(raw)


def test_splits_are_disjoint_on_normalised_prompt():
    splits = build_splits(small_params(), seed=7)
    keys = {split: {normalise_prompt(r["prompt"]) for r in splits[split]} for split in SPLITS}
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


def test_sizes_per_cell_and_small_cell_keeps_eval():
    splits = build_splits(small_params(), seed=7)
    add1_train = [r for r in splits["train"] if r["task"] == "add" and r["difficulty"] == 1]
    add1_test = [r for r in splits["test"] if r["task"] == "add" and r["difficulty"] == 1]
    assert len(add1_test) == 15 and len(add1_train) == 60
    assert len([r for r in splits["test"] if r["task"] == "word"]) == 15


def test_cell_smaller_than_request_is_capped():
    params = small_params(families={"add": {"difficulties": [1]}}, sizes={"train": 1000, "val": 100, "test": 100})
    splits = build_splits(params, seed=0)
    total = sum(len(splits[s]) for s in SPLITS)
    assert total == 100  # only 100 distinct 1-digit additions exist
    assert len(splits["test"]) == 15 and len(splits["val"]) == 15


def test_same_seed_gives_identical_bytes(tmp_path):
    params = small_params()
    for name in ("a", "b"):
        splits = build_splits(params, seed=3)
        write_corpus(splits, corpus_meta(params, splits), tmp_path / name)
    for split in SPLITS:
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    other = build_splits(params, seed=4)
    assert [r["prompt"] for r in other["train"]] != [r["prompt"] for r in build_splits(params, seed=3)["train"]]


def test_written_corpus_round_trips_and_verifies(tmp_path):
    params = small_params()
    splits = build_splits(params, seed=1)
    write_corpus(splits, corpus_meta(params, splits), tmp_path)
    with final_evaluation("test_corpus"):
        loaded = load_split(tmp_path, "test")
    assert loaded == splits["test"]
    verifier = CorpusVerifier(json.loads((tmp_path / "meta.json").read_text()))
    assert all(verifier.verify(r["task"], r["response"], r["answer"]) for r in loaded)
    assert all(verifier.verify(r["task"], r["steps"], r["answer"]) for r in loaded)


def test_missing_split_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the prepare stage"):
        load_split(tmp_path, "train")


def write_gsm8k_style(path, n=30):
    rows = [
        {
            "question": f"Sam has {i} cats and {i + 3} dogs. How many pets?",
            "answer": f"{i} + {i + 3} = {2 * i + 3}\n#### {2 * i + 3}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_user_jsonl_goes_through_the_same_verifier(tmp_path):
    path = tmp_path / "qa.jsonl"
    write_gsm8k_style(path)
    params = small_params(families={"add": {"difficulties": [1]}}, user_dataset={"path": str(path)})
    splits = build_splits(params, seed=0)
    user = [r for s in SPLITS for r in splits[s] if r["task"] == "user"]
    assert len(user) == 30
    assert {r["answer"] for r in user} == {str(2 * i + 3) for i in range(30)}
    verifier = CorpusVerifier(corpus_meta(params, splits))
    record = user[0]
    assert verifier.verify("user", f"so the answer is\n#### {record['answer']}", record["answer"])
    assert not verifier.verify("user", "#### 99999", record["answer"])
    assert not verifier.verify("user", "no answer here", record["answer"])


def user_error(path, text):
    """The one-line error `user_records` gives for a file holding `text`, with the temp folder cut off."""
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        user_records(UserDatasetParams(path=str(path)), seed=0)
    return str(caught.value).replace(f"{path.parent}/", "")


GOOD = '{"question": "q", "answer": "#### 1"}\n'


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (GOOD + "\n" + '{"q": "x"}\n', 'data.jsonl:3: missing field "question"'),
        (GOOD + '{"question": "q2"}\n', 'data.jsonl:2: missing field "answer"'),
        ("null\n", 'data.jsonl:1: expected a JSON object with fields "question" and "answer", got null'),
        (GOOD + "[1, 2]\n", 'data.jsonl:2: expected a JSON object with fields "question" and "answer", got a list'),
        ("\n\n" + '{"question": "q", "answer": ', "data.jsonl:3: not valid JSON (Expecting value at column 29)"),
        ('{"question": "q", "answer": 42}\n', 'data.jsonl:1: field "answer" must be a string, got the number 42'),
        (
            '{"question": true, "answer": "#### 1"}\n',
            'data.jsonl:1: field "question" must be a string, got the boolean true',
        ),
        (
            GOOD + '{"question": "q2", "answer": "no marker"}\n',
            r'data.jsonl:2: prepare.user_dataset.answer_pattern "####\s*(-?[\d,\.]+)" finds no answer '
            'in field "answer"',
        ),
    ],
)
def test_a_bad_user_row_is_one_line_naming_file_and_line(tmp_path, text, error):
    assert user_error(tmp_path / "data.jsonl", text) == error


def test_a_missing_user_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="path: file not found"):
        user_records(UserDatasetParams(path=str(tmp_path / "missing.jsonl")), seed=0)


def test_regex_verifier_normalises_commas():
    verifier = RegexVerifier(r"####\s*(-?[\d,\.]+)")
    assert verifier.extract("#### 1,234") == "1234"
    assert verifier.extract("#### 18.0") == "18"
    with pytest.raises(ValueError, match="exactly one capture group"):
        RegexVerifier(r"####\s*-?\d+")
