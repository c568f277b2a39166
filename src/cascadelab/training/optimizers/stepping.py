"""The parts of ``Optimizer.step`` every cascadelab optimizer shares: the closure and the parameters to move."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch


def closure_loss(closure: Callable[[], Any] | None) -> Any:
    """Re-evaluate the loss with gradients on, as ``torch.optim`` does when ``step`` gets a closure (else None)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def params_with_grad(group: dict[str, Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, gradient) for each of the group's parameters that has a gradient, in the group's order."""
    for p in group["params"]:
        if p.grad is not None:
            yield p, p.grad
