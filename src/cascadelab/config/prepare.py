"""The `prepare` section: corpus generation and tokenizer training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cascadelab.config.base import TASK_FAMILIES, StrictModel, check_each, section_field

DIFFICULTY_LEVELS = (1, 2, 3)  # of a task family's items, and of the code tasks


def check_levels(key: str, levels: list[int]) -> None:
    """Raise ValueError `<key>: each level must be 1, 2 or 3 (got <level>)` for the first level out of that range."""
    check_each(key, levels, lambda level: level in DIFFICULTY_LEVELS, "level must be 1, 2 or 3")


class FamilyParams(StrictModel):
    """One task family of the generated corpus."""

    difficulties: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="difficulty levels (1..3) generated for this family, one corpus cell each",
    )

    @model_validator(mode="after")
    def _check_levels(self) -> FamilyParams:
        check_levels("difficulties", self.difficulties)
        return self


class SplitSizes(StrictModel):
    """Items per (family, difficulty) cell in each split; small families are capped by their size."""

    train: int = Field(4000, gt=0, description="train items per cell")
    val: int = Field(100, gt=0, description="val items per cell")
    test: int = Field(200, gt=0, description="test items per cell")


class UserDatasetParams(StrictModel):
    """A user's own question/answer data (local JSONL or a hub dataset), added as task `user`."""

    path: str | None = Field(None, description="local JSONL file of question/answer records (set this or hf_name)")
    hf_name: str | None = Field(None, description="Hugging Face hub dataset id (set this or path)")
    hf_config: str | None = Field(None, description="configuration name of the hub dataset (null: its default)")
    question_field: str = Field("question", description="record field that holds the question (the prompt)")
    answer_field: str = Field("answer", description="record field that holds the answer text")
    answer_pattern: str = Field(
        r"####\s*(-?[\d,\.]+)", description="regex whose first group extracts the final answer from answer_field"
    )
    weight: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="share of each training mix's samples drawn from task `user` (the other families keep "
        "their ratios; a mix that names `user` itself keeps its own weight)",
    )
    only: bool = Field(False, description="train on task `user` alone (every training mix becomes {user: 1})")
    generation_margin: float = Field(
        0.25,
        ge=0,
        description="user items generate up to the longest train response in tokens times (1 + this), "
        "and a built model's context grows to fit it",
    )
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the records held out as val")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="share of the records held out as test")

    @model_validator(mode="after")
    def _one_source(self) -> UserDatasetParams:
        if (self.path is None) == (self.hf_name is None):
            raise ValueError("set exactly one of path or hf_name")
        return self


class TokenizerParams(StrictModel):
    """Tokenizer trained on the train split with the `tokenizers` library."""

    kind: Literal["char", "bpe"] = Field(
        "char", description="char: one token per character | bpe: byte-pair encoding trained to vocab_size"
    )
    vocab_size: int = Field(512, ge=64, description="vocabulary size of the bpe tokenizer (unused by char)")
    byte_fallback: bool = Field(
        True,
        description="char: a character unseen in train encodes as its UTF-8 bytes (256 <0xNN> tokens after "
        "the alphabet), so no text is refused | false: the train alphabet alone (bpe is byte-level either way)",
    )


class CodeTaskParams(StrictModel):
    """The `code` task family (written to data/code_tasks, apart from the corpus)."""

    enabled: bool = Field(True, description="generate the code task family (data/code_tasks)")
    levels: list[int] = Field(
        default_factory=lambda: [1, 2, 3],
        min_length=1,
        description="code levels generated (1: a*b, lambda x:x+k | 2: a*b+c, lambda x:x*k+m | 3: lambda x,y:...)",
    )
    sizes: SplitSizes = Field(
        default_factory=lambda: SplitSizes(train=400, val=40, test=40),
        description="items per level in each split; small levels keep <= 15 % each for val and test",
    )

    @model_validator(mode="after")
    def _check_levels(self) -> CodeTaskParams:
        check_levels("levels", self.levels)
        return self


class PrepareParams(StrictModel):
    """Corpus generation and tokenizer training."""

    families: dict[str, FamilyParams] = Field(
        default_factory=lambda: {name: FamilyParams() for name in TASK_FAMILIES},
        min_length=1,
        description="task families of the corpus and the difficulty levels sampled from each",
    )
    sizes: SplitSizes = section_field(SplitSizes)
    answer_format: Literal["reversed", "plain"] = Field(
        "reversed", description="reversed: numeric answers written least-significant digit first | plain: as usual"
    )
    user_dataset: UserDatasetParams | None = Field(
        None, description="a user's own question/answer data added as task `user` (null: none)"
    )
    tokenizer: TokenizerParams = section_field(TokenizerParams, "the tokenizer trained on the train split")
    code: CodeTaskParams = section_field(
        CodeTaskParams, "the code task family (written to data/code_tasks, apart from the corpus)"
    )

    @model_validator(mode="after")
    def _known_families(self) -> PrepareParams:
        for name in self.families:
            if name not in TASK_FAMILIES:
                raise ValueError(f"families.{name}: unknown task family (known: {', '.join(TASK_FAMILIES)})")
        return self
