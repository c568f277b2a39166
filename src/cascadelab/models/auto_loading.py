"""Saved models that the Auto classes load from their folder alone (`trust_remote_code=True`), as Hub models do.

`save_pretrained` of a cascadelab model also writes `cascadelab_auto.py`, a loader module that imports the
model's classes from the installed `cascadelab` package, and points the config's `auto_map` at it. Then a
Python that has never imported the project loads the folder with
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` (or `AutoModelForSeq2SeqLM`), and so do
`transformers.pipeline` and lm-evaluation-harness's `hf` model (`trust_remote_code=True` in its model args).
Without `trust_remote_code`, `import cascadelab.models` registers every family with the Auto classes instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from transformers import PreTrainedModel

LOADER_MODULE = "cascadelab_auto"


def loader_source(model_class: type, config_class: type) -> str:
    """The text of the loader module that exposes `model_class` and `config_class` to `auto_map`."""
    return (
        '"""Loads this folder\'s model from the installed cascadelab package (pip install -e <checkout>)."""\n\n'
        f"from {config_class.__module__} import {config_class.__name__}\n"
        f"from {model_class.__module__} import {model_class.__name__}\n\n"
        f'__all__ = ["{config_class.__name__}", "{model_class.__name__}"]\n'
    )


class LoadableFromFolder:
    """Mixin for a model class: `save_pretrained` adds the `auto_map` and the loader module beside the weights."""

    auto_model_class: ClassVar[str] = "AutoModelForCausalLM"

    def save_pretrained(self, save_directory: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        """Save as transformers does, with `config.auto_map` naming the loader module written next to it."""
        assert isinstance(self, PreTrainedModel)
        config_class, model_class = type(self.config), type(self)
        self.config.auto_map = {
            "AutoConfig": f"{LOADER_MODULE}.{config_class.__name__}",
            self.auto_model_class: f"{LOADER_MODULE}.{model_class.__name__}",
        }
        result = super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
        (Path(save_directory) / f"{LOADER_MODULE}.py").write_text(loader_source(model_class, config_class))
        return result
