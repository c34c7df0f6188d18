"""The automatic QA checks' sink (server/qacapture.py) on the runtime's sample batches.

A 2 000-source plant (100 sources a device, 1 Hz polls) in which every source has a
calibration status tag and two automatic checks (zero and span): 4 000 watches. The
runtime hands sinks the polls of 50 ms at once: about 1/20 of the devices, here one
device's poll (701 readings). Measured: `QaCapture` taking such a batch while no analyser
calibrates (the common case) and while every source of the device does, against the tag
store's append of the same batch in the same run (what the ingest does with every block).
Target: the sink costs about as much as the append, not a Python loop over all watches.

With `--benchmark-disable` (make test) every case runs once, as a correctness check.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from bench.test_calibration_flag import with_calibration_tags
from bench.test_real_minute import plant_dict
from compute.tagstore import TagStore
from model.records import SampleBlock, TagTable
from server.config import PlantConfig, parse_config
from server.qacapture import QaCapture

N_SRC = 2_000
T0 = 1_796_544_000.0  # 2026-12-06T08:00Z


@functools.cache
def config() -> PlantConfig:
    """The plant, every source with a zero (phase 1) and a span (phase 2) check."""
    d = with_calibration_tags(plant_dict(N_SRC))
    for unit in d["units"]:
        for src in unit["sources"]:
            co2 = f"{src['id'].lower()}_co2"
            src["qa"]["auto"] = [
                {"parameter": "co2", "check": "zero", "reading_tag": co2, "reference_value": 0.0,
                 "full_scale": 25.0, "unit": "%", "phase_value": 1},
                {"parameter": "co2", "check": "span", "reading_tag": co2,
                 "reference_value": 15.0, "full_scale": 25.0, "unit": "%", "phase_value": 2}]
    return parse_config(d, "bench/test_qacapture.py")


def batch(table: TagTable, t: float, status: float) -> SampleBlock:
    """One poll of the first device: its tags, the status tags reading `status`."""
    dev = config().devices[0]
    rows = table.rows([tag.id for tag in dev.tags])
    values = np.full(len(rows), 12.0)
    values[[i for i, tag in enumerate(dev.tags) if tag.id.endswith("_cal")]] = status
    return SampleBlock.of_poll(table, t, rows, values, np.zeros(len(rows), np.uint8))


async def _enter(user: str, body: Any) -> dict[str, Any]:
    raise AssertionError("no check ends in the measured batches")


@pytest.mark.parametrize("case", ["store append", "sink, idle", "sink, calibrating"])
def test_qa_capture_batch(benchmark: Any, case: str) -> None:
    """One 50-ms batch into the tag store, or into the sink."""
    cfg = config()
    table = TagTable(cfg.tag_ids())
    benchmark.group = f"a 50-ms batch, {N_SRC:,} sources with 2 automatic checks each"
    sink = QaCapture(cfg, _enter)
    assert len(sink.watches) == 2 * N_SRC
    status = 2.0 if case == "sink, calibrating" else 0.0
    clock = iter(T0 + 0.05 * i for i in range(10**7))
    if case == "store append":
        store = TagStore(table.ids, 64)

        def run() -> None:
            store.append_block(batch_of(next(clock)))
    else:
        def run() -> None:
            sink._take(batch_of(next(clock)))

    proto = batch(table, T0, status)

    def batch_of(t: float) -> SampleBlock:
        # re-stamped, not rebuilt: the measured work is the store's or the sink's
        return SampleBlock(table, np.full(len(proto), t), proto.rows, proto.values, proto.flags)

    benchmark.pedantic(run, rounds=200, iterations=1, warmup_rounds=5)
    active = sum(w.active for w in sink.watches)
    # calibrating: the device's 100 sources' span checks run (their zero checks do not)
    assert active == (100 if case == "sink, calibrating" else 0)
