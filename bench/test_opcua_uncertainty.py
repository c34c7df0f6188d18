"""OPC UA: the sources' CO2RelUncertainty at start-up, and a closed hour with the units'
and the site's uncertainty (issue 15), on a plant of 10 000 sources (100 units).

Start-up, in the same run: the old path, one awaited `write_attribute_value` per source,
against the sink's path (`write_source_uncertainty`: `ValueWriter.write_nodes` in blocks
of 500 with a turn of the event loop between them). A closed hour: the
old path, one awaited `ValueWriter.write` per source's CO2Hour (without the totals),
against the new one, `OpcUaSink.on_period` (the units' and site's hour and year-to-date
uncertainty computed in a worker thread, then one block with the CO2Hour values).

Each round also records (extra_info max_loop_gap_ms) the longest time a probe task on the
event loop waited for its turn: what the step held the loop for.

With `--benchmark-disable` every case runs once at 200 sources, as a check.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua

from bench.test_real_minute import plant_dict
from model.flags import DataFlag
from model.records import PeriodRecords, PeriodResult
from server.config import parse_config
from server.opcua.layout import _GOOD, _ts
from server.opcua.sink import OpcUaSink
from server.opcua.uncertainty import write_source_uncertainty
from server.opcua.writer import ValueWriter
from tests.conftest import free_port

N_SOURCES = 10_000
T0 = datetime(2026, 12, 7, 3, tzinfo=UTC)
T1 = datetime(2026, 12, 7, 4, tzinfo=UTC)


def _sink(n_src: int) -> OpcUaSink:
    d = plant_dict(n_src)
    for dev in d["devices"]:
        for tag in dev["tags"]:
            tag["instrument"] = {"serial": tag["id"], "accuracy_pct": 1.5,
                                 "calibrated_on": "2026-11-01",
                                 "calibration_interval_days": 180}
    d["opcua"] = {"endpoint": f"opc.tcp://127.0.0.1:{free_port()}", "allow_none": True,
                  "anonymous": True, "trust_all_clients": True, "pki_dir": "var/pki"}
    return OpcUaSink(parse_config(d, "bench/test_opcua_uncertainty.py"))


async def _old_start(sink: OpcUaSink) -> None:
    server = sink.server
    assert server is not None
    now = _ts(datetime.now(UTC))
    for nid, u_pct in sink._layout.uncertainty:
        await server.iserver.write_attribute_value(nid, ua.DataValue(
            ua.Variant(math.nan if u_pct is None else u_pct, ua.VariantType.Double), _GOOD,
            ServerTimestamp=now, SourceTimestamp=now))


async def _new_start(sink: OpcUaSink) -> None:
    server = sink.server
    assert server is not None
    await write_source_uncertainty(ValueWriter(server), sink._layout, _ts(datetime.now(UTC)))


async def _probed(step: Coroutine[Any, Any, None], gaps: list[float]) -> None:
    """Run `step` while a probe task measures the longest gap between its turns."""
    done = False

    async def probe() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    try:
        await step
    finally:
        done = True
        await task


def _hour(n_src: int) -> PeriodRecords:
    return PeriodRecords("hour", T0, T1, tuple(
        PeriodResult(f"S{k}", T0, 12.0, 800_000.0, 1.0e5 + k, 100.0 + k % 7, 100.0 + k % 7,
                     True, DataFlag.N, 60) for k in range(n_src)), (), ())


async def _old_hour(sink: OpcUaSink, rec: PeriodRecords) -> None:
    writer = sink._writer
    assert writer is not None
    now = _ts(datetime.now(UTC))
    for src in rec.sources:
        await writer.write(sink._layout.hours[src.source], ua.DataValue(
            ua.Variant(src.co2_t, ua.VariantType.Double), _GOOD, SourceTimestamp=_ts(rec.t),
            ServerTimestamp=now))


async def _new_hour(sink: OpcUaSink, rec: PeriodRecords) -> None:
    await sink.on_period(rec)


@pytest.mark.parametrize("case", ["awaited", "bulk"])
def test_start_uncertainty(benchmark: Any, case: str) -> None:
    n = 200 if benchmark.disabled else N_SOURCES
    sink = _sink(n)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(sink.start())
    try:
        step = _old_start if case == "awaited" else _new_start
        gaps: list[float] = []
        benchmark.group = f"OPC UA start: sources' CO2RelUncertainty, {n} sources"
        benchmark.pedantic(lambda: loop.run_until_complete(_probed(step(sink), gaps)),
                           rounds=5, iterations=1)
        benchmark.extra_info["max_loop_gap_ms"] = round(1e3 * max(gaps), 2)
        print(f"\n{case}: max loop gap {1e3 * max(gaps):.2f} ms")
    finally:
        loop.run_until_complete(sink.stop())
        loop.close()


@pytest.mark.parametrize("case", ["awaited_no_totals", "on_period_with_totals"])
def test_closed_hour(benchmark: Any, case: str) -> None:
    n = 200 if benchmark.disabled else N_SOURCES
    sink = _sink(n)
    rec = _hour(n)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(sink.start())
    try:
        gaps: list[float] = []
        step = _old_hour if case == "awaited_no_totals" else _new_hour
        benchmark.group = f"OPC UA closed hour, {n} sources"
        benchmark.pedantic(lambda: loop.run_until_complete(_probed(step(sink, rec), gaps)),
                           rounds=5, iterations=1)
        benchmark.extra_info["max_loop_gap_ms"] = round(1e3 * max(gaps), 2)
        print(f"\n{case}: max loop gap {1e3 * max(gaps):.2f} ms")
    finally:
        loop.run_until_complete(sink.stop())
        loop.close()
