"""Decoding settings in the seed's terms (temperature, top-k, nucleus, beams) as `generate()` keyword arguments."""

from __future__ import annotations

from typing import Any


def generate_kwargs(temperature: float, top_k: int, top_p: float, num_beams: int) -> dict[str, Any]:
    """``generate()`` arguments: greedy at ``temperature <= 0``, beam search with ``num_beams != 1``, else sampling.

    Sampling filters as in the seed: ``top_k`` 0 is off (as in transformers), ``top_p`` outside (0, 1) is off
    (transformers' off is 1.0).
    """
    if temperature <= 0 or num_beams != 1:
        return {"do_sample": False, "num_beams": num_beams}
    top_p = top_p if 0.0 < top_p < 1.0 else 1.0
    return {"do_sample": True, "num_beams": 1, "temperature": temperature, "top_k": top_k, "top_p": top_p}


__all__ = ["generate_kwargs"]
