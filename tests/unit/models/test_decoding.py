"""Decoding settings in the seed's terms, mapped to generate() arguments."""

from cascadelab.models.decoding import generate_kwargs


def test_temperature_zero_is_greedy_and_beams_turn_sampling_off():
    assert generate_kwargs(0.0, 50, 0.9, num_beams=1) == {"do_sample": False, "num_beams": 1}
    assert generate_kwargs(0.8, 50, 0.9, num_beams=4) == {"do_sample": False, "num_beams": 4}


def test_sampling_keeps_top_k_and_turns_an_out_of_range_top_p_off():
    sample = {"do_sample": True, "num_beams": 1, "temperature": 0.7, "top_k": 5}
    assert generate_kwargs(0.7, 5, 0.9, num_beams=1) == {**sample, "top_p": 0.9}
    assert generate_kwargs(0.7, 5, 0.0, num_beams=1) == {**sample, "top_p": 1.0}  # the seed's 0.0 means off
    assert generate_kwargs(0.7, 5, 1.5, num_beams=1) == {**sample, "top_p": 1.0}
