"""InfluxDB durability (issue 11): kill -9 and outages of a real `carbonscada run` lose no
point the historian stored, and an hour open at a kill still gets its row.

Counting, not timing: every minute and raw sample in the historian is looked up in a real
VictoriaMetrics; duplicates may only repeat a value.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server import rawcodec
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from tests.fixtures.victoria import VictoriaMetrics
from tests.test_e2e import Plant, start_plant

# solo: it counts minutes lost within real seconds, which other workers would steal.
pytestmark = [pytest.mark.reliability, pytest.mark.solo]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def config(tmp: Path, vm_url: str, minute_s: float) -> dict[str, Any]:
    cfg = plant_dict(free_port(), opcua_port=free_port(), web_port=free_port(),
                     var_dir=str(tmp / "var"), minute_seconds=minute_s)
    cfg["site"]["timezone"] = "UTC"  # plant hours are then whole multiples of 60 minutes
    cfg["clock"]["min_samples_per_minute"] = 1
    cfg["opcua"]["enabled"] = False
    cfg["web"]["enabled"] = False
    # The default 5 s flush: a kill finds lines in memory that never reached the outbox.
    cfg["influx"] = {"url": vm_url, "outbox_path": str(tmp / "var" / "outbox.sqlite")}
    return cfg


def db(var: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{var / 'historian.sqlite'}?mode=ro", uri=True)


def stored_minutes(var: Path) -> int:
    try:
        with db(var) as con:
            return int(con.execute("SELECT count(*) FROM source_minute").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


async def wait_minutes(var: Path, n: int, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while stored_minutes(var) < n:
        assert time.monotonic() < deadline, f"fewer than {n} minutes stored in time"
        await asyncio.sleep(0.1)


def outbox_empty(var: Path) -> bool:
    with sqlite3.connect(var / "outbox.sqlite") as con:
        return bool(con.execute("SELECT count(*) FROM batches").fetchone()[0] == 0)


def historian_points(var: Path) -> tuple[dict[int, float | None],
                                         dict[tuple[str, int], float]]:
    """co2_kg by minute (ms) of S1 (None: invalid), and raw sample values by (tag, ms),
    from the historian."""
    with db(var) as con:
        minutes = dict(con.execute("SELECT t_ms, co2_kg FROM source_minute WHERE source='S1'"))
        samples: dict[tuple[str, int], float] = {}
        for row in con.execute("SELECT tags, counts, times, vals, flags FROM raw_window"):
            w = rawcodec.decode_row(*row)
            n = w.counts
            for i, tag in enumerate(w.tags):
                a = int(n[:i].sum())
                for ti, vi in zip(w.times[a:a + n[i]].tolist(), w.values[a:a + n[i]].tolist(),
                                  strict=True):
                    if math.isfinite(vi):  # NaN cannot be written: not owed
                        us = (datetime.fromtimestamp(ti, UTC) - EPOCH) // timedelta(
                            microseconds=1)
                        samples[(tag, us // 1000)] = vi
    return minutes, samples


def vm_points(vm: VictoriaMetrics, match: str, label: str | None
              ) -> tuple[dict[tuple[str, int], float], int]:
    """{(label value, ms): value} of the exported series, and how many duplicates there
    were; a duplicate with another value fails the test."""
    out: dict[tuple[str, int], float] = {}
    dups = 0
    for series in vm.export(match):
        key = series["metric"].get(label, "") if label else ""
        for ts, v in zip(series["timestamps"], series["values"], strict=True):
            if (key, ts) in out:
                dups += 1
                assert out[(key, ts)] == v, f"duplicate of {key} at {ts} changes {out} → {v}"
            out[(key, ts)] = v
    return out, dups


async def drain_and_stop(plant: Plant, var: Path) -> None:
    deadline = time.monotonic() + 20
    while not outbox_empty(var):
        assert time.monotonic() < deadline, "outbox not drained"
        await asyncio.sleep(0.2)
    assert await plant.stop() == 0


def assert_nothing_lost(var: Path, vm: VictoriaMetrics) -> dict[str, int]:
    minutes, samples = historian_points(var)
    # Every minute is owed its line: `valid` is in each (an invalid minute has no co2_kg,
    # its value NULL in the historian, so presence is looked up by `valid`).
    got_valid, dup_m = vm_points(vm, 'co2_source_valid{source="S1"}', None)
    got_minutes, _ = vm_points(vm, 'co2_source_co2_kg{source="S1"}', None)
    got_samples, dup_s = vm_points(vm, "sample_value", "tag")
    lost_minutes = [t for t in minutes if ("", t) not in got_valid]
    lost_samples = [k for k in samples if k not in got_samples]
    # VictoriaMetrics keeps about 15 significant digits of a float64.
    changed = [(t, v, got_minutes.get(("", t))) for t, v in minutes.items()
               if v is not None and got_minutes.get(("", t)) != pytest.approx(v, rel=1e-12)]
    assert (len(lost_minutes), len(lost_samples), len(changed)) == (0, 0, 0), (
        f"lost {len(lost_minutes)} of {len(minutes)} minutes, {len(lost_samples)} of "
        f"{len(samples)} samples; {len(changed)} minutes differ: {changed[:3]}")
    return {"minutes": len(minutes), "samples": len(samples), "dup_minutes": dup_m,
            "dup_samples": dup_s}


async def test_kill_9_loses_no_stored_point(tmp_path: Path,
                                            victoria_metrics: VictoriaMetrics) -> None:
    cfg = config(tmp_path, victoria_metrics.url, minute_s=1.0)
    var = tmp_path / "var"
    logs = []
    for cycle in range(3):
        plant = await start_plant(cfg, tmp_path)
        await wait_minutes(var, 3 * cycle + 3)
        # Mid-way between two 5 s flushes: lines of the last minutes are in memory only.
        await asyncio.sleep(2.5)
        plant.proc.send_signal(signal.SIGKILL)
        await plant.stop()
        assert "Traceback" not in "".join(plant.lines)
        logs.append("".join(plant.lines))
    plant = await start_plant(cfg, tmp_path)
    await plant.wait_for_line(r"first minute", timeout=40)
    await drain_and_stop(plant, var)
    out = "".join(plant.lines)
    assert "Traceback" not in out
    refills = sum("InfluxDB outbox refilled from the historian" in x for x in [*logs[1:], out])
    counts = assert_nothing_lost(var, victoria_metrics)
    print(f"\nkill -9 ×3: {counts}, {refills} starts refilled the outbox")
    assert refills >= 1  # the kills did find lines in memory only


async def test_victoria_outage_loses_nothing(tmp_path: Path,
                                             victoria_metrics: VictoriaMetrics) -> None:
    cfg = config(tmp_path, victoria_metrics.url, minute_s=1.0)
    cfg["influx"]["flush_interval_s"] = 0.5
    var = tmp_path / "var"
    plant = await start_plant(cfg, tmp_path)
    try:
        await wait_minutes(var, 3)
        victoria_metrics.stop()
        down = stored_minutes(var)
        await wait_minutes(var, down + 15)  # 15 minutes of the plant's clock without it
        victoria_metrics.start()  # same port, same data directory
        await plant.wait_for_line("InfluxDB reachable again", timeout=40)
        await asyncio.sleep(1.0)
    finally:
        await drain_and_stop(plant, var)
    out = "".join(plant.lines)
    assert out.count("InfluxDB write to") == 1  # the outage is logged once
    counts = assert_nothing_lost(var, victoria_metrics)
    print(f"\noutage of 15 minutes: {counts}")


async def test_open_hour_closed_after_kill(tmp_path: Path,
                                           victoria_metrics: VictoriaMetrics) -> None:
    # 0.5 s minutes: an hour is 30 s. Killed inside the first hour of a new historian,
    # restarted in the next: the first hour still gets its row.
    minute_s = 0.5
    hour_s = 60 * minute_s
    cfg = config(tmp_path, victoria_metrics.url, minute_s=minute_s)
    var = tmp_path / "var"
    # Start (about 4 s) and 4 minutes (2 s) must fit in what is left of the hour.
    if time.time() % hour_s > hour_s - 12:
        await asyncio.sleep(hour_s - time.time() % hour_s + 0.1)
    plant = await start_plant(cfg, tmp_path)
    await wait_minutes(var, 4)
    hour_ms = int(time.time() // hour_s * hour_s * 1000)
    plant.proc.send_signal(signal.SIGKILL)
    await plant.stop()
    with db(var) as con:
        first_ms = con.execute("SELECT MIN(t_ms) FROM source_minute").fetchone()[0]
        assert con.execute("SELECT count(*) FROM period").fetchone()[0] == 0
    assert first_ms >= hour_ms, "the kill came after the first hour ended; rerun"
    await asyncio.sleep(hour_ms / 1000 + hour_s - time.time() + 0.2)  # into the next hour
    plant = await start_plant(cfg, tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            with db(var) as con:
                row = con.execute("SELECT n_valid, n_missing FROM source_hour WHERE t_ms = ?",
                                  (hour_ms,)).fetchone()
            if row is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await plant.stop()
    assert row is not None, "the hour open at the kill never got its row"
    assert row[0] >= 4
