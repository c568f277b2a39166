"""The batch pipeline around a batch iterator: background prefetch and a counted fallback source.

:class:`Prefetcher` builds batches in a background thread into a bounded queue, in the order the
source yields them, so prefetching changes no batch. :class:`FallbackSource` draws from a primary
source (e.g. a streaming dataset) and, when it raises, from the fallback (the local corpus) for the
rest of the run, counting the fallback.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetcher(Generic[T]):
    """Iterate `source` through a background thread and a queue of at most `depth` items."""

    def __init__(self, source: Iterable[T], depth: int = 8) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.delivered = 0
        self._thread = threading.Thread(target=self._fill, args=(iter(source),), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        """Queue `item` unless the consumer closed the pipeline first; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            self._queue.put(_DONE)  # later calls also stop
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        self.delivered += 1
        return item

    def close(self) -> None:
        """Stop the background thread (it may be blocked on a full queue)."""
        self._stop.set()
        self._thread.join(timeout=5)


class FallbackSource(Generic[T]):
    """Items from `primary` until it fails, then from `fallback`; `fallbacks` counts the switches."""

    def __init__(self, primary: Iterable[T], fallback: Iterable[T]) -> None:
        self._primary: Iterator[T] | None = iter(primary)
        self._fallback = iter(fallback)
        self.fallbacks = 0
        self.last_error: str | None = None

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._primary is not None:
            try:
                return next(self._primary)
            except StopIteration:
                raise
            except Exception as error:
                self.fallbacks += 1
                self.last_error = f"{type(error).__name__}: {error}"
                self._primary = None
        return next(self._fallback)
