"""The settings several sections share are declared once: same bounds and description, each section's default."""

import pytest
from pydantic import ValidationError

from cascadelab.config import (
    ACOCModelParams,
    ACOCParams,
    CausalLMParams,
    HybridRNNModelParams,
    LegoLoopParams,
    LegoModelParams,
    LegoPhase2Params,
    RefinerTrainSettings,
    SigmaModelParams,
    SigmaRLTrainParams,
    SigmaTrainParams,
    TrainParams,
)
from cascadelab.config.base import StrictModel, check_each
from cascadelab.config.fields import WeightDecay, preset_field
from cascadelab.config.transformer import check_heads_divide, hf_sizes


def _spec(model, name):
    field = model.model_fields[name]
    return field.annotation, field.metadata, field.description


@pytest.mark.parametrize(
    ("name", "models"),
    [
        ("initializer_range", [ACOCModelParams, CausalLMParams, LegoModelParams, HybridRNNModelParams]),
        ("max_grad_norm", [TrainParams, SigmaTrainParams, ACOCParams]),
        ("decay_fraction", [TrainParams, SigmaTrainParams, SigmaRLTrainParams, RefinerTrainSettings]),
        ("weight_decay", [TrainParams, ACOCParams, LegoLoopParams]),
        ("grad_clip", [LegoLoopParams, LegoPhase2Params]),
    ],
)
def test_a_shared_setting_validates_and_reads_alike_in_every_section(name, models):
    assert len({repr(_spec(model, name)) for model in models}) == 1


def test_each_section_keeps_its_own_default():
    assert RefinerTrainSettings().warmup_steps == 50 and TrainParams().warmup_steps == 100
    assert SigmaRLTrainParams().warmup_steps == 0 and SigmaTrainParams().warmup_steps == 100
    assert LegoLoopParams().batch_size == 32 and ACOCParams().batch_size == 64


def test_a_field_type_takes_the_default_given_beside_it():
    class Section(StrictModel):
        weight_decay: WeightDecay = 0.1

    assert Section().weight_decay == 0.1
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Section(weight_decay=-1)


def test_a_preset_field_defaults_to_null_and_says_so():
    class Knobs(StrictModel):
        width: int | None = preset_field("model width", gt=0)

    assert Knobs().width is None
    assert Knobs.model_fields["width"].description == "model width (null: the preset's)"
    with pytest.raises(ValidationError, match="greater than 0"):
        Knobs(width=0)
    assert SigmaModelParams.model_fields["moe_top_k"].description == "routed experts per token (null: the preset's)"


def test_check_each_names_the_key_and_the_first_bad_value():
    check_each("shares", [0.0, 1.0], lambda share: 0 <= share <= 1, "share must be in [0, 1]")
    with pytest.raises(ValueError, match=r"^shares: each share must be in \[0, 1\] \(got 2\)$"):
        check_each("shares", [0.5, 2, 3], lambda share: 0 <= share <= 1, "share must be in [0, 1]")


def test_transformer_sizes_under_their_hugging_face_names():
    model = LegoModelParams(hidden_size=32, num_heads=2)
    assert hf_sizes(model, model.phase1_layers) == {
        "hidden_size": 32,
        "num_hidden_layers": model.phase1_layers,
        "num_attention_heads": 2,
        "max_position_embeddings": model.max_position_embeddings,
        "initializer_range": model.initializer_range,
    }


def test_heads_must_divide_the_width():
    check_heads_divide(ACOCModelParams(hidden_size=64, num_heads=4))
    with pytest.raises(ValueError, match=r"^hidden_size: must be divisible by num_heads \(65 % 4\)$"):
        check_heads_divide(LegoModelParams.model_construct(hidden_size=65, num_heads=4))
    for model in (ACOCModelParams, CausalLMParams):
        with pytest.raises(ValidationError, match="hidden_size: must be divisible by num_heads"):
            model(hidden_size=65, num_heads=4)
