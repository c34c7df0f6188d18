"""The tag store: memory against its payload, and appending polls (issue 12).

10 000 tags (100 devices of 100 tags) × 1 h at 1 Hz, as the issue measured it. The
payload is what the samples are: a float64 value and a flag byte each, and one float64
time per poll. Target: the store holds it in at most 1.3× the payload. The append case
writes a poll per device the way the drivers' blocks arrive, against a numpy baseline of
the same writes into preallocated arrays (one slice assignment per array).

With `--benchmark-disable` (make test) every case runs once, as a correctness check.
"""

from __future__ import annotations

import numpy as np

from compute.tagstore import TagStore
from model.records import SampleBlock, TagTable

DEVICES = 100
TAGS_PER_DEVICE = 100
POLLS = 3600  # 1 h at 1 Hz
T0 = 1_796_544_000.0  # 2026-12-06T08:00Z


def polls() -> tuple[TagTable, list[SampleBlock]]:
    """One poll of every device (rows, values, flags), to be re-stamped per second."""
    table = TagTable(tuple(f"d{d}.t{k}" for d in range(DEVICES)
                           for k in range(TAGS_PER_DEVICE)))
    rng = np.random.default_rng(3)
    blocks = [SampleBlock.of_poll(table, 0.0, np.arange(d * TAGS_PER_DEVICE,
                                                         (d + 1) * TAGS_PER_DEVICE,
                                                         dtype=np.int32),
                                  rng.random(TAGS_PER_DEVICE),
                                  np.zeros(TAGS_PER_DEVICE, np.uint8))
              for d in range(DEVICES)]
    return table, blocks


def test_an_hour_of_10k_tags_in_at_most_1_3_times_its_payload(benchmark) -> None:  # type: ignore[no-untyped-def]
    """Fill an hour; the store's bytes against the payload's."""
    table, blocks = polls()
    n = len(table)
    payload = n * POLLS * (8 + 1) + DEVICES * POLLS * 8
    stamped = [[SampleBlock(table, np.full(TAGS_PER_DEVICE, T0 + s), b.rows, b.values,
                            b.flags) for b in blocks] for s in range(POLLS)]

    def fill() -> TagStore:
        store = TagStore(table.ids, POLLS, groups=[TAGS_PER_DEVICE] * DEVICES)
        for second in stamped:
            for b in second:
                store.append_block(b)
        return store

    benchmark.group = "tag store, 10k tags x 1 h at 1 Hz"
    store = benchmark.pedantic(fill, rounds=2, iterations=1)
    ratio = store.nbytes / payload
    benchmark.extra_info.update(store_mb=round(store.nbytes / 2**20, 1),
                                payload_mb=round(payload / 2**20, 1), ratio=round(ratio, 3))
    print(f"\ntag store {store.nbytes / 2**20:.1f} MiB for a payload of "
          f"{payload / 2**20:.1f} MiB: {ratio:.3f}×")
    assert store.overflowed == 0
    w = store.take(T0, T0 + POLLS)
    assert w.counts.tolist() == [POLLS] * n  # every sample is there, in order
    assert w.values[TAGS_PER_DEVICE + 3, 17] == blocks[1].values[3]
    assert ratio <= 1.3


def test_numpy_baseline_of_the_same_writes(benchmark) -> None:  # type: ignore[no-untyped-def]
    """The same hour written into preallocated (poll, tag) arrays, a slice per poll."""
    table, blocks = polls()
    n = len(table)
    values = np.empty((POLLS, n))
    flags = np.empty((POLLS, n), np.uint8)
    times = np.empty((POLLS, DEVICES))

    def fill() -> None:
        for s in range(POLLS):
            for d, b in enumerate(blocks):
                a = d * TAGS_PER_DEVICE
                values[s, a:a + TAGS_PER_DEVICE] = b.values
                flags[s, a:a + TAGS_PER_DEVICE] = b.flags
                times[s, d] = T0 + s

    benchmark.group = "tag store, 10k tags x 1 h at 1 Hz"
    benchmark.pedantic(fill, rounds=2, iterations=1)
    assert values[17, TAGS_PER_DEVICE + 3] == blocks[1].values[3]
