"""cascadelab.training."""
