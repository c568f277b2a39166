"""Kernel dispatch: `auto` picks Triton only for CUDA tensors; the reference serves CPU tensors."""

from types import SimpleNamespace

import pytest
import torch

from cascadelab.kernels import _triton
from cascadelab.kernels._triton import select_backend


def test_auto_serves_a_cpu_tensor_with_the_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # even where the interpreter could run it
    assert select_backend(torch.zeros(2)) == "ref"


def test_auto_picks_triton_for_a_cuda_tensor_when_triton_is_installed(monkeypatch):
    cuda_tensor = SimpleNamespace(is_cuda=True)  # select_backend reads only the device flag
    monkeypatch.setattr(_triton, "TRITON_AVAILABLE", True)
    assert select_backend(cuda_tensor) == "triton"
    monkeypatch.setattr(_triton, "TRITON_AVAILABLE", False)
    assert select_backend(cuda_tensor) == "ref"


def test_asking_for_triton_on_a_cpu_tensor_without_the_interpreter_is_an_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    expected = r"^the Triton backend needs triton and a CUDA tensor \(or TRITON_INTERPRET=1\)$"
    with pytest.raises(RuntimeError, match=expected):
        select_backend(torch.zeros(2), "triton")
