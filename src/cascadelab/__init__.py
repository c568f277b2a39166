"""cascadelab: a reproducible bench for adaptive-compute language models."""

import os

# OpenMP threads that spin while waiting make torch 30-50x slower whenever another process holds a core
# (measured: 0.9 vs 24.7 steps/s on 2 threads beside one busy process). Passive waiting costs little
# on an idle machine. Must be set before torch loads OpenMP, hence here, ahead of any torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# torch (ATen) and oneDNN, which runs the LSTMs, pick their vector kernels by CPU (AVX2, AVX512, ...), and
# each path rounds a little differently: on an AVX512 machine the same params gave a different coarse model
# (grad norm 0.9567 vs 0.9524 at step 150, test EM 22.0 vs 22.9 %) and a different hybrid RNN. Pinning the
# AVX2 paths, which every x86-64 machine of the last decade has, makes `dvc repro` give the same bytes
# across them; export ATEN_CPU_CAPABILITY=default|avx512 or ONEDNN_MAX_CPU_ISA=... to override.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

__version__ = "0.1.0"
