"""Trainer features of the SIGMA loop: integrity guards, hidden-eval manifest, crash reports, prefetch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from cascadelab.config import SigmaFeatureParams, SigmaGuardParams, SigmaOptimizerParams, SigmaTrainParams
from cascadelab.data.hidden_eval import check_manifest, write_manifest
from cascadelab.training.batch_pipeline import FallbackSource, Prefetcher
from cascadelab.training.integrity_guards import IntegrityGuards
from cascadelab.training.optimizers.factory import build_optimizers
from cascadelab.training.sigma_loop import SigmaTrainer

VOCAB = 32
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Counting sequences (learnable), loss on the second half."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        start = torch.randint(3, VOCAB, (4, 1), generator=gen)
        ids = 3 + (start - 3 + torch.arange(10)) % (VOCAB - 3)
        labels = ids.clone()
        labels[:, :5] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


class Sabotaged(nn.Module):
    """A tiny Llama whose loss is multiplied by `factor` at the given (1-based) steps."""

    def __init__(self, bad_steps: set[int], factor: float = float("nan")) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
            )
        )
        self.bad_steps, self.factor, self.calls = bad_steps, factor, 0

    def forward(self, **batch: torch.Tensor) -> Any:
        """The inner forward; its loss sabotaged at the bad steps."""
        out = self.inner(**batch)
        if self.training:
            self.calls += 1
            if self.calls in self.bad_steps:
                out.loss = out.loss * self.factor
        return out


def trainer_for(model: nn.Module, out: Path, steps: int, features: dict[str, bool], **guards: Any) -> SigmaTrainer:
    train = SigmaTrainParams(max_steps=steps, batch_size=4, warmup_steps=1, logging_steps=steps, decay_fraction=0.0)
    return SigmaTrainer(
        model,
        build_optimizers(model, SigmaOptimizerParams(learning_rate=1e-2)),
        train,
        out,
        features=SigmaFeatureParams(**features),
        guards=SigmaGuardParams(**{"snapshot_steps": 2, "spike_window": 3, **guards}),
    )


def test_a_nan_loss_is_skipped_and_counted(tmp_path: Path) -> None:
    model = Sabotaged({3})
    trainer = trainer_for(model, tmp_path, 6, {"integrity_guards": True})
    row = trainer.fit(batches(6)).history[-1]
    assert row["guard_nonfinite_skips"] == 1 and row["guard_restores"] == 0
    assert row["feature_integrity_guards_enabled"] == 1 and row["feature_integrity_guards_effective_calls"] == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(FloatingPointError, match="training loss is nan"):  # without the guards the run stops
        trainer_for(Sabotaged({3}), tmp_path / "off", 6, {}).fit(batches(6))


def test_n_nonfinite_steps_in_a_row_restore_the_last_good_state(tmp_path: Path) -> None:
    model = Sabotaged({5, 6, 7})
    trainer = trainer_for(model, tmp_path, 7, {"integrity_guards": True}, nonfinite_restore_after=3)
    seen: dict[str, torch.Tensor] = {}
    original_take = trainer.good_state.take

    def remember(step: int, *args: Any) -> None:
        original_take(step, *args)
        seen.update({k: v.clone() for k, v in model.state_dict().items()})

    trainer.good_state.take = remember  # type: ignore[method-assign]
    row = trainer.fit(batches(7)).history[-1]
    assert row["guard_nonfinite_skips"] == 3 and row["guard_restores"] == 1
    assert trainer.good_state.step == 4
    assert all(torch.equal(v, seen[k]) for k, v in model.state_dict().items())  # back at step 4's weights


def test_a_loss_spike_rolls_back_and_lowers_the_learning_rate(tmp_path: Path) -> None:
    model = Sabotaged({6}, factor=100.0)
    trainer = trainer_for(model, tmp_path, 8, {"integrity_guards": True}, spike_factor=5.0, spike_lr_factor=0.5)
    base = [s.base_lrs[0] for s in trainer.schedulers]
    row = trainer.fit(batches(8)).history[-1]
    assert row["guard_spike_rollbacks"] == 1 and row["guard_nonfinite_skips"] == 0
    assert [s.base_lrs[0] for s in trainer.schedulers] == [b * 0.5 for b in base]


def test_guard_verdicts_follow_the_rules() -> None:
    guards = IntegrityGuards(nonfinite_restore_after=2, spike_factor=3.0, spike_window=3)
    verdicts = [guards.check(loss, 1.0) for loss in (1.0, 1.0, 1.0, 3.5, 2.9, float("inf"), 1.0)]
    assert verdicts == ["step", "step", "step", "rollback", "step", "skip", "step"]
    assert [guards.check(1.0, g) for g in (float("nan"), float("nan"))] == ["skip", "restore"]


def test_manifest_rejects_an_overlapping_split_naming_the_count(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.json", {"val": ["1+2=", "3+4="], "test": ["rev ab="]})
    assert check_manifest(manifest, ["5+6=", "7+8="]) == 3
    with pytest.raises(ValueError, match=r"2 training prompts are in the hidden val/test splits$"):
        check_manifest(manifest, ["1+2=", " REV  ab= ", "9+9="])  # normalised: case and spaces


def test_a_crash_writes_a_report_and_propagates(tmp_path: Path) -> None:
    model = Sabotaged(set())
    trainer = trainer_for(model, tmp_path, 6, {"crash_report": True})

    def explode(_trainer: SigmaTrainer, step: int) -> None:
        if step == 4:
            raise RuntimeError("verifier exploded")

    trainer.add_hook("verify", explode)
    with pytest.raises(RuntimeError, match="verifier exploded"):
        trainer.fit(batches(6))
    (report,) = (tmp_path / "errors").glob("*.json")
    payload = json.loads(report.read_text())
    assert payload["step"] == 4 and payload["error"] == "RuntimeError: verifier exploded"
    assert "explode" in payload["traceback"] and payload["versions"]["torch"] == torch.__version__
    assert payload["device"] == "cpu"


def test_a_crashing_run_exits_non_zero(tmp_path: Path) -> None:
    script = f"""
import sys; sys.path[:0] = [{str(ROOT / "src")!r}, {str(Path(__file__).parent)!r}]
from pathlib import Path
from test_sigma_guards import Sabotaged, batches, trainer_for
t = trainer_for(Sabotaged(set()), Path({str(tmp_path)!r}), 4, {{"crash_report": True}})
t.add_hook("rl", lambda tr, step: 1 / 0)
t.fit(batches(4))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "ZeroDivisionError" in run.stderr
    assert len(list((tmp_path / "errors").glob("*.json"))) == 1


def test_prefetch_changes_no_batch(tmp_path: Path) -> None:
    plain = batches(9)
    fetched = list(Prefetcher(iter(batches(9)), depth=2))
    assert len(fetched) == 9
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(plain, fetched, strict=True))
    rows = {}
    for prefetch in (False, True):
        trainer = trainer_for(Sabotaged(set()), tmp_path / str(prefetch), 6, {"prefetch": prefetch})
        rows[prefetch] = trainer.fit(batches(6)).history[-1]
    assert rows[True]["loss"] == rows[False]["loss"]
    assert rows[True]["feature_prefetch_effective_calls"] == 6 and rows[False]["feature_prefetch_effective_calls"] == 0


def test_prefetch_hands_a_source_error_to_the_consumer() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    fetched = Prefetcher(broken(), depth=1)
    assert next(fetched) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(fetched)


def test_a_failing_source_falls_back_to_the_local_corpus_and_is_counted() -> None:
    def streaming() -> Iterator[str]:
        yield "remote-0"
        yield "remote-1"
        raise ConnectionError("hub unreachable")

    source = FallbackSource(streaming(), iter(["local-0", "local-1", "local-2"]))
    assert [next(source) for _ in range(4)] == ["remote-0", "remote-1", "local-0", "local-1"]
    assert source.fallbacks == 1 and source.last_error == "ConnectionError: hub unreachable"


def test_the_loop_logs_the_fallbacks_of_its_batch_source(tmp_path: Path) -> None:
    def streaming() -> Iterator[dict[str, torch.Tensor]]:
        yield from batches(2, seed=1)
        raise ConnectionError("hub unreachable")

    source = FallbackSource(streaming(), iter(batches(6)))
    trainer = trainer_for(Sabotaged(set()), tmp_path, 6, {"prefetch": True})
    rows = trainer.fit(source).history
    assert rows[-1]["data_fallbacks"] == 1 and rows[-1]["step"] == 6
