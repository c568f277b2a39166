"""BackgroundCall: a function's result, error and death in a spawned process reach the caller."""

from __future__ import annotations

import math
import os

import pytest

from cascadelab.training.background import BackgroundCall


def test_result_error_and_death_of_the_background_process_reach_the_caller() -> None:
    calls = [BackgroundCall(math.factorial, 5), BackgroundCall(math.factorial, -1), BackgroundCall(os._exit, 3)]
    assert calls[0].result() == 120
    with pytest.raises(RuntimeError, match=r"(?s)^background process failed:\n.*ValueError: factorial\(\)"):
        calls[1].result()
    with pytest.raises(RuntimeError, match=r"^background process died \(exit code 3\)$"):
        calls[2].result()
    for call in calls:
        call.stop()


def test_stop_ends_a_running_process() -> None:
    call = BackgroundCall(math.factorial, 10**7)  # seconds of work
    call.stop()
    assert not call._process.is_alive() and call._process.exitcode is not None
