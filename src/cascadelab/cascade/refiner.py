"""The refiner: reads `{prompt}[COARSE]{coarse}[REFINE]`, writes worked steps and the final answer.

Three architectures (`RefinerSettings.mode`):

* `full`: a fine-tuned copy of the coarse model (measured best at this scale, STACK-NOTES).
* `lora`: a PEFT LoRA adapter on the coarse base — one base in memory; adapter on to refine, off
  (`coarse_context()`, i.e. `disable_adapter()`) to answer coarsely with the coarse model's exact logits.
* `separate`: a small transformer of the coarse family with its own layers and the coarse model's
  embeddings copied in (frozen by default).

With `per_family`, one model per routed family (key = task); otherwise a single model under key `all`.
`Refiner.save`/`load` write and read `refiner.json` plus one `save_pretrained` folder per key (the adapter
alone for LoRA).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from cascadelab.cascade.formatting import refiner_input
from cascadelab.cascade.router import PromptRouter
from cascadelab.config import RefinerSettings, SeparateRefinerSettings
from cascadelab.eval.generation import generate_batched
from cascadelab.io import atomic_directory

SHARED = "all"
META_FILE = "refiner.json"


def build_separate_model(coarse_model: PreTrainedModel, settings: SeparateRefinerSettings) -> PreTrainedModel:
    """A fresh model of the coarse model's family and width with its own layers and the coarse embeddings."""
    config = copy.deepcopy(coarse_model.config)
    hidden = int(config.hidden_size)
    if hidden % settings.num_heads:
        raise ValueError(f"separate.num_heads: must divide the coarse hidden size {hidden} (got {settings.num_heads})")
    config.num_hidden_layers = settings.num_layers
    config.num_attention_heads = settings.num_heads
    config.num_key_value_heads = settings.num_heads
    config.head_dim = hidden // settings.num_heads
    config.intermediate_size = settings.intermediate_size
    config.initializer_range = settings.initializer_range
    config.tie_word_embeddings = True
    model = AutoModelForCausalLM.from_config(config)
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight.copy_(coarse_model.get_input_embeddings().weight)
    if settings.freeze_embeddings:
        embeddings.weight.requires_grad_(False)
    return model


@dataclass(eq=False)
class Refiner:
    """A trained refiner (one model, or one per family) with its input format and routing."""

    models: dict[str, PreTrainedModel]
    tokenizer: PreTrainedTokenizerBase
    settings: RefinerSettings
    router: PromptRouter | None = None  # predicts each prompt's family; None: one shared refiner for all

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("refiner: no model")

    def families(self, prompts: Sequence[str]) -> list[str | None]:
        """Each prompt's family as the router predicts it from the text alone (None without a router)."""
        if self.router is None:
            return [None] * len(prompts)
        return list(self.router.predict(prompts))

    def route(self, families: Sequence[str | None], route_tasks: Sequence[str] | None = None) -> list[str | None]:
        """The model key refining each predicted family, or None where no model serves it.

        A family's own model when there is one; else the shared model for a family in `route_tasks` (default:
        the refiner's), or for every prompt when the router is absent or `route_tasks` is empty.
        """
        allowed = set(self.route_tasks if route_tasks is None else route_tasks)
        keys: list[str | None] = []
        for family in families:
            if family is not None and family in self.models and (route_tasks is None or family in allowed):
                keys.append(family)
            elif SHARED in self.models and (family is None or not allowed or family in allowed):
                keys.append(SHARED)
            else:
                keys.append(None)
        return keys

    @property
    def route_tasks(self) -> list[str]:
        """Families this refiner was trained for and may be sent."""
        return list(self.settings.route_tasks)

    def serves(self, task: str | None) -> bool:
        """Whether some model of this refiner can refine `task` (its own, or the shared one)."""
        return SHARED in self.models or (task is not None and task in self.models)

    def model_for(self, task: str | None) -> PreTrainedModel:
        """The model that refines `task` (its own with per-family refiners, else the shared one)."""
        if task is not None and task in self.models:
            return self.models[task]
        if SHARED in self.models:
            return self.models[SHARED]
        raise ValueError(f"refiner: no model for task {task!r} (has: {', '.join(sorted(self.models))})")

    def inputs(self, prompts: Sequence[str], coarse_outputs: Sequence[str | None]) -> list[str]:
        """Refiner input texts for the prompts and their coarse outputs (None: empty slot)."""
        return [refiner_input(p, c, self.settings.format) for p, c in zip(prompts, coarse_outputs, strict=True)]

    def generate(
        self,
        prompts: Sequence[str],
        coarse_outputs: Sequence[str | None],
        tasks: Sequence[str | None] | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 256,
    ) -> list[str]:
        """Greedy refined outputs (steps + answer), batched with the KV cache, each task on its model."""
        return self.generate_from_inputs(self.inputs(prompts, coarse_outputs), tasks, max_new_tokens, batch_size)

    def generate_from_inputs(
        self,
        texts: Sequence[str],
        tasks: Sequence[str | None] | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 256,
    ) -> list[str]:
        """Greedy outputs for ready-made refiner input texts, grouped by the model that serves each task."""
        tasks = list(tasks) if tasks is not None else [None] * len(texts)
        if len(tasks) != len(texts):
            raise ValueError(f"{len(texts)} refiner inputs but {len(tasks)} tasks")
        outputs: list[str] = [""] * len(texts)
        groups: dict[int, list[int]] = {}
        for index, task in enumerate(tasks):
            groups.setdefault(id(self.model_for(task)), []).append(index)
        for indices in groups.values():
            generated = generate_batched(
                self.model_for(tasks[indices[0]]),
                self.tokenizer,
                [texts[i] for i in indices],
                max_new_tokens or self.settings.max_new_tokens,
                batch_size,
                desc="refine",
            )
            for index, output in zip(indices, generated, strict=True):
                outputs[index] = output[0]
        return outputs

    def coarse_context(self) -> AbstractContextManager[Any]:
        """For a LoRA refiner, the context in which its base model is the coarse model (adapter off)."""
        if self.settings.mode != "lora":
            return nullcontext()
        return self.models[SHARED].disable_adapter()  # type: ignore[operator]  # a PeftModel

    def size_bytes(self) -> int:
        """Bytes this refiner adds to the coarse model: every parameter, or the adapter's alone for LoRA."""
        total, seen = 0, set()
        for model in self.models.values():
            for name, parameter in model.named_parameters():
                if id(parameter) in seen or (self.settings.mode == "lora" and "lora_" not in name):
                    continue
                seen.add(id(parameter))
                total += parameter.numel() * parameter.element_size()
        return total

    def save(self, folder: str | Path) -> None:
        """Write every model with `save_pretrained` (safetensors; the adapter only for LoRA) and refiner.json."""
        with atomic_directory(folder) as tmp:
            for key, model in self.models.items():
                model.save_pretrained(str(tmp / key), safe_serialization=True)
            self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            if self.router is not None:
                self.router.save(tmp)
            meta = {"settings": self.settings.model_dump(mode="json"), "models": sorted(self.models)}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            (tmp / "README.md").write_text(_folder_readme(sorted(self.models), self.settings.mode == "lora"))

    @classmethod
    def load(
        cls, folder: str | Path, tokenizer: PreTrainedTokenizerBase, base_model: PreTrainedModel | None = None
    ) -> Refiner:
        """Load a saved refiner; a LoRA refiner needs `base_model` (the coarse model), which it then wraps."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {META_FILE} (run the refiner stage)")
        meta = json.loads((folder / META_FILE).read_text())
        settings = RefinerSettings.model_validate(meta["settings"])
        models: dict[str, PreTrainedModel] = {}
        for key in meta["models"]:
            if settings.mode == "lora":
                if base_model is None:
                    raise ValueError("refiner: a LoRA refiner needs the coarse base model to load onto")
                from peft import PeftModel

                models[key] = PeftModel.from_pretrained(base_model, str(folder / key))  # type: ignore[assignment]
            else:
                models[key] = AutoModelForCausalLM.from_pretrained(str(folder / key))
            models[key].eval()
        return cls(models, tokenizer, settings, PromptRouter.load(folder))


def _folder_readme(keys: list[str], lora: bool) -> str:
    """How to load a saved refiner folder, whole or one model at a time."""
    each = (
        "a PEFT LoRA adapter on the coarse model: `PeftModel.from_pretrained(coarse_model, folder / key)`"
        if lora
        else "a causal LM: `AutoModelForCausalLM.from_pretrained(folder / key)` (tokenizer in `tokenizer/`)"
    )
    return (
        "# Cascade refiner\n\n"
        f"One refiner per routed key ({', '.join(f'`{key}/`' for key in keys)}); each is {each}.\n"
        "The whole refiner loads with `cascadelab.cascade.refiner.Refiner.load(folder, tokenizer)`; "
        "`refiner.json` holds its settings.\n"
    )
