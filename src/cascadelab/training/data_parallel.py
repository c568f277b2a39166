"""Data parallelism for the LM trainer: each rank trains its rows of every global batch, gradients summed.

Every rank draws the same global batch (the batch source is seeded identically), keeps a contiguous share
of its rows, and back-propagates its own mean loss. The gradients are then scaled by the rank's share of
the batch's target tokens and summed over the ranks, which is exactly the gradient of the global batch's
mean loss; clipping, the guards and the optimizer then see the same gradients on every rank, so the
replicas stay identical without broadcasting weights. With one process nothing here runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cascadelab.ranks import rank, world_size


def shard_rows(batch: Any, index: int, count: int) -> Any:
    """Rows `index`/`count` (a contiguous share) of every tensor of `batch` that has the batch's row count."""
    tensors = _tensors(batch)
    if not tensors:
        raise TypeError(f"cannot shard a {type(batch).__name__}: it holds no tensors")
    rows = next(iter(tensors.values())).shape[0]
    if rows % count:
        raise ValueError(f"batch_size: {rows} rows do not split evenly over {count} processes (launch.nproc)")
    size = rows // count
    sliced = {
        name: tensor[index * size : (index + 1) * size] if tensor.dim() and tensor.shape[0] == rows else tensor
        for name, tensor in tensors.items()
    }
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **sliced)
    return {**batch, **sliced}


def _tensors(batch: Any) -> dict[str, torch.Tensor]:
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        items = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    elif isinstance(batch, Mapping):
        items = dict(batch)
    else:
        return {}
    return {name: value for name, value in items.items() if isinstance(value, torch.Tensor)}


class DataParallel:
    """This rank's share of each batch, and the gradient and statistics reduction over the ranks."""

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count

    @classmethod
    def from_environment(cls, device: torch.device) -> DataParallel | None:
        """The data-parallel group of a torchrun launch (process group created if needed), or None for one process."""
        if world_size() <= 1:
            return None
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank(), world_size())

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run's files."""
        return self.index == 0

    def shard(self, batch: Any) -> Any:
        """This rank's rows of the global batch."""
        return shard_rows(batch, self.index, self.count)

    def share(self, stats: Mapping[str, float], device: torch.device) -> tuple[float, dict[str, float]]:
        """This rank's weight (its share of the global batch's target tokens) and the stats summed over ranks."""
        weight_of = float(stats.get("target_tokens", 0.0)) or 1.0  # a family without target counts: equal rows
        local = torch.tensor([weight_of, *(float(value) for value in stats.values())], dtype=torch.float64)
        total = local.to(device)
        dist.all_reduce(total)
        summed = dict(zip(stats, total.cpu().tolist()[1:], strict=True))
        if "aux_loss" in summed:  # a per-rank mean, like the loss: average it rather than add it up
            summed["aux_loss"] /= self.count
        return weight_of / float(total[0]), summed

    def reduce_gradients(self, model: nn.Module, weight: float, loss: torch.Tensor) -> float:
        """Scale this rank's gradients by `weight`, sum them over the ranks in place; the global mean loss."""
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads] + [loss.detach().reshape(1).float()])
        flat.mul_(weight)
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype)
            offset += g.numel()
        return float(flat[-1])
