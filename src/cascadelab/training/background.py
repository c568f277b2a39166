"""Run a function in a spawned process while this one works, and collect its result or its error."""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


class BackgroundCall:
    """`fn(*args)` in a spawned process (its own interpreter and torch threads); `result()` waits for it.

    A fresh interpreter rather than a fork: forking a process whose OpenMP pool has run is unsafe. As
    with any spawned process, `fn` must be importable by name and the calling script must guard its
    entry point with ``if __name__ == "__main__":``.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_call_and_send, args=(sender, fn, args), daemon=True)
        self._process.start()
        sender.close()  # the child holds the only sending end: EOF here if it dies

    def result(self) -> Any:
        """The call's return value; its exception (with the child's traceback) re-raised as RuntimeError."""
        try:
            ok, payload = self._receiver.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"background process died (exit code {self._process.exitcode})") from None
        self._process.join()
        if not ok:
            raise RuntimeError(f"background process failed:\n{payload}")
        return payload

    def stop(self) -> None:
        """End the process if it is still running (after an error on this side)."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._receiver.close()


def _call_and_send(sender: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        sender.send((True, fn(*args)))
    except BaseException:
        sender.send((False, traceback.format_exc()))
    finally:
        sender.close()
