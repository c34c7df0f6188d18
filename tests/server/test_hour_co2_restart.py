"""After a restart the factor-method units' stored hours are in the running totals again."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.config import parse_plant
from server.runtime import Runtime
from tests.fixtures.boundaries import period, unit_period
from tests.test_demo_steel import LK_HOUR_T, REPO, hand, steel_dict


async def test_stored_hours_of_a_factor_unit_seed_its_today_and_year(tmp_path: Path) -> None:
    runtime = Runtime(parse_plant(steel_dict(tmp_path), "demo-steel.yaml", REPO / "config"))
    clock, historian = runtime.clock, runtime.historian
    now = datetime.now(UTC)
    d0, y0 = clock.day_start(now), clock.year_start(now)
    hour = timedelta(seconds=60 * 0.5)  # 0.5-s minutes
    # The kiln's first hour of today, and the last one of yesterday when that is this year.
    stored = [(d0, LK_HOUR_T)] + ([(d0 - hour, 20.0)] if d0 > y0 else [])
    await historian.start()
    try:
        for t, co2_t in stored:
            await historian.on_period(period("hour", t, t + hour, [unit_period("LK", t, co2_t)]))
        await runtime._seed_totals()
        await runtime._seed_hour_co2()
    finally:
        await historian.stop()
    # The next minute's sums: today the kiln's hour of today, the year both.
    lk = runtime.cycle.totals.add("LK.co2_kg", clock.minute_start(now), math.nan)
    assert lk.day == hand(LK_HOUR_T * 1000)
    assert lk.year == hand(sum(c for _, c in stored) * 1000)
    bf = runtime.cycle.totals.add("BF.co2_kg", clock.minute_start(now), math.nan)
    assert (bf.day, bf.year) == (0.0, 0.0)  # nothing stored of the blast furnace
