"""A tiny real SFT run on CPU: loss falls, accuracy beats chance, save/load keeps the logits."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from cascadelab.config import CausalLMParams, CurriculumParams, SFTTrainParams, TokenizerParams
from cascadelab.data.corpus import CorpusVerifier
from cascadelab.data.tasks import get_family
from cascadelab.data.tokenizer import train_tokenizer
from cascadelab.eval.generation import generate_batched
from cascadelab.eval.metrics import exact_match_report
from cascadelab.models.coarse import build_causal_lm
from cascadelab.training.sft import train_sft


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    family = get_family("add")
    rng = random.Random(0)
    items = {family.sample(rng, 1).prompt: None for _ in range(3000)}
    records = []
    for prompt in items:
        a, b = (int(x) for x in prompt.rstrip("=").split("+"))
        response = family._number(a + b, 2)
        records.append({"task": "add", "difficulty": 1, "prompt": prompt, "response": response, "answer": str(a + b)})
    tokenizer = train_tokenizer([r["prompt"] + r["response"] for r in records], TokenizerParams())
    torch.manual_seed(0)
    model = build_causal_lm(
        CausalLMParams(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256).to_config(tokenizer)
    )
    train = SFTTrainParams(
        max_steps=600, batch_size=16, learning_rate=3e-3, warmup_steps=20, logging_steps=50, num_threads=1
    )
    model, result = train_sft(
        model,
        tokenizer,
        records,
        train,
        CurriculumParams(warmup_tasks=[]),
        {"add": 1.0},
        seed=0,
        output_dir=tmp_path_factory.mktemp("sft"),
        report_to=(),
    )
    return model, tokenizer, records, result


def test_loss_falls(trained):
    _, _, _, result = trained
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.train_tokens > 0 and result.tokens_per_second > 0


def test_accuracy_beats_chance(trained):
    model, tokenizer, records, _ = trained
    outputs = [o[0] for o in generate_batched(model, tokenizer, [r["prompt"] for r in records], 6, 128)]
    verifier = CorpusVerifier({"answer_format": "reversed"})
    em = exact_match_report(records, outputs, verifier.verify)["em"]
    assert em > 3 * 100 / 19  # chance: one of 19 possible sums


def test_save_load_round_trip_gives_identical_logits(trained, tmp_path):
    model, tokenizer, _, _ = trained
    model = model.cpu()  # trained on CUDA when a GPU is present
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    batch = tokenizer(["3+4=", "9+9="], return_tensors="pt", padding=True, add_special_tokens=False)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert (tmp_path / "model.safetensors").is_file()


class _Kill(TrainerCallback):
    """Simulates a killed stage right after a given step."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed")


def _resume_case(tmp_path):
    """A tiny curriculum run: `fit(folder, callbacks)` trains it (30 steps, checkpoints every 10) in `folder`."""
    torch.set_num_threads(1)
    records = [
        {
            "task": t,
            "difficulty": 1,
            "prompt": f"{a}{'+' if t == 'add' else '-'}{b}=",
            "response": str(a + b),
            "answer": str(a + b),
        }
        for t in ("add", "sub")
        for a in range(10)
        for b in range(10)
    ]
    tokenizer = train_tokenizer([r["prompt"] + r["response"] + "-" for r in records], TokenizerParams())
    train = SFTTrainParams(max_steps=30, batch_size=8, warmup_steps=2, logging_steps=5, save_steps=10, num_threads=1)
    curriculum = CurriculumParams(warmup_tasks=["add"], switch_loss=1e-9, max_warmup_fraction=0.5)

    def fit(folder, callbacks=()):
        torch.manual_seed(0)
        model = build_causal_lm(
            CausalLMParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64).to_config(tokenizer)
        )
        return train_sft(
            model,
            tokenizer,
            records,
            train,
            curriculum,
            {"add": 1.0, "sub": 1.0},
            0,
            folder,
            report_to=(),
            callbacks=callbacks,
        )

    return fit


def _assert_same_run(straight, straight_result, resumed, resumed_result):
    for (name, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    assert resumed_result.curriculum_switch_step == straight_result.curriculum_switch_step == 15
    assert [row["step"] for row in resumed_result.history] == [5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    assert resumed_result.history == straight_result.history  # the killed run's rows are kept
    assert resumed_result.train_tokens == straight_result.train_tokens


def test_killed_run_resumes_to_the_same_weights_curve_and_tokens(tmp_path):
    fit = _resume_case(tmp_path)
    straight, straight_result = fit(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", callbacks=[_Kill(25)])
    assert sorted(p.name for p in (tmp_path / "b").glob("*checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    resumed, resumed_result = fit(tmp_path / "b")
    assert resumed_result.resumed_from_step == 20
    _assert_same_run(straight, straight_result, resumed, resumed_result)


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    fit = _resume_case(tmp_path)
    straight, straight_result = fit(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", callbacks=[_Kill(25)])
    weights = tmp_path / "b" / "checkpoint-20" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    capsys.readouterr()
    resumed, resumed_result = fit(tmp_path / "b")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"checkpoint {tmp_path / 'b' / 'checkpoint-20'} is incomplete "
        f"(model.safetensors has {size // 2} bytes, the manifest says {size}); falling back to checkpoint checkpoint-10"
    )
    assert resumed_result.resumed_from_step == 10
    _assert_same_run(straight, straight_result, resumed, resumed_result)


def test_local_base_model_with_lora_trains_and_merges(tmp_path):
    torch.set_num_threads(1)
    from cascadelab.config import CoarseSFTParams
    from cascadelab.pipeline.coarse_sft import coarse_model_and_tokenizer

    records = [
        {"task": "add", "difficulty": 1, "prompt": f"{a}+{b}=", "response": str(a + b), "answer": str(a + b)}
        for a in range(10)
        for b in range(10)
    ]
    base_tokenizer = train_tokenizer([r["prompt"] + r["response"] for r in records], TokenizerParams(kind="bpe"))
    base = build_causal_lm(
        CausalLMParams(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64).to_config(base_tokenizer)
    )
    base.save_pretrained(tmp_path / "base")
    base_tokenizer.save_pretrained(tmp_path / "base")
    params = CoarseSFTParams.model_validate(
        {
            "base_model": str(tmp_path / "base"),
            "lora": {"enabled": True, "r": 4, "alpha": 8},
            "train": {
                "max_steps": 10,
                "batch_size": 8,
                "logging_steps": 5,
                "warmup_steps": 2,
                "save_steps": 0,
                "num_threads": 1,
            },
            "curriculum": {"warmup_tasks": []},
            "mix": {"add": 1.0},
        }
    )
    model, tokenizer = coarse_model_and_tokenizer(params, tmp_path / "unused", seed=0)
    assert tokenizer.convert_tokens_to_ids("[COARSE]") != tokenizer.unk_token_id
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    trained, result = train_sft(
        model,
        tokenizer,
        records,
        params.train,
        params.curriculum,
        params.mix,
        0,
        tmp_path / "ckpt",
        lora=params.lora,
        report_to=(),
    )
    assert any("lora_" in name for name, _ in trained.named_parameters())
    merged = trained.merge_and_unload().cpu()
    assert not any("lora_" in name for name in merged.state_dict())
    changed = [k for k, v in merged.state_dict().items() if k in frozen and not torch.equal(v, frozen[k])]
    assert changed and all(("q_proj" in k or "k_proj" in k or "v_proj" in k or "o_proj" in k) for k in changed)
    assert len(result.history) == 2
