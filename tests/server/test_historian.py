from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.historian import Historian
from server.records import DataFlag, MinuteResult, SiteMinute, SourceMinute, TagMinute, UnitMinute

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
