"""An annual emission report of a year of stored days and hours (issue 16): building its
tables and writing the workbook, next to reading the same year back from the historian in
the same run (the baseline: what any report of the year costs at least).

The year is the worked day of tests/server/test_reports.py (one stack, coal and a power
meter, one unit) repeated 365 times: 365 day and 8 760 hour records. Both run in a worker
thread in the server (the historian's own thread, then asyncio.to_thread), never on the
event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from compute.clock import PlantClock
from model.records import PeriodRecords
from server.config import parse_plant
from server.historian import Historian
from server.reports.tables import ReportData, emission_report
from server.reports.writers import to_xlsx
from tests.compute.test_periods import DAY0
from tests.server.test_reports import plant_data, worked_records


def _shift(rec: PeriodRecords, dt: timedelta) -> PeriodRecords:
    def move(x: Any) -> Any:
        changes = {"t": x.t + dt}
        if hasattr(x, "t_end"):
            changes["t_end"] = x.t_end + dt
        return dataclasses.replace(x, **changes)
    return dataclasses.replace(rec, t=rec.t + dt, t_end=rec.t_end + dt,
                               sources=tuple(move(s) for s in rec.sources),
                               streams=tuple(move(s) for s in rec.streams),
                               units=tuple(move(u) for u in rec.units))


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    tmp = tmp_path_factory.mktemp("reports")
    plant = parse_plant(plant_data(tmp), "plant.yaml")
    one = [r for r in worked_records(plant) if r.t < DAY0 + timedelta(days=1)]
    recs = [_shift(r, timedelta(days=d)) for d in range(365) for r in one]

    async def fill() -> None:
        h = Historian(plant.config.historian.path)
        await h.start()
        for r in recs:
            await h.on_period(r)
        await h.stop()
    asyncio.run(fill())
    return plant, plant.plan().factors, Path(plant.config.historian.path)


def _read(path: Path) -> ReportData:
    async def read() -> ReportData:
        h = Historian(path)
        await h.start()
        try:
            end = DAY0 + timedelta(days=365)
            return ReportData(await h.periods("day", DAY0, end),
                              await h.periods("hour", DAY0, end))
        finally:
            await h.stop()
    return asyncio.run(read())


def test_read_a_year_baseline(benchmark: Any, year: tuple[Any, Any, Path]) -> None:
    data = benchmark.pedantic(_read, args=(year[2],), rounds=3, iterations=1)
    assert (len(data.days), len(data.hours)) == (365, 8760)


def test_annual_report_of_a_year(benchmark: Any, year: tuple[Any, Any, Path]) -> None:
    plant, factors, path = year
    data = _read(path)
    cfg = plant.config
    clock = PlantClock(cfg.clock.minute_seconds, cfg.site.timezone)

    def build() -> bytes:
        rep = emission_report("annual", cfg, clock, "year", DAY0, DAY0 + timedelta(days=365),
                              data, factors)
        return to_xlsx(rep)
    body = benchmark.pedantic(build, rounds=3, iterations=1)
    assert body[:2] == b"PK"

