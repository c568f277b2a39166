"""cascadelab.models: importing it registers every family (ACOC, LEGO, SIGMA, hybrid RNN) with the Auto classes.

Saved folders also load without the project imported: see `cascadelab.models.auto_loading`.
"""

from cascadelab.models import acoc, hybrid_rnn, lego, sigma

__all__ = ["acoc", "hybrid_rnn", "lego", "sigma"]
