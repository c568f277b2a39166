import random
from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from cascadelab.config import HybridRNNTrainParams
from cascadelab.data.curriculum import SWITCH_LAG, LoopCurriculum
from cascadelab.data.seq2seq import encode_pairs
from cascadelab.models.hybrid_rnn import HybridRNNConfig, HybridRNNTransformer
from cascadelab.training.hybrid_rnn_trainer import (
    train_hybrid_rnn,
    validation_loss,
)
from cascadelab.training.schedules import wsd_schedule

CHARS = "0123456789+="


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def char_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + list(CHARS))}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


def add_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        pairs.append((f"{a}+{b}=", str(a + b)))
    return pairs


def tiny_model() -> HybridRNNTransformer:
    torch.manual_seed(0)
    return HybridRNNTransformer(HybridRNNConfig.from_preset("tiny", vocab_size=4 + len(CHARS)))


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        HybridRNNTrainParams(lr=1e-3)
    with pytest.raises(ValidationError, match="greater than 0"):
        HybridRNNTrainParams(learning_rate=0)
    assert HybridRNNTrainParams().checkpoint_steps == 0  # the trainer takes the section as it is: no checkpoints


def test_lr_schedule_warms_up_holds_then_decays_to_zero() -> None:
    s = HybridRNNTrainParams(max_steps=100, warmup_steps=10, decay_fraction=0.2)
    factor = wsd_schedule(s.max_steps, s.warmup_steps, s.decay_fraction)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(50) == 1.0
    assert factor(80) == pytest.approx(1.0)
    assert factor(90) == pytest.approx(0.5)
    assert factor(99) == pytest.approx(0.05)


def test_training_is_deterministic_and_leaves_caller_rng_alone() -> None:
    tokenizer = char_tokenizer()
    settings = HybridRNNTrainParams(learning_rate=3e-3, batch_size=8, max_steps=12, eval_steps=6, warmup_steps=2)
    torch.manual_seed(123)
    expected_next_draw = torch.rand(1)
    results, states = [], []
    for _ in range(2):
        model = tiny_model()
        torch.manual_seed(123)
        results.append(train_hybrid_rnn(model, add_pairs(64, 0), add_pairs(16, 1), tokenizer, settings, seed=5))
        torch.testing.assert_close(torch.rand(1), expected_next_draw)  # the caller's RNG state is restored
        states.append(model.state_dict())
    assert [h["val_loss"] for h in results[0].history] == [h["val_loss"] for h in results[1].history]
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], atol=0, rtol=0)


def test_loss_falls_and_logs_each_evaluation() -> None:
    tokenizer = char_tokenizer()
    model = tiny_model()
    logged: list[tuple[dict[str, float], int]] = []
    settings = HybridRNNTrainParams(learning_rate=3e-3, batch_size=32, max_steps=120, eval_steps=40, warmup_steps=10)
    train, val = add_pairs(1000, 0), add_pairs(64, 1)
    result = train_hybrid_rnn(model, train, val, tokenizer, settings, log_fn=lambda m, s: logged.append((m, s)))
    assert [s for _, s in logged] == [40, 80, 120]
    assert set(logged[0][0]) == {"train_loss", "val_loss", "lr", "tokens_per_s"}
    assert [row["step"] for row in result.train_history] == [50.0, 100.0]  # every logging_steps (50) steps
    assert result.train_history[-1]["loss"] < result.train_history[0]["loss"]
    assert result.curriculum_switch_step is None and result.train_tokens > 0
    assert result.history[-1]["val_loss"] < 0.7 * result.history[0]["val_loss"]
    assert result.steps == 120 and not result.stopped_early and result.tokens_per_s > 0


def test_early_stopping_restores_best_weights() -> None:
    tokenizer = char_tokenizer()
    model = tiny_model()
    val = add_pairs(32, 1)
    # A huge learning rate makes validation loss worse after the first evaluation.
    settings = HybridRNNTrainParams(
        learning_rate=3.0,
        batch_size=8,
        max_steps=200,
        eval_steps=2,
        warmup_steps=0,
        patience=2,
        max_grad_norm=100.0,
        eval_batch_size=128,
    )
    result = train_hybrid_rnn(model, add_pairs(64, 0), val, tokenizer, settings)
    assert result.stopped_early and result.steps < 200
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    restored = validation_loss(model, encode_pairs(tokenizer, val), batch_size=128)
    assert restored == pytest.approx(result.best_val_loss, rel=1e-6)


def test_curriculum_warmup_never_stops_early_and_best_weights_come_from_the_mix() -> None:
    tokenizer = char_tokenizer()
    train = add_pairs(64, 0) + [(f"{a}{a}=", f"{a}") for a in range(10)] * 4
    tasks = ["add"] * 64 + ["copy"] * 40
    # The huge rate of test_early_stopping_restores_best_weights: val loss worsens from the first evaluation.
    settings = HybridRNNTrainParams(
        learning_rate=3.0,
        batch_size=8,
        max_steps=60,
        eval_steps=2,
        logging_steps=4,
        warmup_steps=0,
        patience=2,
        max_grad_norm=100.0,
        eval_batch_size=128,
    )
    curriculum = LoopCurriculum(
        tasks,
        {"add": 1, "copy": 1},
        ["copy"],
        switch_loss=1e-9,
        max_warmup_steps=20,
        max_steps=60,
        batch_size=8,
        seed=0,
    )
    result = train_hybrid_rnn(tiny_model(), train, add_pairs(16, 1), tokenizer, settings, curriculum=curriculum)
    assert result.curriculum_switch_step == 20
    first_mix_step = 20 + SWITCH_LAG + 1
    assert result.steps >= first_mix_step and result.stopped_early
    assert result.best_step >= first_mix_step
    assert [row["step"] for row in result.train_history] == [float(s) for s in range(4, result.steps + 1, 4)]


def test_bad_inputs_are_rejected() -> None:
    tokenizer = char_tokenizer()
    settings = HybridRNNTrainParams(max_steps=1, warmup_steps=0)
    with pytest.raises(ValueError, match=r"^val_examples is empty: early stopping needs a validation set$"):
        train_hybrid_rnn(tiny_model(), add_pairs(4, 0), [], tokenizer, settings)
    small = HybridRNNTransformer(HybridRNNConfig.from_preset("tiny", vocab_size=8))
    with pytest.raises(ValueError, match=r"^tokenizer has 16 tokens but model vocab_size is 8$"):
        train_hybrid_rnn(small, add_pairs(4, 0), add_pairs(4, 1), tokenizer, settings)
    curriculum = LoopCurriculum(["add"] * 3, {"add": 1}, [], 0.1, 1, 1, settings.batch_size, 0)
    with pytest.raises(ValueError, match=r"^curriculum covers 3 rows but train_examples has 4$"):
        train_hybrid_rnn(tiny_model(), add_pairs(4, 0), add_pairs(4, 1), tokenizer, settings, curriculum=curriculum)
