from __future__ import annotations

import math

import numpy as np

from compute.tagstore import TagStore
from model.records import SampleBlock, TagTable


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


def test_overflow_drops_the_oldest_samples_and_counts_them() -> None:
    # A ring: what does not fit is the oldest poll, one at a time (the shifting store
    # before it dropped the oldest half at once, 4 samples here instead of 2).
    store = TagStore(["a"], capacity=8)
    for i in range(10):
        store.append(0, float(i), float(i), 0)
    assert store.overflowed == 2
    w = store.take(0.0, 100.0)
    assert w.values[0, : w.counts[0]].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]


def test_empty_store_gives_nan_padded_window() -> None:
    w = TagStore(["a"], capacity=8).take(0.0, 60.0)
    assert w.counts.tolist() == [0] and np.isnan(w.values[0, 0])


def poll(table: TagTable, t: float, rows: list[int], values: list[float],
         flags: list[int] | None = None) -> SampleBlock:
    """The block of one poll of `rows`."""
    return SampleBlock.of_poll(table, t, np.array(rows, np.int32), np.array(values),
                               np.array(flags or [0] * len(rows), np.uint8))


def test_groups_share_one_time_per_poll_and_a_ring_wraps_in_order() -> None:
    table = TagTable(("d1.a", "d1.b", "d2.x"))
    store = TagStore(table.ids, capacity=4, groups=[2, 1])
    for k in range(7):  # 7 polls of d1 through a 4-slot ring: wraps, drops the oldest 3
        store.append_block(poll(table, 60.0 + k, [0, 1], [k, 10.0 + k]))
    store.append_block(poll(table, 61.5, [2], [5.0], [3]))
    assert store.overflowed == 3 * 2
    w = store.take(60.0, 66.0)
    assert w.counts.tolist() == [3, 3, 1]
    assert w.values[0, :3].tolist() == [3.0, 4.0, 5.0]
    assert w.values[1, :3].tolist() == [13.0, 14.0, 15.0]
    assert w.times[1, :3].tolist() == [63.0, 64.0, 65.0]
    assert (w.values[2, 0], int(w.flags[2, 0])) == (5.0, 3)
    rest = store.take(66.0, 120.0)
    assert rest.counts.tolist() == [1, 1, 0] and rest.values[0, 0] == 6.0


def test_a_tag_a_poll_did_not_read_is_nan_flagged_b() -> None:
    table = TagTable(("a", "b"))
    store = TagStore(table.ids, capacity=8, groups=[2])
    store.append_block(poll(table, 60.0, [1], [7.0]))
    w = store.take(60.0, 120.0)
    assert w.counts.tolist() == [1, 1]
    assert np.isnan(w.values[0, 0]) and int(w.flags[0, 0]) == 3  # B
    assert w.values[1, 0] == 7.0


def test_polled_past_waits_for_every_group() -> None:
    table = TagTable(("a", "b", "c"))
    store = TagStore(table.ids, capacity=8, groups=[2, 1])
    store.append_block(poll(table, 120.5, [0, 1], [1.0, 2.0]))
    assert not store.polled_past(120.0)
    store.append_block(poll(table, 119.0, [2], [3.0]))
    assert not store.polled_past(120.0)
    store.append_block(poll(table, 121.0, [2], [3.0]))
    assert store.polled_past(120.0)


def test_a_block_appended_during_a_take_waits_for_the_next_append() -> None:
    table = TagTable(("a",))
    store = TagStore(table.ids, capacity=8)
    with store._lock:  # what a take in the worker thread holds
        store.append_block(poll(table, 61.0, [0], [1.0]))  # must not block the loop
    store.append_block(poll(table, 62.0, [0], [2.0]))
    w = store.take(60.0, 120.0)
    assert w.values[0, :2].tolist() == [1.0, 2.0]


def test_groups_must_partition_the_tags() -> None:
    import pytest

    from model.errors import InvalidValueError
    with pytest.raises(InvalidValueError, match="do not partition 3 tags"):
        TagStore(["a", "b", "c"], 8, groups=[2])


def test_newest_reading_of_each_tag_outlives_the_take() -> None:
    # Two devices: rows 0-1 and 2-4. The HMI reads a device's newest readings at any time,
    # from the ring, and after a minute's take emptied the ring, from what the take kept.
    store = TagStore(["a", "b", "c", "d", "e"], 8, groups=[2, 3])
    t, v, f = store.newest(0, 2)
    assert t.tolist() == [-np.inf, -np.inf] and np.isnan(v).all() and f.tolist() == [3, 3]
    store.append(0, 10.0, 1.5, 0)
    store.append(1, 10.0, 2.5, 0)
    store.append(0, 11.0, 1.75, 2)  # the next poll read only "a", over range
    store.append(3, 12.0, 42.0, 0)
    t, v, f = store.newest(0, 2)  # from the ring
    assert t.tolist() == [11.0, 11.0] and v[0] == 1.75 and math.isnan(v[1])
    assert f.tolist() == [2, 3]
    store.take(0.0, 10.5)  # the ring keeps the poll of 11 s
    assert store.newest(0, 1)[1].tolist() == [1.75]
    store.take(0.0, 20.0)  # every ring empty now
    t, v, f = store.newest(0, 2)
    assert t.tolist() == [11.0, 11.0] and v[0] == 1.75 and np.isnan(v[1])
    assert f.tolist() == [2, 3]  # "b" was not read by the newest poll: no reading, flag B
    t, v, f = store.newest(2, 5)
    assert t.tolist() == [12.0, 12.0, 12.0] and v[1] == 42.0 and f.tolist() == [3, 0, 3]
    v[1] = 0.0  # a copy: the caller cannot change the store
    assert store.newest(3, 4)[1].tolist() == [42.0]
    store.append(0, 13.0, 1.25, 0)  # a new poll after the take: from the ring again
    assert store.newest(0, 1)[0].tolist() == [13.0] and store.newest(0, 1)[1][0] == 1.25
