"""cascadelab.cascade."""
