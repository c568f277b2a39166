"""Refiner modes through the real teacher-forcing path (a few steps each): LoRA, full copy, separate model."""

import random

import pytest
import torch

from cascadelab.cascade.formatting import refiner_record
from cascadelab.cascade.refiner import Refiner, build_separate_model
from cascadelab.config import RefinerSettings, RefinerTrainSettings, SeparateRefinerSettings
from cascadelab.data.tasks import get_family
from cascadelab.training.refiner_trainer import clone_model, train_teacher_forcing

TRAIN = RefinerTrainSettings(
    max_steps=6, batch_size=4, learning_rate=3e-3, warmup_steps=0, logging_steps=1, num_threads=1
)


def _rows(settings, count=24):
    rng = random.Random(0)
    rows = []
    for task, level in (("mul", 1), ("add", 1)):
        family = get_family(task)
        for i in range(count):
            item = family.sample(rng, level)
            record = {
                "id": f"{task}{i}",
                "task": task,
                "difficulty": level,
                "prompt": item.prompt,
                "response": item.response,
                "answer": item.answer,
                "steps": item.steps,
            }
            rows.append(refiner_record(record, None, settings.format))
    return rows


def _settings(**kwargs):
    return RefinerSettings(mix={"mul": 0.8, "add": 0.2}, route_tasks=["mul"], train=TRAIN, **kwargs)


def _logits(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        return model(**batch).logits


TEXTS = ["7*38=[COARSE][REFINE]650,012:+662", "12+34="]


def test_lora_adapter_off_gives_the_coarse_models_exact_logits(tiny_model, tokenizer, tmp_path):
    coarse = clone_model(tiny_model).eval()
    expected = _logits(coarse, tokenizer, TEXTS)
    settings = _settings(mode="lora", lora={"r": 4, "alpha": 8})
    refiner, results = train_teacher_forcing(coarse, tokenizer, _rows(settings), settings, 0, tmp_path / "work")
    assert results["all"].history and results["all"].train_tokens > 0
    with refiner.coarse_context():
        assert torch.equal(_logits(refiner.models["all"], tokenizer, TEXTS), expected)
    adapted = _logits(refiner.models["all"], tokenizer, TEXTS)
    assert not torch.allclose(adapted, expected)
    assert torch.equal(_logits(coarse, tokenizer, TEXTS), expected)  # training used a copy
    lora_bytes = sum(p.numel() * 4 for n, p in refiner.models["all"].named_parameters() if "lora_" in n)
    assert refiner.size_bytes() == lora_bytes > 0
    refiner.save(tmp_path / "refiner")
    assert (tmp_path / "refiner" / "all" / "adapter_model.safetensors").is_file()
    assert "PeftModel.from_pretrained(coarse_model, folder / key)" in (tmp_path / "refiner" / "README.md").read_text()
    loaded = Refiner.load(tmp_path / "refiner", tokenizer, base_model=clone_model(tiny_model).eval())
    assert torch.allclose(_logits(loaded.models["all"], tokenizer, TEXTS), adapted, atol=1e-6)
    with loaded.coarse_context():
        assert torch.equal(_logits(loaded.models["all"], tokenizer, TEXTS), expected)
    with pytest.raises(ValueError, match="refiner: a LoRA refiner needs the coarse base model"):
        Refiner.load(tmp_path / "refiner", tokenizer)


def test_full_refiner_is_an_independent_copy(tiny_model, tokenizer, tmp_path):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    settings = _settings(mode="full")
    refiner, _ = train_teacher_forcing(tiny_model, tokenizer, _rows(settings), settings, 0, tmp_path / "work")
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in before.items())
    trained = refiner.models["all"].state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in before.items())
    refiner.save(tmp_path / "refiner")
    loaded = Refiner.load(tmp_path / "refiner", tokenizer)
    assert torch.equal(
        _logits(loaded.models["all"], tokenizer, TEXTS), _logits(refiner.models["all"], tokenizer, TEXTS)
    )
    assert refiner.size_bytes() == sum(p.numel() * 4 for p in tiny_model.parameters())
    with refiner.coarse_context():  # no adapter: a no-op
        pass


def test_separate_refiner_shares_frozen_coarse_embeddings(tiny_model, tokenizer, tmp_path):
    settings = _settings(
        mode="separate", separate=SeparateRefinerSettings(num_layers=2, num_heads=4, intermediate_size=48)
    )
    refiner, _ = train_teacher_forcing(tiny_model, tokenizer, _rows(settings), settings, 0, tmp_path / "work")
    model = refiner.models["all"]
    assert model.config.num_hidden_layers == 2 and model.config.num_attention_heads == 4
    assert torch.equal(model.get_input_embeddings().weight, tiny_model.get_input_embeddings().weight)
    assert not model.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match=r"separate\.num_heads: must divide the coarse hidden size 32"):
        build_separate_model(tiny_model, SeparateRefinerSettings(num_heads=5))


def test_per_family_refiners_route_by_task_with_their_own_budgets(tiny_model, tokenizer, tmp_path):
    settings = RefinerSettings(
        mix={"mul": 0.5, "word": 0.3, "add": 0.2},
        route_tasks=["mul", "word"],
        per_family=True,
        family_steps={"word": 3},
        train=TRAIN,
    )
    rows = _rows(settings)
    rng = random.Random(1)
    family = get_family("word")
    for i in range(8):
        item = family.sample(rng, 1)
        rows.append(
            refiner_record(
                {
                    "id": f"w{i}",
                    "task": "word",
                    "prompt": item.prompt,
                    "response": item.response,
                    "answer": item.answer,
                    "steps": item.steps,
                },
                None,
                settings.format,
            )
        )
    refiner, results = train_teacher_forcing(tiny_model, tokenizer, rows, settings, 0, tmp_path / "work")
    assert sorted(refiner.models) == ["mul", "word"]
    assert refiner.model_for("word") is refiner.models["word"] and refiner.model_for("mul") is refiner.models["mul"]
    assert results["word"].history[-1]["step"] == 3 and results["mul"].history[-1]["step"] == 6
    with pytest.raises(ValueError, match="refiner: no model for task 'add' \\(has: mul, word\\)"):
        refiner.model_for("add")
    outputs = refiner.generate(
        ["7*38=", "Ann has 12 pens and gets 3 more. How many?="], [None, None], ["mul", "word"], max_new_tokens=4
    )
    assert len(outputs) == 2
