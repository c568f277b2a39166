"""cascadelab.data."""
