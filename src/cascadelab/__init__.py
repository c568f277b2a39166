"""cascadelab: a reproducible bench for adaptive-compute language models."""

import os

# OpenMP threads that spin while waiting make torch 30-50x slower whenever another process holds a core
# (measured: 0.9 vs 24.7 steps/s on 2 threads beside one busy process). Passive waiting costs little
# on an idle machine. Must be set before torch loads OpenMP, hence here, ahead of any torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
