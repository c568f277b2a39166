"""A tiny SIGMA run with checkpoints, for the kill-and-resume test: ``python resume_run.py OUT CKPT [--slow]``.

Every trainer feature of the full profile is on (C3O credit, guards, prefetch, crash reports); with
``--slow`` a verify hook sleeps each step so that the test can kill the process mid-run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from cascadelab.config import parse_params
from cascadelab.models.sigma import SigmaConfig, SigmaForCausalLM
from cascadelab.training.optimizers.factory import build_optimizers
from cascadelab.training.run_checkpoints import CheckpointStore
from cascadelab.training.sigma_loop import SigmaTrainer

VOCAB = 48
STEPS = 24


def batches(n: int) -> list[dict[str, torch.Tensor]]:
    """Counting sequences, loss on the second half (the same for every run)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        start = torch.randint(3, VOCAB, (4, 1), generator=gen)
        ids = 3 + (start - 3 + torch.arange(12)) % (VOCAB - 3)
        labels = ids.clone()
        labels[:, :6] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def main() -> None:
    """Train (resuming from the newest valid checkpoint in CKPT when there is one)."""
    out, folder = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    section = parse_params(
        {
            "sigma_pretrain": {
                "profile": "full",
                "train": {"max_steps": STEPS, "warmup_steps": 2, "logging_steps": 4, "checkpoint_steps": 4},
                "optimizer": {"c3o": {"credit_interval": 4}},
                "guards": {"snapshot_steps": 4, "spike_window": 4},
            }
        }
    ).sigma_pretrain
    torch.manual_seed(0)
    model = SigmaForCausalLM(SigmaConfig.from_preset("tiny", vocab_size=VOCAB))
    trainer = SigmaTrainer(
        model,
        build_optimizers(model, section.optimizer),
        section.train,
        out,
        features=section.features,
        guards=section.guards,
        data=section.data,
        credit_interval=section.optimizer.c3o.credit_interval,
        checkpoints=CheckpointStore(folder, keep_last=2),
    )
    if "--slow" in sys.argv:
        trainer.add_hook("verify", lambda _t, _s: time.sleep(0.15))
    trainer.fit(batches(STEPS))
    print(f"resumed from {trainer.resumed_from}")


if __name__ == "__main__":
    main()
