"""A tiny `sigma_rl`: the held-out reward rises on easy verifiable tasks (1-digit sums + level-1 code)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cascadelab.config import PrepareParams, parse_params
from cascadelab.data.tokenizer import load_tokenizer
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM
from cascadelab.pipeline import sigma_rl
from cascadelab.pipeline.paths import PATHS
from cascadelab.pipeline.prepare import prepare

TINY_RL = {
    "optimizer": {"learning_rate": 3.0e-3},
    "train": {
        "max_steps": 100,
        "batch_size": 16,
        "logging_steps": 10,
        "eval_steps": 50,
        "eval_records": 32,
        "num_threads": 1,
        "checkpoint_steps": 0,
    },
    "mix": {"add": 0.5, "code": 0.5},
    "grpo": {"prompts_per_step": 2, "num_generations": 4, "max_completion_length": 8},
    "auto_mix": {"initial_share": 0.2},
    "eval": {"heldout_math": 16, "heldout_code": 8, "batch_size": 64, "max_new_tokens": 8, "sample_predictions": 2},
}


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rl")
    params = PrepareParams.model_validate(
        {
            "families": {"reverse": {"difficulties": [1]}, "add": {"difficulties": [1]}, "mul": {"difficulties": [1]}},
            "sizes": {"train": 300, "val": 16, "test": 16},
            "code": {"levels": [1], "sizes": {"train": 200, "val": 8, "test": 8}},
        }
    )
    prepare(params, 3, root / "corpus", root / "tokenizer", root / "code")
    tokenizer = load_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    config = SigmaConfig.from_preset(
        "tiny",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    SigmaForCausalLM(config).save_pretrained(str(root / "sigma"))
    return root


def test_held_out_reward_rises_and_every_rl_counter_is_logged(project: Path) -> None:
    section = parse_params({"sigma_rl": TINY_RL}).sigma_rl
    out = project / "runs"
    paths = replace(
        PATHS,
        corpus=project / "corpus",
        tokenizer=project / "tokenizer",
        code_tasks=project / "code",
        sigma=project / "sigma",
        sigma_rl=project / "sigma_rl",
        sigma_rl_run=out,
    )
    outcome = sigma_rl.run(section, 3, paths)
    m = outcome.metrics
    assert m["end_heldout_reward"] > m["start_heldout_reward"]
    first, _ = outcome.decisions  # one meta-loop decision per window (its reference: the start)
    assert m["lm_steps"] == 100 and m["rl_steps"] == 10 + round(50 * first["share_after"])  # share 0.2, then moved
    assert [row["step"] for row in outcome.curve] == [0.0, 50.0, 100.0]
    assert all(d["reason"].startswith("meta-loop: step ") for d in outcome.decisions)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    rl = ("grpo", "verifier", "verifier_cascade", "asym_verify", "causal_replay", "auto_mix", "code_rl")
    for name in (*rl, "meta_loop", "research_log", "self_improver", "draft_heads"):
        assert last[f"feature_{name}_enabled"] == 1 and last[f"feature_{name}_effective_calls"] > 0, name
    assert last["feature_gspo_enabled"] == 0 and last["feature_gspo_effective_calls"] == 0
    assert (project / "sigma_rl" / "config.json").is_file()
    assert len((out / "research_log.jsonl").read_text().splitlines()) == 2  # one cycle per window
    assert m["draft_identical"] is True and 0 <= m["draft_acceptance_rate"] <= 1
