from __future__ import annotations

import dataclasses
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from server.historian import Historian
from server.records import (
    AllowancePosition,
    DataFlag,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    RawWindow,
    SiteMinute,
    SourceMinute,
    StreamPeriod,
    TagMinute,
    UnitMinute,
    UnitPeriod,
)

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def minute(t: datetime, co2_kg: float, flag: DataFlag = DataFlag.N) -> MinuteResult:
    src = SourceMinute(source="S1", unit="U1", t=t, flow_act_m3_h=1_080_000.0,
                       flow_std_dry_m3_h=835_718.9, co2_dry_pct=12.0, co2_mg_m3=235_680.0,
                       co2_rate_kg_h=co2_kg * 60, co2_kg=co2_kg, valid=flag is DataFlag.N,
                       flag=flag)
    unit = UnitMinute(unit="U1", t=t, output_mwh=10.0, co2_kg=co2_kg,
                      intensity_t_mwh=math.nan, valid=True, flag=DataFlag.N)
    site = SiteMinute(t=t, co2_kg=co2_kg, co2_today_t=0, co2_ytd_t=0, allowance_annual_t=0,
                      allowance_used_pct=math.nan, allowance_headroom_t=math.nan)
    tag = TagMinute("s1_co2", t, 12.0, 11.9, 12.1, 60, DataFlag.N)
    return MinuteResult(t=t, sources=(src,), units=(unit,), site=site, tags=(tag,))


async def test_minutes_are_stored_and_summed(tmp_path: Path) -> None:
    h = Historian(tmp_path / "var" / "h.sqlite")
    await h.start()
    try:
        for i, kg in enumerate([3282.70, 3000.0, 1.5]):
            await h.on_minute(minute(T0 + timedelta(minutes=i), kg))
        await h.on_minute(minute(T0 + timedelta(minutes=3), math.nan, DataFlag.B))
        later = T0 + timedelta(minutes=1)
        sums = await h.period_sums("source_minute", "co2_kg", (T0, later))
        assert sums == {"S1": (6284.2, 3001.5)}
        assert (await h.period_sums("unit_minute", "output_mwh", (T0,)))["U1"] == (40.0,)
        rows = await h.source_minutes("S1", T0, T0 + timedelta(minutes=10))
        assert [r["co2_kg"] for r in rows] == [3282.70, 3000.0, 1.5, None]
        assert rows[3]["flag"] is DataFlag.B and rows[3]["valid"] is False
        assert rows[0]["t"] == T0
    finally:
        await h.stop()
    with sqlite3.connect(tmp_path / "var" / "h.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT mean, count FROM tag_minute").fetchall()[0] == (12.0, 60)


async def test_rewriting_a_minute_replaces_it(tmp_path: Path) -> None:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        await h.on_minute(minute(T0, 1.0))
        await h.on_minute(minute(T0, 2.0))
        assert await h.period_sums("source_minute", "co2_kg", (T0,)) == {"S1": (2.0,)}
    finally:
        await h.stop()


async def test_a_historian_from_before_the_substitution_column_is_migrated(
        tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the source_minute table as first shipped
        db.execute("CREATE TABLE source_minute (source TEXT NOT NULL, unit TEXT NOT NULL,"
                   " t_ms INTEGER NOT NULL, flow_act_m3_h REAL, flow_std_dry_m3_h REAL,"
                   " co2_dry_pct REAL, co2_mg_m3 REAL, co2_rate_kg_h REAL, co2_kg REAL,"
                   " valid INTEGER NOT NULL, flag TEXT NOT NULL,"
                   " PRIMARY KEY (source, t_ms)) WITHOUT ROWID")
        db.execute("INSERT INTO source_minute VALUES ('S1','U1',0,1,1,1,1,1,7.5,1,'N')")
    h = Historian(path)
    await h.start()
    try:
        await h.on_minute(minute(T0, 3282.70))
        rows = await h.source_minutes("S1", datetime(1970, 1, 1, tzinfo=UTC), T0 + timedelta(1))
    finally:
        await h.stop()
    assert [(r["co2_kg"], r["substitution"]) for r in rows] == [(7.5, ""), (3282.70, "")]


HOUR0 = datetime(2026, 1, 1, 0, tzinfo=UTC)
HOUR1 = datetime(2026, 1, 1, 1, tzinfo=UTC)


def hour_records(t: datetime, co2_t: float, position: AllowancePosition | None = None,
                 ) -> PeriodRecords:
    """One hour of S1 (calc_vectors.md CEMS example), a coal stream and unit U1."""
    end = t + timedelta(hours=1)
    # 196 962.23 kg/h of CO2 for the hour: 196.96223 t
    src = PeriodResult("S1", t, 12.0, 835_718.9, co2_t * 1000, co2_t, co2_t, True, DataFlag.N, 60)
    # 100 t coal · 17.2 · 0.03085 · 0.99 · 44/12 = 192.61506 t
    coal = StreamPeriod("U1_coal", "U1", t, end, 100.0, "t", 192.61506, "demo-coal-2020-01",
                        "ncv_cc_of", True, DataFlag.N, 60)
    unit = UnitPeriod("U1", t, co2_t, 192.61506, 600.0, co2_t / 600.0, True, DataFlag.N)
    return PeriodRecords("hour", t, end, (src,), (coal,), (unit,), position)


POSITION = AllowancePosition(1e6, 4973.29632, 25 / 8760, 363.958333, 143_290.0, 2853.88,
                             0.4973296, 995_026.70368, 1_743_359.890, 743_359.890, 80.0,
                             59_468_791.2)


async def test_hours_days_and_the_allowance_are_stored_and_read_back(tmp_path: Path) -> None:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        first = hour_records(HOUR0, 196.96223, POSITION)
        sub = PeriodResult("S1", HOUR1, math.nan, math.nan, math.nan, 221.58251, math.nan,
                           False, DataFlag.D, 0, True, "mrr_mean_2sigma", 1, 0)
        second = dataclasses.replace(hour_records(HOUR1, 221.58251), sources=(sub,))
        await h.on_period(first)
        await h.on_period(second)
        day_t = datetime(2025, 12, 31, 16, tzinfo=UTC)
        split = (  # a factor version change at noon splits the day's stream
            StreamPeriod("U1_coal", "U1", day_t, day_t + timedelta(hours=12), 1200.0, "t",
                         2311.38072, "v1", "ncv_cc_of", True, DataFlag.N, 24),
            StreamPeriod("U1_coal", "U1", day_t + timedelta(hours=12), day_t + timedelta(1),
                         1200.0, "t", 2687.652, "v2", "ncv_cc_of", True, DataFlag.N, 24))
        day = PeriodRecords("day", day_t, day_t + timedelta(1), (), split, ())
        await h.on_period(day)
        assert repr(await h.periods("hour", HOUR0, HOUR1 + timedelta(hours=1))) == repr(
            [first, second])
        assert await h.periods("day", day_t, day_t + timedelta(1)) == [day]
        assert await h.last_period("hour") == HOUR1
        assert await h.last_period("day") == day_t
        rows = await h.period_rows("source", "hour", "S1", HOUR0, HOUR1 + timedelta(hours=1))
        assert [(r["t"], r["co2_t"], r["co2_measured_t"], r["substituted"], r["flag"])
                for r in rows] == [(HOUR0, 196.96223, 196.96223, False, "N"),
                                   (HOUR1, 221.58251, None, True, "D")]
        assert rows[1]["substitution_rule"] == "mrr_mean_2sigma"
        (coal,) = await h.period_rows("stream", "hour", "U1_coal", HOUR0, HOUR1)
        assert (coal["quantity"], coal["factor_version"], coal["t_end"]) == (
            100.0, "demo-coal-2020-01", HOUR1)
    finally:
        await h.stop()
    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        assert db.execute("SELECT ytd_t, shortfall_cost_cny FROM period WHERE level = 'hour'"
                          " ORDER BY t_ms").fetchall() == [(4973.29632, 59_468_791.2),
                                                           (None, None)]


async def test_factor_versions_and_the_last_counter_reading(tmp_path: Path) -> None:
    from server.config import load_factor_table

    table = load_factor_table(Path(__file__).resolve().parents[2] / "config" / "factors.yaml")
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        await h.record_factor_versions(table)
        await h.record_factor_versions(table)  # again after a restart: kept once
        t0 = T0.timestamp()
        # two minutes of an energy meter: the last valid reading is 1 002.5 at t0 + 75 s
        for m, (values, flags) in enumerate([([1000.0, 1001.0], [0, 0]),
                                             ([1002.5, 1003.0], [0, 3])]):
            raw = RawWindow(("kwh",), np.array([2]), np.array([t0 + 60 * m + 15,
                                                               t0 + 60 * m + 45]),
                            np.array(values), np.array(flags, np.uint8))
            await h.on_minute(dataclasses.replace(minute(T0 + timedelta(minutes=m), 1.0),
                                                  raw=raw))
        assert await h.last_reading("kwh", T0 + timedelta(minutes=2)) == (t0 + 75, 1002.5)
        assert await h.last_reading("kwh", T0 + timedelta(minutes=1)) == (t0 + 45, 1001.0)
        assert await h.last_reading("kwh", T0) is None
        assert await h.last_reading("other", T0 + timedelta(minutes=2)) is None
    finally:
        await h.stop()
    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        rows = db.execute("SELECT id, stream, factors FROM factor_version ORDER BY id").fetchall()
    assert ("demo-coal-2020-01", "demo_coal",
            '{"ncv_gj_t": 17.2, "cc_tc_gj": 0.03085, "of": 0.99}') in rows
    assert len(rows) == 5  # every version of config/factors.yaml


async def test_a_historian_without_the_period_tables_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # as shipped before hours and days were stored
        db.execute("CREATE TABLE source_minute (source TEXT NOT NULL, unit TEXT NOT NULL,"
                   " t_ms INTEGER NOT NULL, flow_act_m3_h REAL, flow_std_dry_m3_h REAL,"
                   " co2_dry_pct REAL, co2_mg_m3 REAL, co2_rate_kg_h REAL, co2_kg REAL,"
                   " valid INTEGER NOT NULL, flag TEXT NOT NULL, substitution TEXT NOT NULL"
                   " DEFAULT '', PRIMARY KEY (source, t_ms)) WITHOUT ROWID")
    h = Historian(path)
    await h.start()
    try:
        await h.on_period(hour_records(HOUR0, 196.96223))
        assert len(await h.periods("hour", HOUR0, HOUR1)) == 1
    finally:
        await h.stop()
