"""The prompt router: predicts a prompt's task family from its text alone, so the cascade reads no label.

A multinomial logistic regression (L-BFGS, zero init, full batch: deterministic) over character counts of
the prompt (one column per character seen in training, one for any other) and its length. It is trained on
the train split's (prompt, task) pairs by the refiner stage and saved beside the refiner (`router.json`).
With a single family (a user dataset without families) it predicts that family without fitting anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROUTER_FILE = "router.json"


def _features(prompts: Sequence[str], vocab: str) -> torch.Tensor:
    """Character counts over `vocab` (+ one column for other characters) and the prompt length."""
    index = {c: i for i, c in enumerate(vocab)}
    rows = torch.zeros(len(prompts), len(vocab) + 2, dtype=torch.float64)
    for row, prompt in enumerate(prompts):
        for char in prompt:
            rows[row, index.get(char, len(vocab))] += 1.0
        rows[row, -1] = float(len(prompt))
    return rows


@dataclass
class PromptRouter:
    """A fitted prompt → task-family classifier (`fit`, `predict`, `save`/`load`)."""

    classes: list[str]
    vocab: str = ""
    weight: torch.Tensor | None = None  # [classes, features] on standardised features
    bias: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def fit(cls, prompts: Sequence[str], tasks: Sequence[str], l2: float = 1e-4, max_iter: int = 200) -> PromptRouter:
        """Fit on (prompt, task) pairs of the train split."""
        if len(prompts) != len(tasks) or not prompts:
            raise ValueError(f"router: {len(prompts)} prompts for {len(tasks)} tasks")
        classes = sorted(set(tasks))
        if len(classes) == 1:
            return cls(classes)
        vocab = "".join(sorted({c for p in prompts for c in p}))
        x = _features(prompts, vocab)
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        z = (x - mean) / std
        y = torch.tensor([classes.index(t) for t in tasks])
        weight = torch.zeros(len(classes), z.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ weight.T + bias, y) + l2 * (weight**2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return cls(classes, vocab, weight.detach(), bias.detach(), mean, std)

    def predict(self, prompts: Sequence[str]) -> list[str]:
        """The predicted family of each prompt."""
        if self.weight is None or self.bias is None or self.mean is None or self.std is None:
            return [self.classes[0]] * len(prompts)
        if not prompts:
            return []
        z = (_features(prompts, self.vocab) - self.mean) / self.std
        return [self.classes[int(i)] for i in (z @ self.weight.T + self.bias).argmax(1)]

    def accuracy(self, prompts: Sequence[str], tasks: Sequence[str]) -> float:
        """Share (%) of prompts whose predicted family is their task (a report figure, never a decision)."""
        predicted = self.predict(prompts)
        return 100.0 * sum(p == t for p, t in zip(predicted, tasks, strict=True)) / max(len(tasks), 1)

    def save(self, folder: str | Path) -> None:
        """Write `router.json` into `folder` (plain JSON: a few hundred numbers)."""
        data: dict[str, object] = {"classes": self.classes, "vocab": self.vocab}
        for name in ("weight", "bias", "mean", "std"):
            value = getattr(self, name)
            data[name] = value.tolist() if value is not None else None
        (Path(folder) / ROUTER_FILE).write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> PromptRouter | None:
        """The router saved in `folder`, or None when there is none."""
        path = Path(folder) / ROUTER_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        tensors = {
            name: torch.tensor(data[name], dtype=torch.float64) if data.get(name) is not None else None
            for name in ("weight", "bias", "mean", "std")
        }
        return cls(list(data["classes"]), str(data["vocab"]), **tensors)
