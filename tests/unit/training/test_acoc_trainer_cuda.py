"""The ACOC cycle loop on a CUDA device (skipped where no GPU exists, e.g. CI)."""

import pytest
import torch
from tests.unit.training.test_acoc_trainer import _settings, _verify, data  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cycle_loop_and_baselines_run_on_cuda(data):  # noqa: F811
    from cascadelab.training.acoc_trainer import run_acoc

    records, tokenizer, train, val = data
    settings = _settings(
        tasks={"map": 0, "alt": 2}, baselines=True, cycles=4, learning_rate=1e-2, growth={"stagnation_tol": 0.15}
    )
    result = run_acoc(settings, train, val, records, tokenizer, _verify, seed=0, device="cuda")
    assert result.model.device.type == "cuda"
    assert {"static_initial", "static_final"} == set(result.baselines)
    assert result.metrics["train_steps"] == settings.total_steps
