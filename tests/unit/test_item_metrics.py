"""Per-item test data for the claims: correctness rows and response NLL that add up to the stage's perplexity."""

import math

import pytest
import torch

from cascadelab.config import CausalLMParams, TokenizerParams
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.eval.metrics import correct_items, response_nll_items, response_perplexity
from cascadelab.models.coarse import build_causal_lm

RECORDS = [
    {"id": f"add-{k}", "task": "add", "prompt": f"{k}+{k + 1}=", "response": str(2 * k + 1), "answer": str(2 * k + 1)}
    for k in range(7)
]


def test_response_nll_items_add_up_to_the_response_perplexity() -> None:
    tokenizer = train_tokenizer(["0123456789+="], TokenizerParams())
    torch.manual_seed(0)
    model = build_causal_lm(
        CausalLMParams(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32).to_config(tokenizer)
    )
    items = response_nll_items(model, tokenizer, RECORDS, batch_size=3)
    assert len(items) == len(RECORDS) and all(tokens > 0 for _, tokens in items)
    total_nll, total_tokens = sum(n for n, _ in items), sum(t for _, t in items)
    assert math.exp(total_nll / total_tokens) == pytest.approx(response_perplexity(model, tokenizer, RECORDS), rel=1e-5)


def test_correct_items_keep_record_order_and_ids() -> None:
    outputs = [r["answer"] if k % 2 == 0 else "x" for k, r in enumerate(RECORDS)]
    rows = correct_items(RECORDS, outputs, lambda task, output, answer: output == answer)
    assert [r["id"] for r in rows] == [r["id"] for r in RECORDS]
    assert [r["correct"] for r in rows] == [k % 2 == 0 for k in range(len(RECORDS))]
    with pytest.raises(ValueError, match=r"^7 records but 1 outputs$"):
        correct_items(RECORDS, ["x"], lambda task, output, answer: True)
