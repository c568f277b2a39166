"""The `prepare` section: corpus generation and tokenizer training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cascadelab.config.base import TASK_FAMILIES, StrictModel


class FamilyParams(StrictModel):
    """One task family of the generated corpus."""

    difficulties: list[int] = Field(default_factory=lambda: [1], min_length=1)

    @model_validator(mode="after")
    def _check_levels(self) -> FamilyParams:
        for level in self.difficulties:
            if not 1 <= level <= 3:
                raise ValueError(f"difficulties: each level must be 1, 2 or 3 (got {level})")
        return self


class SplitSizes(StrictModel):
    """Items per (family, difficulty) cell in each split; small families are capped by their size."""

    train: int = Field(4000, gt=0)
    val: int = Field(100, gt=0)
    test: int = Field(200, gt=0)


class UserDatasetParams(StrictModel):
    """A user's own question/answer data (local JSONL or a hub dataset), added as task `user`."""

    path: str | None = None
    hf_name: str | None = None
    hf_config: str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    answer_pattern: str = r"####\s*(-?[\d,\.]+)"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_source(self) -> UserDatasetParams:
        if (self.path is None) == (self.hf_name is None):
            raise ValueError("set exactly one of path or hf_name")
        return self


class TokenizerParams(StrictModel):
    """Tokenizer trained on the train split with the `tokenizers` library."""

    kind: Literal["char", "bpe"] = "char"
    vocab_size: int = Field(512, ge=64)


class CodeTaskParams(StrictModel):
    """The `code` task family (written to data/code_tasks, apart from the corpus)."""

    enabled: bool = True
    levels: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    sizes: SplitSizes = Field(default_factory=lambda: SplitSizes(train=400, val=40, test=40))

    @model_validator(mode="after")
    def _check_levels(self) -> CodeTaskParams:
        for level in self.levels:
            if level not in (1, 2, 3):
                raise ValueError(f"levels: each level must be 1, 2 or 3 (got {level})")
        return self


class PrepareParams(StrictModel):
    """Corpus generation and tokenizer training."""

    families: dict[str, FamilyParams] = Field(
        default_factory=lambda: {name: FamilyParams() for name in TASK_FAMILIES}, min_length=1
    )
    sizes: SplitSizes = Field(default_factory=lambda: SplitSizes())
    answer_format: Literal["reversed", "plain"] = "reversed"
    user_dataset: UserDatasetParams | None = None
    tokenizer: TokenizerParams = Field(default_factory=lambda: TokenizerParams())
    code: CodeTaskParams = Field(default_factory=lambda: CodeTaskParams())

    @model_validator(mode="after")
    def _known_families(self) -> PrepareParams:
        for name in self.families:
            if name not in TASK_FAMILIES:
                raise ValueError(f"families.{name}: unknown task family (known: {', '.join(TASK_FAMILIES)})")
        return self
