"""Scripted coarse model and refiner for testing the cascade's control flow (imported by the cascade tests)."""

from typing import ClassVar

from cascadelab.cascade.cascade import CascadeTransformer
from cascadelab.cascade.formatting import split_refiner_input
from cascadelab.cascade.refiner import Refiner
from cascadelab.cascade.router import PromptRouter
from cascadelab.config import RefinerFormatSettings, RefinerSettings


class OperatorRouter(PromptRouter):
    """Predicts `mul` for a prompt with `*`, else `add` (the prompt text is all it reads)."""

    def __init__(self):
        super().__init__(["add", "mul"])

    def predict(self, prompts):
        return ["mul" if "*" in p else "add" for p in prompts]


class ScriptedRefiner(Refiner):
    """Answers each refiner input from a table keyed by the coarse slot, and counts generations."""

    def __init__(self, model, tokenizer, script, use_coarse=True):
        settings = RefinerSettings(
            mix={"mul": 1.0}, route_tasks=["mul"], format=RefinerFormatSettings(use_coarse=use_coarse)
        )
        super().__init__({"all": model}, tokenizer, settings, OperatorRouter())
        self.script = script
        self.generated = []

    def generate_from_inputs(self, texts, tasks=None, max_new_tokens=None, batch_size=256):
        self.generated.extend(texts)
        return [self.script[split_refiner_input(t)[1]] for t in texts]


class ScriptedCascade(CascadeTransformer):
    """Coarse answers from a table instead of a trained coarse model."""

    coarse_table: ClassVar[dict[str, str]] = {}

    def coarse_generate(self, prompts):
        return [self.coarse_table[p] for p in prompts]
