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


def params_with_grad(group: dict[str, Any]) -> Iterator[torch.Tensor]:
    """The group's parameters that have a gradient, in the group's order."""
    return (p for p in group["params"] if p.grad is not None)
