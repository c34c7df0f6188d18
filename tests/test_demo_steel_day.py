"""A whole plant day of the steel demo, recalculated by `carbonscada recalc` bit for bit.

At 0.1-s minutes a plant day lasts 144 s. The plant's scaled clock runs from an anchor in
2026, so the minute's length sets where in the plant day the wall clock falls: the test
picks a minute of 0.1 to 0.2 s, in whole milliseconds, at which a plant day begins soon
after the demo has started, runs config/demo-steel.yaml through that day, exports the raw
samples and recalculates them as an auditor would. Every row `recalc --level day` writes
for that day (sources, streams, units) equals the row the stored day makes, character for
character: the CSV carries each float's repr.
"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml

from compute.clock import PlantClock
from server.config import parse_plant
from server.historian import Historian
from server.recalc import ResultFiles, result_paths, write_records
from server.runtime import Runtime
from tests.test_demo_steel import BF_HOUR_T, CARBONSCADA, LK_HOUR_T, REPO, hand, steel_dict

STARTUP_S = 15.0  # from choosing the minute to the demo's first calculated minute, at most
TIMEZONE = "Asia/Shanghai"


def minute_for_a_day_starting(after: datetime) -> tuple[float, datetime]:
    """The minute length, 0.1 to 0.2 s in whole ms (the historian keeps ms), whose next
    plant day after `after` ends soonest; with that day's start (UTC)."""
    def day_of(ms: int) -> datetime:
        day_s = 24 * 60 * ms / 1000
        return PlantClock(ms / 1000, TIMEZONE).day_start(after) + timedelta(seconds=day_s)

    ms = min(range(100, 200), key=lambda ms: day_of(ms) + timedelta(seconds=1.44 * ms))
    return ms / 1000, day_of(ms)


def rows(files: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """CSV texts by kind, read back as rows."""
    return {k: list(csv.DictReader(io.StringIO(text))) for k, text in files.items()}


@pytest.mark.long
@pytest.mark.timeout(420)  # a plant day is 2.4 min, the recalculation ~1 min
async def test_a_day_of_the_steel_demo_recalculates_bit_for_bit(tmp_path: Path) -> None:
    data = steel_dict(tmp_path)
    for dev in data["devices"]:
        if dev["protocol"] == "modbus_tcp":
            dev["poll_interval_s"] = 0.02  # ~5 samples in each 0.1-s minute
    minute_s, day = minute_for_a_day_starting(datetime.now(UTC) + timedelta(seconds=STARTUP_S))
    # One sample a minute is enough here: the meters on the 2400-baud bus answer every
    # 2 s, and the rates of the Modbus devices are constants.
    data["clock"] = {"minute_seconds": minute_s, "min_samples_per_minute": 1}
    day_end = day + timedelta(seconds=24 * 60 * minute_s)
    loaded = parse_plant(data, "demo-steel.yaml (ports moved, 0.1-s minutes)", REPO / "config")
    runtime = Runtime(loaded)
    base = f"http://127.0.0.1:{data['web']['port']}/api/v1"
    await runtime.start()
    try:
        async with asyncio.timeout(STARTUP_S):
            while runtime.monitor.minutes_published == 0:
                await asyncio.sleep(0.02)
        monitor = runtime.monitor
        first_s = monitor.last_minute_end_s - monitor.minutes_published * minute_s
        assert first_s <= day.timestamp(), (first_s, day)  # the day's minutes all calculated
        async with aiohttp.ClientSession() as http:
            # The day closes with the first minute of the next, then the grace of 2 s.
            wait_s = (day_end - datetime.now(UTC)).total_seconds() + 30
            async with asyncio.timeout(wait_s):
                while True:
                    async with http.get(f"{base}/units/BF/days", params={
                            "from": day.isoformat(), "to": day_end.isoformat()}) as r:
                        assert r.status == 200, await r.text()
                        if await r.json():
                            break
                    await asyncio.sleep(1.0)
    finally:
        await runtime.stop()
    historian = Historian(str(tmp_path / "historian.sqlite"))
    await historian.start()
    try:
        (stored,) = await historian.periods("day", day, day_end)
    finally:
        await historian.stop()
    assert stored.t == day
    units = {u.unit: u for u in stored.units}
    # The day's hours had constant rates: the blast furnace's carbon balance is 24 of its
    # hours (an incomplete hour counts the mean of the others), the kiln's CO2 one hour's
    # for each hour its streams have.
    assert units["BF"].valid and units["BF"].co2_t == hand(24 * BF_HOUR_T)
    lime = next(s for s in stored.streams if s.stream == "LK_lime")
    assert lime.n_valid >= 20 and units["LK"].valid
    assert units["LK"].co2_t == hand(lime.n_valid * LK_HOUR_T)

    plant = tmp_path / "demo-steel.yaml"
    plant.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    samples = tmp_path / "samples.csv"
    export = subprocess.run([CARBONSCADA, "export-samples", "-c", str(plant), "--from",
                             (day - timedelta(seconds=60 * minute_s)).isoformat(), "--to",
                             day_end.isoformat(), "--out", str(samples)],
                            capture_output=True, text=True, timeout=180, check=False)
    assert export.returncode == 0, export.stderr
    out = tmp_path / "recalc.csv"
    recalc = subprocess.run([CARBONSCADA, "recalc", "-c", str(plant), "--samples",
                             str(samples), "--out", str(out), "--level", "day"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert recalc.returncode == 0, recalc.stderr
    paths = {"sources": out, **{k: p for k, p in result_paths(out).items()
                                if k != "allowance"}}
    again = rows({k: p.read_text(encoding="utf-8") for k, p in paths.items()})
    bufs = {k: io.StringIO() for k in paths}
    write_records(ResultFiles(**bufs), loaded.plan(), [stored], "day")
    want = rows({k: b.getvalue() for k, b in bufs.items()})
    for kind, key in (("sources", "source"), ("streams", "stream"), ("units", "unit")):
        assert want[kind], kind
        got = [r for r in again[kind] if r["period_start"] == want[kind][0]["period_start"]]
        # The historian returns a day's records in its own order: compare them by name.
        assert sorted(got, key=lambda r: r[key]) == sorted(want[kind], key=lambda r: r[key])
