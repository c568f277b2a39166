"""The run length every training loop reads from its params section: the LM trainer's loop and TRL's runs alike."""

from __future__ import annotations

from typing import Protocol


class RunLength(Protocol):
    """How long a run trains and how often it logs (e.g. `SigmaTrainParams`, `SFTTrainParams`)."""

    @property
    def max_steps(self) -> int:
        """Optimizer steps of the run (an early stop may end it sooner)."""
        ...

    @property
    def logging_steps(self) -> int:
        """Steps between two logged rows."""
        ...


__all__ = ["RunLength"]
