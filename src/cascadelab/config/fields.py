"""Field types several params sections share: a setting's type, bounds and description, declared once.

A section that has the setting gives only its own default (`weight_decay: WeightDecay = 0.0`), so the same
setting validates alike and reads alike in params.yaml's comments wherever it appears.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

# A pair of numbers: YAML gives a list, the schema keeps a tuple (strict mode takes no list for a tuple).
NumberPair = Annotated[
    tuple[float, float], BeforeValidator(lambda value: tuple(value) if isinstance(value, list) else value)
]

# The optimisation of a training run.
TrainBatchSize = Annotated[int, Field(gt=0, description="training sequences per step")]
PeakLearningRate = Annotated[float, Field(gt=0, description="AdamW peak learning rate")]
WarmupSteps = Annotated[int, Field(ge=0, description="steps of linear learning-rate warm-up from 0 to learning_rate")]
DecayFraction = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="share of max_steps at the end over which the learning rate decays linearly to 0 (WSD schedule)",
    ),
]
WeightDecay = Annotated[float, Field(ge=0, description="AdamW decoupled weight decay")]
MaxGradNorm = Annotated[float, Field(gt=0, description="gradients are clipped to this global L2 norm before each step")]
SaveSteps = Annotated[
    int,
    Field(
        ge=0,
        description="steps between resumable checkpoints written for a killed run to resume from (0: never); "
        "a multiple of logging_steps",
    ),
]
GroupBatchesByTask = Annotated[
    bool, Field(description="every batch holds one task only, so short items are not padded to word-problem length")
]
StageThreads = Annotated[int, Field(gt=0, description="torch CPU threads of the stage")]

# Evaluation and generation.
EvalBatchSize = Annotated[int, Field(gt=0, description="sequences per evaluation batch")]
GenerationBatchSize = Annotated[int, Field(gt=0, description="prompts per generation batch")]
GreedyTokens = Annotated[int, Field(gt=0, description="greedy decoding stops after this many generated tokens")]
CoarseAnswerTokens = Annotated[int, Field(gt=0, description="tokens generated per coarse answer")]
CompletionTemperature = Annotated[float, Field(gt=0, description="sampling temperature of the completions")]
PredictionSample = Annotated[
    int, Field(ge=0, description="test predictions written to the prediction sample (0: none)")
]

# LoRA adapters (PEFT).
LoraRank = Annotated[int, Field(gt=0, description="LoRA rank")]
LoraAlpha = Annotated[int, Field(gt=0, description="LoRA scaling numerator (the update is scaled by alpha / r)")]
LoraDropout = Annotated[float, Field(ge=0, lt=1, description="dropout on the LoRA input")]


def preset_field(description: str, *, gt: float | None = None, ge: float | None = None, lt: float | None = None) -> Any:
    """A knob over a model preset: null, its default, keeps the preset's value (its description says so)."""
    return Field(None, gt=gt, ge=ge, lt=lt, description=f"{description} (null: the preset's)")
