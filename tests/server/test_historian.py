from __future__ import annotations

import dataclasses
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.flags import DataFlag
from model.records import (
    AlarmEvent,
    AllowancePosition,
    DeliveryRecord,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    RawWindow,
    SiteMinute,
    SourceColumns,
    SourceMinute,
    StreamPeriod,
    TagColumns,
    TagMinute,
    UnitMinute,
    UnitPeriod,
)
from server.historian import Historian, StoredRules

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


async def test_minutes_from_columns_are_the_rows_of_records(tmp_path: Path) -> None:
    # The runtime hands minutes over as columns: stored row for row as their records.
    def src(name: str, co2_kg: float, flag: DataFlag, rule: str = "") -> SourceMinute:
        return SourceMinute(name, "U1", T0, 1_080_000.0, math.nan, 12.0, 235_680.0,
                            co2_kg * 60, co2_kg, flag is DataFlag.N, flag, rule)

    sources = (src("S1", 3282.70, DataFlag.N), src("S2", math.nan, DataFlag.B),
               src("S3", 3000.0, DataFlag.S, "f_factor_o2"))
    tags = (TagMinute("a", T0, 12.0, 11.9, 12.1, 60, DataFlag.N),
            TagMinute("b", T0, math.nan, math.nan, math.nan, 0, DataFlag.B))
    base = minute(T0, 1.0)
    records = MinuteResult(t=T0, sources=sources, units=base.units, site=base.site, tags=tags)

    def floats(name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([getattr(x, name) for x in sources])

    columns = MinuteResult(
        t=T0, units=base.units, site=base.site,
        source_columns=SourceColumns(
            sources=("S1", "S2", "S3"), units=("U1",) * 3, flow_act_m3_h=floats("flow_act_m3_h"),
            flow_std_dry_m3_h=floats("flow_std_dry_m3_h"), co2_dry_pct=floats("co2_dry_pct"),
            co2_mg_m3=floats("co2_mg_m3"), co2_rate_kg_h=floats("co2_rate_kg_h"),
            co2_kg=floats("co2_kg"), flag=np.array([0, 3, 1], np.uint8),
            substitution=np.array([0, 0, 1]), rules=("", "f_factor_o2"),
            co2_hour_t=floats("co2_hour_t"), co2_today_t=floats("co2_today_t"),
            co2_ytd_t=floats("co2_ytd_t")),
        tag_columns=TagColumns(tags=("a", "b"), mean=np.array([12.0, math.nan]),
                               min=np.array([11.9, math.nan]), max=np.array([12.1, math.nan]),
                               count=np.array([60, 0]), flag=np.array([0, 3], np.uint8)))
    assert [int(f) for f in (DataFlag.N, DataFlag.B, DataFlag.S)] == [0, 3, 1]
    dumps = []
    for name, result in (("records", records), ("columns", columns)):
        h = Historian(tmp_path / f"{name}.sqlite")
        await h.start()
        try:
            await h.on_minute(result)
        finally:
            await h.stop()
        with sqlite3.connect(tmp_path / f"{name}.sqlite") as db:
            dumps.append([db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                          for table in ("source_minute", "tag_minute")])
    assert dumps[0] == dumps[1]
    t_ms = int(T0.timestamp() * 1000)
    assert dumps[1][0][1] == ("S2", "U1", t_ms, 1_080_000.0, None, 12.0, 235_680.0, None, None,
                              0, "B", "")
    assert dumps[1][0][2][-3:] == (0, "S", "f_factor_o2")
    assert dumps[1][1] == [("a", t_ms, 12.0, 11.9, 12.1, 60, "N"),
                           ("b", t_ms, None, None, None, 0, "B")]


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
        # repr: a NaN (no CO2e) equals nothing, itself neither
        assert repr(await h.periods("day", day_t, day_t + timedelta(1))) == repr([day])
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
            await h.on_minute(minute(T0 + timedelta(minutes=m), 1.0).replace(raw=raw))
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


def alarm_event(rule: str, t: datetime, **kw: Any) -> AlarmEvent:
    base = AlarmEvent(rule, t, "alarm", "warning", 250.5, 200.0, "source S1 co2_rate_t_h",
                      "S1 CO2 rate 250.5 t/h above 200 t/h",
                      "1号烟囱CO2排放速率 250.5 t/h 超过 200 t/h")
    return dataclasses.replace(base, **kw)


def nan_as_text(events: list[AlarmEvent]) -> list[tuple[Any, ...]]:
    """The events' fields with a NaN value spelled "NaN" (NaN equals nothing, itself neither)."""
    return [tuple("NaN" if f.name == "value" and math.isnan(e.value) else getattr(e, f.name)
                  for f in dataclasses.fields(e)) for e in events]


async def test_the_alarm_journal_keeps_every_field_of_an_event(tmp_path: Path) -> None:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        rose = alarm_event("S1_rate", T0, ack_state="active-unacknowledged",
                           previous_ack_state="normal", kind="threshold", area="U1")
        shelved = alarm_event("S1_rate", T0 + timedelta(minutes=2), previous="alarm",
                              ack_state="shelved", previous_ack_state="active-unacknowledged",
                              cause="shelve", kind="threshold", area="U1", user="op1",
                              comment="传感器检修", shelved_until=T0 + timedelta(hours=8))
        comm = alarm_event("cems1_comm", T0 + timedelta(minutes=1), value=math.nan, limit=None,
                           target="device cems1", kind="device", area="site")
        for e in (rose, comm, shelved):
            await h.record_alarm(e)
        assert nan_as_text(await h.alarm_journal(T0, T0 + timedelta(hours=1))) == nan_as_text(
            [rose, comm, shelved])
        got = await h.alarm_journal(T0, T0 + timedelta(hours=1), rule="cems1_comm")
        assert len(got) == 1 and math.isnan(got[0].value) and got[0].limit is None
        assert await h.alarm_journal(T0, T0 + timedelta(hours=1), rule="S1_rate") == [
            rose, shelved]
        # start ≤ t < end, and the oldest `limit` first
        middle = await h.alarm_journal(T0 + timedelta(minutes=1), T0 + timedelta(minutes=2))
        assert [(e.rule, e.t) for e in middle] == [("cems1_comm", T0 + timedelta(minutes=1))]
        assert await h.alarm_journal(T0, T0 + timedelta(hours=1), limit=1) == [rose]
        assert await h.alarm_journal(T0 - timedelta(hours=1), T0) == []
    finally:
        await h.stop()


async def test_the_last_event_of_every_rule_restores_alarm_states(tmp_path: Path) -> None:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        assert await h.last_alarm_events() == []
        a1 = alarm_event("S1_rate", T0, ack_state="active-unacknowledged")
        b1 = alarm_event("U1_intensity", T0 + timedelta(minutes=1), state="warning",
                         previous="normal", ack_state="active-unacknowledged")
        a2 = alarm_event("S1_rate", T0 + timedelta(minutes=3), ack_state="active-acknowledged",
                         previous_ack_state="active-unacknowledged", cause="acknowledge",
                         user="op1", comment="seen")
        b2 = alarm_event("U1_intensity", T0 + timedelta(minutes=4), state="normal",
                         previous="warning", ack_state="returned-unacknowledged")
        for e in (a1, b1, a2, b2):
            await h.record_alarm(e)
        assert await h.last_alarm_events() == [a2, b2]
    finally:
        await h.stop()
    h = Historian(tmp_path / "h.sqlite")  # after a restart
    await h.start()
    try:
        assert await h.last_alarm_events() == [a2, b2]
    finally:
        await h.stop()


async def test_an_alarm_journal_from_before_acknowledgements_is_migrated(
        tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the alarm_journal table as first shipped
        db.execute("CREATE TABLE alarm_journal (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                   " t_ms INTEGER NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL,"
                   " previous TEXT NOT NULL, value REAL, limit_value REAL,"
                   " target TEXT NOT NULL, message TEXT NOT NULL)")
        db.execute("INSERT INTO alarm_journal (t_ms, rule, state, previous, value, limit_value,"
                   " target, message) VALUES (1795248000000, 'S1_rate', 'alarm', 'normal',"
                   " 250.5, 200.0, 'source S1 co2_rate_t_h', 'S1 high')")
        db.execute("INSERT INTO alarm_journal (t_ms, rule, state, previous, value, limit_value,"
                   " target, message) VALUES (1795248060000, 'cems1_comm', 'alarm', 'normal',"
                   " NULL, NULL, 'device cems1', 'cems1 lost')")
    h = Historian(path)
    await h.start()
    try:
        new = alarm_event("S1_rate", T0 + timedelta(minutes=5), state="normal",
                          previous="alarm", ack_state="returned-unacknowledged",
                          previous_ack_state="active-unacknowledged", kind="threshold",
                          area="U1", shelved_until=T0 + timedelta(hours=1))
        await h.record_alarm(new)
        journal = await h.alarm_journal(T0, T0 + timedelta(hours=1))
        old_s1 = AlarmEvent("S1_rate", T0, "alarm", "normal", 250.5, 200.0,
                            "source S1 co2_rate_t_h", "S1 high", "")
        assert journal[0] == old_s1  # cause "condition": the only cause there was
        assert journal[1].message == "cems1 lost" and math.isnan(journal[1].value)
        assert journal[2] == new
        assert [e.rule for e in await h.last_alarm_events()] == ["S1_rate", "cems1_comm"]
        assert (await h.last_alarm_events())[0] == new
    finally:
        await h.stop()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(alarm_journal)")]
    assert columns == ["id", "t_ms", "rule", "state", "previous", "value", "limit_value",
                       "target", "message", "message_zh", "ack_state", "previous_ack_state",
                       "cause", "kind", "area", "user", "comment", "shelved_until_ms"]


async def test_the_delivery_log(tmp_path: Path) -> None:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        recs = [DeliveryRecord(T0, "email", "S1_rate", "alarm", "event", "retry", 1,
                               "SMTP 451 try again later"),
                DeliveryRecord(T0, "dingtalk", "S1_rate", "alarm", "event", "sent", 1),
                DeliveryRecord(T0 + timedelta(seconds=30), "email", "S1_rate", "alarm",
                               "event", "sent", 2),
                DeliveryRecord(T0 + timedelta(minutes=5), "sms", "U1_intensity", "warning",
                               "summary", "rate_limited")]
        for r in recs:
            await h.record_delivery(r)
        assert await h.deliveries(T0, T0 + timedelta(hours=1)) == recs
        assert await h.deliveries(T0 + timedelta(seconds=1), T0 + timedelta(minutes=5)) == [
            recs[2]]
        assert await h.deliveries(T0, T0 + timedelta(hours=1), limit=2) == recs[:2]
    finally:
        await h.stop()


async def test_alarm_rules_saved_through_the_api(tmp_path: Path) -> None:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        assert await h.load_alarm_rules() is None
        first = [{"id": "S1_rate", "kind": "threshold", "alarm": 200.0, "warning": None,
                  "message_zh": "排放速率高"}]
        second = [{"id": "S1_rate", "kind": "threshold", "alarm": 180.0},
                  {"id": "U1_intensity", "kind": "threshold", "alarm": 0.9}]
        await h.save_alarm_rules(first, "sha256:aa", "eng1", "initial", T0)
        await h.save_alarm_rules(second, "sha256:bb", "eng2", "降低限值",
                                 T0 + timedelta(hours=1))
    finally:
        await h.stop()
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        assert await h.load_alarm_rules() == StoredRules(second, "sha256:bb", "eng2", "降低限值",
                                                         T0 + timedelta(hours=1))
        with pytest.raises(ValueError, match=r"^alarm rules saved by 'eng3': not JSON: "):
            await h.save_alarm_rules([{"alarm": math.nan}], "x", "eng3", "", T0)
        stored = await h.load_alarm_rules()
        assert stored is not None and stored.user == "eng2"
    finally:
        await h.stop()


async def test_co2e_and_other_gases_are_stored_and_an_old_historian_migrated(
        tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # stream and unit hours as shipped before CO2e
        db.execute("CREATE TABLE stream_hour (stream TEXT NOT NULL, unit TEXT NOT NULL,"
                   " t_ms INTEGER NOT NULL, t_end_ms INTEGER NOT NULL, quantity REAL,"
                   " quantity_unit TEXT NOT NULL, co2_t REAL, factor_version TEXT NOT NULL,"
                   " method TEXT NOT NULL, valid INTEGER NOT NULL, flag TEXT NOT NULL,"
                   " n_valid INTEGER NOT NULL, note TEXT NOT NULL,"
                   " PRIMARY KEY (stream, t_ms)) WITHOUT ROWID")
        db.execute("INSERT INTO stream_hour VALUES ('U1_coal','U1',?,?,100.0,'t',192.61506,"
                   "'demo-coal-2020-01','ncv_cc_of',1,'N',60,'')",
                   (round(HOUR0.timestamp() * 1000), round(HOUR1.timestamp() * 1000)))
    h = Historian(path)
    await h.start()
    try:
        # 100 t coal at NCV 20.908 GJ/t, 1 / 1.5 kg/TJ: CH4 0.0020908 t, N2O 0.0031362 t;
        # SAR 192.61506 + 0.0020908 · 21 + 0.0031362 · 310 = 193.6311888 t CO2e.
        rec = hour_records(HOUR1, 196.96223)
        coal = dataclasses.replace(rec.streams[0], ch4_t=0.0020908, n2o_t=0.0031362,
                                   co2e_t=193.6311888, gwp_set="SAR")
        sf6 = StreamPeriod("U1_sf6", "U1", HOUR1, HOUR1 + timedelta(hours=1), 0.001, "t",
                           0.0, "sf6-1", "ghg", True, DataFlag.N, 60, "", 0.0, 0.0, "SF6",
                           0.001, 23.9, "SAR")
        unit = dataclasses.replace(rec.units[0], co2_t=196.96223,
                                   co2e_t=196.96223 + 1.0161288 + 23.9, gwp_set="SAR",
                                   n_substituted=1)
        new = dataclasses.replace(rec, streams=(coal, sf6), units=(unit,))
        await h.on_period(new)
        old = await h.period_rows("stream", "hour", "U1_coal", HOUR0, HOUR1)
        assert [(r["ch4_t"], r["n2o_t"], r["gas"], r["co2e_t"], r["gwp_set"])
                for r in old] == [(0.0, 0.0, "", None, "")]
        stored = await h.periods("hour", HOUR1, HOUR1 + timedelta(hours=1))
        assert repr(stored) == repr([new])
        (u,) = await h.period_rows("unit", "hour", "U1", HOUR1, HOUR1 + timedelta(hours=1))
        assert (u["co2e_t"], u["gwp_set"]) == (196.96223 + 1.0161288 + 23.9, "SAR")
        assert u["n_substituted"] == 1
    finally:
        await h.stop()


async def test_unit_rows_from_before_the_accounting_basis_keep_their_cems_co2(
        tmp_path: Path) -> None:
    """Every unit used to be accounted by its CEMS: migrated rows get co2_t = co2_cems_t."""
    path = tmp_path / "old.sqlite"
    h = Historian(path)
    await h.start()
    try:
        await h.on_period(hour_records(HOUR1, 196.96223))
    finally:
        await h.stop()
    with sqlite3.connect(path) as db:  # the unit hour table as it was before the basis
        db.execute("ALTER TABLE unit_hour DROP COLUMN co2_t")
    h = Historian(path)
    await h.start()
    try:
        (u,) = await h.period_rows("unit", "hour", "U1", HOUR1, HOUR1 + timedelta(hours=1))
        assert (u["co2_t"], u["basis"]) == (u["co2_cems_t"], "cems")
        assert u["co2_cems_t"] is not None and u["co2_cems_t"] > 0
    finally:
        await h.stop()
