import json
import random

import pytest

from cascadelab.config import ACOCParams, TokenizerParams
from cascadelab.data.task_streams import build_task_batches
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.pipeline.acoc import check_tasks
from cascadelab.pipeline.acoc_outputs import (
    cycle_series,
    event_records,
    history_dataset,
    history_records,
    plot_tables,
    stage_metrics,
)
from cascadelab.training.acoc_trainer import run_acoc


def _lookup_records(task: str, seed: int) -> list[dict]:
    """64 two-letter keys mapped to random two-letter values."""
    rng = random.Random(seed)
    records = []
    for key in (a + b for a in "abcdefgh" for b in "abcdefgh"):
        value = rng.choice("abcdefgh") + rng.choice("abcdefgh")
        records.append({"task": task, "difficulty": 1, "prompt": f"{key}=", "response": value, "answer": value})
    return records


def _verify(task: str, output: str, answer: str) -> bool:
    return output.strip() == answer


@pytest.fixture(scope="module")
def result():
    records = _lookup_records("map", 0) + _lookup_records("alt", 1)
    tokenizer = train_tokenizer([r["prompt"] + r["response"] for r in records], TokenizerParams(kind="char"))
    train = build_task_batches(records, tokenizer, ["map", "alt"], batch_size=16)
    val = build_task_batches(records, tokenizer, ["map", "alt"], batch_size=64)
    settings = ACOCParams(
        tasks={"map": 0, "alt": 1},
        cycles=3,
        steps_per_cycle=20,
        learning_rate=3e-3,
        lr_warmup_steps=5,
        num_threads=1,
        val_items_per_task=64,
        test_items_per_task=8,
        max_new_tokens=3,
        model={"hidden_size": 16, "num_layers": 1, "num_heads": 2, "initial_experts": 1, "expert_width": 4},
        warmup={"steps": 5},
        vote={"variants": 2},
        saturation={"batches": 1},
    )
    return run_acoc(settings, train, val, records, tokenizer, _verify, seed=0)


def test_metrics_hold_every_model_and_the_bars(result):
    metrics = stage_metrics(result)
    assert set(metrics) == {"acoc", "static_initial", "static_final", "bars"}
    assert metrics["acoc"]["em_map"] == result.metrics["em_map"]
    assert metrics["bars"]["max_expansion_jump_pct"] == pytest.approx(100 * result.metrics["max_expansion_jump"])
    json.dumps(metrics)  # the metrics file is plain JSON


def test_plot_tables_have_one_row_per_cycle_and_one_column_per_model(result):
    tables = plot_tables(result)
    assert [row["cycle"] for row in tables["loss"]] == [0, 1, 2]
    assert tables["params"][-1]["acoc"] == result.metrics["params"] == tables["params"][-1]["static_final"]
    assert tables["params"][0]["static_initial"] == result.metrics["params_initial"]
    splits = [e for e in result.events if e["type"] == "split"]  # `alt` arrives at cycle 1 with its own expert
    assert sum(row["split"] for row in tables["experts"]) == len(splits) >= 1
    assert tables["experts"][-1]["experts"] == sum(result.model.config.experts_per_layer)


def test_cycle_series_log_baselines_and_changes_at_the_cycle_step(result):
    series = cycle_series(result)
    assert [cycle for _, cycle in series] == [0, 1, 2]
    first, _ = series[0]
    assert {"acoc/cycle/parameter_steps", "acoc/cycle/splits", "static_final/cycle/val_loss"} <= set(first)
    assert "static_initial/cycle/val_acc_alt" not in first and "static_initial/cycle/val_acc_alt" in series[1][0]


def test_history_dataset_has_one_schema_per_split(result):
    records = history_records(result.history, ["map", "alt"])
    assert records[0]["val_acc_alt"] is None and records[1]["val_acc_alt"] is not None
    assert json.loads(records[0]["vote_json"]) == result.history[0]["vote"]
    events = event_records(result.events)
    assert [e["type"] for e in events] == [e["type"] for e in result.events]
    dataset = history_dataset(result)
    assert set(dataset) == {"acoc", "static_initial", "static_final", "events"}
    assert dataset["acoc"]["cycle"] == [0, 1, 2] and len(dataset["events"]) == len(result.events)


def test_task_keys_must_match_corpus_cells():
    counts = {split: {"add2": 5, "mul1": 3, "mul2": 0} for split in ("train", "val", "test")}
    check_tasks(["add", "mul1", "mul"], counts)
    with pytest.raises(ValueError, match=r"^params.yaml: acoc.tasks.word: no train records in data/corpus"):
        check_tasks(["add", "word"], counts)
    with pytest.raises(ValueError, match=r"^params.yaml: acoc.tasks.mul2: no train records"):
        check_tasks(["mul2"], counts)


def test_the_baselines_folder_says_how_to_load_its_models():
    from cascadelab.pipeline.acoc import baselines_readme

    text = baselines_readme(["static_final", "static_initial"])
    assert "`static_final/`, `static_initial/`" in text and "trust_remote_code=True" in text
    assert "no static baselines were trained" in baselines_readme([])
