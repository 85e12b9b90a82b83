"""The worker's garbage-collection pauses are exported (``watch_gc``): the figure behind --gc-freeze."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from streams.metrics import watch_gc


def test_each_collection_adds_its_pause_and_the_longest_is_kept() -> None:
    watch_gc()
    try:
        before = REGISTRY.get_sample_value("quartier_gc_pause_seconds_total", {"generation": "2"}) or 0.0
        garbage = [[i] for i in range(200_000)]  # a full collection has something to walk
        gc.collect()
        after = REGISTRY.get_sample_value("quartier_gc_pause_seconds_total", {"generation": "2"})
        longest = REGISTRY.get_sample_value("quartier_gc_pause_max_seconds", {"generation": "2"})
        assert after is not None and longest is not None
        assert after > before and 0 < longest <= after
        del garbage
    finally:
        gc.callbacks.pop()
