"""Tiny tokenizer, model and verifier shared by the cascade unit tests."""

import random

import pytest
import torch

from cascadelab.config import CausalLMParams, TokenizerParams
from cascadelab.data.corpus import CorpusVerifier
from cascadelab.data.tasks import FAMILIES, get_family
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.models.coarse import build_causal_lm


@pytest.fixture(scope="session")
def tokenizer():
    rng = random.Random(0)
    texts = []
    for name in FAMILIES:
        family = get_family(name)
        for level in family.levels:
            for _ in range(30):
                item = family.sample(rng, level)
                texts += [item.prompt, item.response, item.steps]
    texts.append("0123456789abcdefghijklmnopqrstuvwxyz+-*=:,? ")
    return train_tokenizer(texts, TokenizerParams())


@pytest.fixture(scope="session")
def verifier():
    return CorpusVerifier({"answer_format": "reversed"})


def make_model(tokenizer, seed=0, hidden=32, layers=1):
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_causal_lm(
            CausalLMParams(hidden_size=hidden, num_layers=layers, num_heads=2, intermediate_size=2 * hidden).to_config(
                tokenizer
            )
        )
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_model(tokenizer)


@pytest.fixture(scope="session")
def model_factory(tokenizer):
    return lambda seed=0, hidden=32, layers=1: make_model(tokenizer, seed, hidden, layers)


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
