"""A bounded read-ahead: produce a stream in a worker thread while the caller consumes it."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class _End:
    error: BaseException | None


def prefetch(source: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield the items of `source`, reading at most `depth` items ahead in a worker thread.

    Pays off when producing waits outside the GIL (a driver fetching from the network) while
    the consumer works (COPY to the warehouse): both run at once and memory stays bounded.
    An error in `source` is raised in the consumer; a consumer that stops early stops the worker.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_End(None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_End(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        worker.join()
