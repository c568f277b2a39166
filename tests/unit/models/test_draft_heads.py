"""Draft heads: speculative greedy decoding equals plain greedy; trained heads get drafts accepted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from tests.unit.models.draft_helpers import prompts, tiny_llama

from cascadelab.models.draft_heads import (
    DraftHeads,
    measure_speculative,
    plain_greedy,
    speculative_greedy,
)
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("max_new", [1, 2, 7, 20])
def test_untrained_heads_still_give_plain_greedy(max_new: int) -> None:
    model = tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=3)
    for prompt in prompts(4, seed=2):
        assert speculative_greedy(model, heads, prompt, max_new) == plain_greedy(model, prompt, max_new)


def test_plain_greedy_matches_generate() -> None:
    model = tiny_llama()
    prompt = [3, 14, 15, 9]
    generated = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert generated[0, len(prompt) :].tolist() == plain_greedy(model, prompt, 12)


def test_measure_speculative_reports_identical_output_and_rates() -> None:
    model = tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=2)
    report = measure_speculative(model, heads, prompts(3, seed=4), max_new_tokens=10)
    assert report["identical"] is True and report["mismatches"] == 0
    assert report["tokens"] == 30 and report["prompts"] == 3
    assert report["tokens_per_forward"] == pytest.approx(30 / report["forwards"])
    assert 0.0 <= report["acceptance_rate"] <= 1.0
    assert report["speedup"] == pytest.approx(report["plain_s"] / report["speculative_s"])


def test_eos_stops_both_decoders_at_the_same_token() -> None:
    model = tiny_llama()
    heads = DraftHeads.for_model(model, num_heads=2)
    prompt = [5, 6, 7]
    reference = plain_greedy(model, prompt, 16)
    eos = reference[3]
    expected = plain_greedy(model, prompt, 16, eos_id=eos)
    assert expected[-1] == eos and len(expected) <= 4
    assert speculative_greedy(model, heads, prompt, 16, eos_id=eos) == expected


def test_works_on_the_tiny_sigma_model() -> None:
    torch.manual_seed(0)
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny")).eval()
    heads = DraftHeads.for_model(model, num_heads=2)
    prompt = [1, 2, 3, 4]
    assert speculative_greedy(model, heads, prompt, 10) == plain_greedy(model, prompt, 10)


def test_heads_need_a_positive_count() -> None:
    with pytest.raises(ValueError, match="num_heads: must be > 0"):
        DraftHeads(8, 8, 0)
