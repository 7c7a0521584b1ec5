"""Run an iterator in a background thread, a few items ahead of its consumer (bounded memory).

The extract's reading and validating (source I/O, polars parsing and pandera, which release the GIL) then
overlap the warehouse's COPY of the previous batch. Closing the consumer's generator stops the producer and
closes the source iterator in its own thread (a PostgreSQL COPY is cancelled there, not left streaming).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Producer(threading.Thread):
    def __init__(self, items: Iterable, depth: int) -> None:
        super().__init__(name="ndc-prefetch", daemon=True)
        self.items, self.ahead, self.stop = items, queue.Queue(maxsize=depth), threading.Event()

    def put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        iterator = iter(self.items)
        try:
            for item in iterator:
                if not self.put(item):
                    break
            else:
                self.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self.put(_Failed(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` as produced by a thread that stays at most ``depth`` items ahead."""
    producer = _Producer(items, depth)
    producer.start()
    try:
        while True:
            item = producer.ahead.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        producer.stop.set()
        producer.join()
