"""The read-ahead used for source streams: order, bounded memory, errors and early stops."""

import threading
import time

import pytest

from dw_platform.lib.prefetch import prefetch


def test_prefetch_yields_every_item_in_order():
    assert list(prefetch(iter(range(1000)), depth=3)) == list(range(1000))


def test_prefetch_reads_at_most_depth_items_ahead():
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield i

    stream = prefetch(source(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # let the worker run as far ahead as it may
    # one item handed out, `depth` in the queue, and one the worker holds while the queue is full
    assert len(produced) <= 1 + 2 + 1
    stream.close()


def test_an_error_in_the_source_is_raised_in_the_consumer_after_the_good_items():
    def source():
        yield 1
        yield 2
        raise ValueError("source broke")

    stream = prefetch(source())
    assert next(stream) == 1 and next(stream) == 2
    with pytest.raises(ValueError, match="source broke"):
        next(stream)


def test_a_consumer_that_stops_early_stops_the_worker_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    stream = prefetch(source(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert closed.wait(timeout=5)
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())
