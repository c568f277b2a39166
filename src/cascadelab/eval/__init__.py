"""cascadelab.eval."""
