from __future__ import annotations

import numpy as np

from compute.tagstore import TagStore


def test_take_returns_the_minute_and_keeps_later_samples() -> None:
    store = TagStore(["a", "b"], capacity=16)
    for t in (58.0, 60.0, 61.0, 119.9, 120.0, 121.0):
        store.append(0, t, t * 2, 0)
    store.append(1, 90.0, 5.0, 3)
    w = store.take(60.0, 120.0)
    assert w.counts.tolist() == [3, 1]
    assert w.values[0, :3].tolist() == [120.0, 122.0, 239.8]
    assert w.flags[1, 0] == 3
    assert store.late == 1  # the sample at 58 s arrived after its minute was taken
    w2 = store.take(120.0, 180.0)
    assert w2.counts.tolist() == [2, 0]
    assert w2.values[0, :2].tolist() == [240.0, 242.0]


def test_overflow_drops_oldest_half_and_counts_it() -> None:
    store = TagStore(["a"], capacity=8)
    for i in range(10):
        store.append(0, float(i), float(i), 0)
    assert store.overflowed == 4
    w = store.take(0.0, 100.0)
    assert w.values[0, : w.counts[0]].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]


def test_empty_store_gives_nan_padded_window() -> None:
    w = TagStore(["a"], capacity=8).take(0.0, 60.0)
    assert w.counts.tolist() == [0] and np.isnan(w.values[0, 0])
