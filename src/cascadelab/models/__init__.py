"""cascadelab.models."""
