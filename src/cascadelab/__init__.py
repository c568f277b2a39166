"""cascadelab: a reproducible bench for adaptive-compute language models."""

__version__ = "0.1.0"
