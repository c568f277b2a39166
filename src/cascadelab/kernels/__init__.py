"""cascadelab.kernels."""
