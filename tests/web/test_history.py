"""Stored minutes and months over a range, and the one allowance answer (issue 14), against
a real server on loopback reading a real historian. Every expected number is worked out
by hand in the test."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import web.history
from model.flags import DataFlag
from model.records import MinuteResult, SiteMinute, TagMinute, UnitMinute
from server.historian import Historian
from tests.fixtures.plant import plant_config
from tests.web.test_api import HOUR0, get_json, minute_result, source_minute, stored_hour
from web.app import WebSink

T = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)  # 08:00 in Asia/Shanghai
Q = "?from=2026-01-01T08:00:00%2B08:00"


def _site(t: datetime) -> SiteMinute:
    return SiteMinute(t=t, co2_kg=0.0, co2_today_t=0.0, co2_ytd_t=0.0, allowance_annual_t=0.0,
                      allowance_used_pct=math.nan, allowance_headroom_t=math.nan)


def _minute(i: int, co2_kg: float, *, flag: DataFlag = DataFlag.N,
            tag: TagMinute | None = None) -> MinuteResult:
    t = T + timedelta(minutes=i)
    valid = flag == DataFlag.N
    src = source_minute(t, co2_kg=co2_kg, valid=valid, flag=flag,
                        substitution="" if valid else "last_valid")
    unit = UnitMinute(unit="U1", t=t, output_mwh=10.0, co2_kg=co2_kg,
                      intensity_t_mwh=co2_kg / 10.0 / 1000.0, valid=valid, flag=flag)
    return MinuteResult(t=t, sources=(src,), units=(unit,), site=_site(t),
                        tags=(tag,) if tag is not None else ())


@pytest.fixture
async def served(port: int, tmp_path: Path) -> AsyncIterator[tuple[WebSink, Historian]]:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    s = WebSink(plant_config(web_port=port), history=h)
    await s.start()
    yield s, h
    await s.stop()
    await h.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def url(sink: WebSink, path: str) -> str:
    return f"http://127.0.0.1:{sink.port}/api/v1/{path}"


async def test_three_stored_minutes_of_a_source(served: tuple[WebSink, Historian],
                                                http: aiohttp.ClientSession) -> None:
    sink, h = served
    for i, (kg, flag) in enumerate([(3282.70, DataFlag.N), (3300.0, DataFlag.N),
                                    (3250.5, DataFlag.D), (9999.0, DataFlag.N)]):
        await h.on_minute(_minute(i, kg, flag=flag))
    # 08:00 to 08:03 local: the fourth minute (08:03) is outside.
    got = await get_json(http, url(sink, f"sources/S1/minutes{Q}&to=2026-01-01T00:03:00Z"))
    assert got["kind"] == "source" and got["id"] == "S1" and got["points"] is None
    assert got["from"] == "2026-01-01T08:00:00+08:00"
    assert got["to"] == "2026-01-01T08:03:00+08:00" and got["timezone"] == "Asia/Shanghai"
    rows = got["minutes"]
    assert [r["co2_kg"] for r in rows] == [3282.70, 3300.0, 3250.5]
    assert [r["t"] for r in rows] == ["2026-01-01T08:00:00+08:00", "2026-01-01T08:01:00+08:00",
                                      "2026-01-01T08:02:00+08:00"]
    assert rows[2]["t_end"] == "2026-01-01T08:03:00+08:00"
    assert [(r["flag"], r["valid"], r["substitution"]) for r in rows] == [
        ("N", True, ""), ("N", True, ""), ("D", False, "last_valid")]
    assert rows[0]["co2_dry_pct"] == 12.0 and rows[0]["flow_std_dry_m3_h"] == 835_718.9

    units = await get_json(http, url(sink, f"units/U1/minutes{Q}&to=2026-01-01T00:02:00Z"))
    assert [(r["output_mwh"], r["co2_kg"]) for r in units["minutes"]] == [
        (10.0, 3282.70), (10.0, 3300.0)]
    assert units["minutes"][1]["intensity_t_mwh"] == pytest.approx(0.33)


async def test_120_minutes_into_4_points(served: tuple[WebSink, Historian],
                                         http: aiohttp.ClientSession) -> None:
    sink, h = served
    # co2_kg = 1000 + i; minute 45 missing (NaN, flag B); minute 100 a spike of 5000 kg.
    for i in range(120):
        kg = math.nan if i == 45 else 5000.0 if i == 100 else 1000.0 + i
        await h.on_minute(_minute(i, kg, flag=DataFlag.B if i == 45 else DataFlag.N))
    got = await get_json(http, url(sink, f"sources/S1/minutes{Q}&to=2026-01-01T10:00:00%2B08:00"
                                         "&points=4"))
    assert got["points"] == 4 and got["bucket_seconds"] == 1800.0 and "minutes" not in got
    b = got["buckets"]
    assert [x["t"][11:16] for x in b] == ["08:00", "08:30", "09:00", "09:30"]
    assert b[3]["t_end"] == "2026-01-01T10:00:00+08:00"
    assert [x["n"] for x in b] == [30, 30, 30, 30]
    assert [x["n_valid"] for x in b] == [30, 29, 30, 30]
    assert b[1]["flags"] == {"N": 29, "B": 1} and b[0]["flags"] == {"N": 30}
    stats = [x["co2_kg"] for x in b]
    # 0: 1000..1029, mean (1000 + 1029) / 2
    assert stats[0] == {"min": 1000.0, "max": 1029.0, "mean": 1014.5}
    # 1: 1030..1059 without 1045: (31 335 − 1045) / 29 = 30 290 / 29
    assert stats[1]["min"] == 1030.0 and stats[1]["max"] == 1059.0
    assert stats[1]["mean"] == pytest.approx(30_290 / 29, abs=1e-9)  # 1044.4827…
    assert stats[2] == {"min": 1060.0, "max": 1089.0, "mean": 1074.5}
    # 3: 1090..1119 with 1100 replaced by 5000: (33 135 − 1100 + 5000) / 30 = 1234.5
    assert stats[3] == {"min": 1090.0, "max": 5000.0, "mean": 1234.5}
    assert b[0]["co2_dry_pct"] == {"min": 12.0, "max": 12.0, "mean": 12.0}

    # 7 points: ceil(120 / 7) = 18 minutes a bucket, 6 of 18 and the last of 12.
    got = await get_json(http, url(sink, f"sources/S1/minutes{Q}&to=2026-01-01T02:00:00Z"
                                         "&points=7"))
    assert got["bucket_seconds"] == 18 * 60.0
    assert [x["n"] for x in got["buckets"]] == [18] * 6 + [12]
    assert got["buckets"][6]["t"] == "2026-01-01T09:48:00+08:00"
    assert got["buckets"][6]["t_end"] == "2026-01-01T10:00:00+08:00"
    # More points than minutes: one bucket a minute.
    got = await get_json(http, url(sink, f"units/U1/minutes{Q}&to=2026-01-01T00:03:00Z"
                                         "&points=500"))
    assert [x["co2_kg"]["max"] for x in got["buckets"]] == [1000.0, 1001.0, 1002.0]


async def test_tag_minute_statistics(served: tuple[WebSink, Historian],
                                     http: aiohttp.ClientSession) -> None:
    sink, h = served
    stats = [(12.0, 11.5, 12.4, 60), (12.2, 12.0, 12.6, 60), (11.0, 10.0, 13.0, 30)]
    for i, (mean, lo, hi, n) in enumerate(stats):
        tag = TagMinute("s1_co2", T + timedelta(minutes=i), mean, lo, hi, n,
                        DataFlag.N if n == 60 else DataFlag.D)
        await h.on_minute(_minute(i, 1.0, tag=tag))
    q = f"tags/s1_co2/minutes{Q}&to=2026-01-01T00:03:00Z"
    got = await get_json(http, url(sink, q))
    assert got["fields"] == ["mean", "min", "max", "count"]
    assert [(r["mean"], r["min"], r["max"], r["count"], r["flag"]) for r in got["minutes"]] == [
        (12.0, 11.5, 12.4, 60, "N"), (12.2, 12.0, 12.6, 60, "N"), (11.0, 10.0, 13.0, 30, "D")]
    (one,) = (await get_json(http, url(sink, q + "&points=1")))["buckets"]
    # mean weighted by samples: (12·60 + 12.2·60 + 11·30) / 150 = 1782 / 150 = 11.88
    assert one["min"] == 10.0 and one["max"] == 13.0 and one["count"] == 150
    assert one["mean"] == pytest.approx(11.88, abs=1e-12)
    assert one["flags"] == {"N": 2, "D": 1} and one["n"] == 3


@pytest.mark.parametrize(("query", "status", "message"), [
    ("sources/S9/minutes" + Q + "&to=2026-01-02T00:00:00Z", 404, "unknown source 'S9'"),
    ("tags/nope/minutes" + Q + "&to=2026-01-02T00:00:00Z", 404, "unknown tag 'nope'"),
    ("units/S1/months" + Q + "&to=2026-01-02T00:00:00Z", 404, "unknown unit 'S1'"),
    ("sources/S1/minutes", 400, "query parameter 'from' is required (ISO 8601 with offset, "
     "e.g. 2026-11-21T00:00:00+08:00)"),
    ("sources/S1/minutes?from=2026-01-01T00:00:00&to=2026-01-02T00:00:00Z", 400,
     "query parameter 'from': '2026-01-01T00:00:00' needs a UTC offset, e.g. "
     "2026-01-01T00:00:00+08:00"),
    ("sources/S1/minutes" + Q + "&to=2026-01-01T00:00:00Z", 400, "'to' must be after 'from'"),
    ("sources/S1/minutes" + Q + "&to=2026-02-02T00:00:00Z", 400,
     "at most 31 days of minutes per request"),
    ("units/U1/minutes" + Q + "&to=2200-01-01T00:00:01Z", 400,
     "query parameter 'to': '2200-01-01T00:00:01Z' is outside the allowed range "
     "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"),
    ("sources/S1/minutes" + Q + "&to=2026-01-02T00:00:00Z&points=0", 400,
     "query parameter 'points' must be a whole number from 1 to 5000, not '0'"),
    ("sources/S1/minutes" + Q + "&to=2026-01-02T00:00:00Z&points=5001", 400,
     "query parameter 'points' must be a whole number from 1 to 5000, not '5001'"),
    ("sources/S1/minutes" + Q + "&to=2026-01-02T00:00:00Z&points=-3", 400,
     "query parameter 'points' must be a whole number from 1 to 5000, not '-3'"),
    ("sources/S1/minutes" + Q + "&to=2026-01-02T00:00:00Z&points=", 400,
     "query parameter 'points' must be a whole number from 1 to 5000, not ''"),
    ("sources/S1/months" + Q + "&to=2036-01-10T00:00:00Z", 400,
     "at most 3660 days of months per request"),
])
async def test_bad_requests(served: tuple[WebSink, Historian], http: aiohttp.ClientSession,
                            query: str, status: int, message: str) -> None:
    sink, _h = served
    assert await get_json(http, url(sink, query), status) == {"error": message}


async def test_too_many_minutes_without_points(served: tuple[WebSink, Historian],
                                               http: aiohttp.ClientSession,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sink, h = served
    monkeypatch.setattr(web.history, "MAX_MINUTE_ROWS", 2)
    for i in range(3):
        await h.on_minute(_minute(i, 1.0))
    q = f"sources/S1/minutes{Q}&to=2026-01-01T00:03:00Z"
    assert await get_json(http, url(sink, q), 400) == {
        "error": "more than 2 minutes from 'from' to 'to': ask for a shorter range or "
                 "'points'"}
    assert len((await get_json(http, url(sink, q + "&points=2")))["buckets"]) == 2
    two = await get_json(http, url(sink, q.replace("00:03:00Z", "00:02:00Z")))
    assert len(two["minutes"]) == 2


async def test_no_historian(port: int, http: aiohttp.ClientSession) -> None:
    sink = WebSink(plant_config(web_port=port))
    await sink.start()
    try:
        assert await get_json(http, url(sink, f"sources/S1/minutes{Q}&to=2026-01-02T00:00:00Z"),
                              503) == {"error": "no historian: stored minutes are not "
                                                "available"}
    finally:
        await sink.stop()


def _day(local_day: datetime, co2_t: float) -> Any:
    """A stored day starting at local midnight (Asia/Shanghai, UTC+8)."""
    t = local_day - timedelta(hours=8)
    return replace(stored_hour(t, co2_t), level="day", t_end=t + timedelta(days=1),
                   allowance=None)


async def test_months_by_plant_local_month(served: tuple[WebSink, Historian],
                                           http: aiohttp.ClientSession) -> None:
    sink, h = served
    # 31 Jan local starts 30 Jan 16:00 UTC, 1 Feb local 31 Jan 16:00 UTC: by UTC date both
    # would be January.
    for day, co2 in [(datetime(2026, 1, 31, tzinfo=UTC), 4000.0),
                     (datetime(2026, 2, 1, tzinfo=UTC), 4100.0),
                     (datetime(2026, 2, 2, tzinfo=UTC), 4200.0)]:
        await h.on_period(_day(day, co2))
    q = "?from=2026-01-01T00:00:00%2B08:00&to=2026-03-01T00:00:00%2B08:00"
    jan, feb = await get_json(http, url(sink, f"sources/S1/months{q}"))
    assert (jan["month"], jan["t"], jan["t_end"]) == (
        "2026-01", "2026-01-01T00:00:00+08:00", "2026-02-01T00:00:00+08:00")
    assert (jan["days"], jan["co2_t"], feb["days"], feb["co2_t"]) == (1, 4000.0, 2, 8300.0)
    assert feb["co2_measured_t"] == 8300.0 and feb["n_valid"] == 120
    assert feb["valid_days"] == 2 and feb["substituted_days"] == 0
    ujan, ufeb = await get_json(http, url(sink, f"units/U1/months{q}"))
    # U1: co2_cems_t = the source's co2_t, 600 MWh and 192.61506 t by factors a day.
    assert ufeb["co2_cems_t"] == 8300.0 and ufeb["output_mwh"] == 1200.0
    assert ufeb["co2_factor_t"] == pytest.approx(385.23012, abs=1e-9)
    assert ufeb["intensity_t_mwh"] == pytest.approx(8300.0 / 1200.0)  # 6.9167 t/MWh
    assert ujan["co2_cems_t"] == 4000.0 and ujan["reconciliation_exceeded_days"] == 0
    assert await get_json(http, url(sink, "sources/S1/months?from=2027-01-01T00:00:00Z"
                                          "&to=2027-02-01T00:00:00Z")) == []


async def test_site_embeds_the_allowance_answer(served: tuple[WebSink, Historian],
                                                http: aiohttp.ClientSession) -> None:
    sink, _h = served
    # The minute's running figure says 11.4197 %; no hour has closed: no position yet.
    await sink.on_minute(minute_result())
    site = await get_json(http, url(sink, "site"))
    allowance = await get_json(http, url(sink, "allowance"))
    assert site["allowance"] == allowance == {"t": None}
    assert site["allowance_used_pct"] is None and site["allowance_headroom_t"] is None
    assert site["allowance_annual_t"] == 4_000_000.0  # configured

    await sink.on_period(stored_hour(HOUR0, 196.96223))  # 4 973.29632 t of 1 000 000 t
    await sink.on_minute(minute_result())
    site = await get_json(http, url(sink, "site"))
    allowance = await get_json(http, url(sink, "allowance"))
    assert site["allowance"] == allowance
    assert allowance["t"] == "2026-01-01T01:00:00Z" and allowance["ytd_t"] == 4973.29632
    assert (site["allowance_used_pct"], site["allowance_headroom_t"],
            site["allowance_annual_t"]) == (0.4973296, 995_026.70368, 1e6)


async def test_co2e_in_days_and_months(served: tuple[WebSink, Historian],
                                       http: aiohttp.ClientSession) -> None:
    sink, h = served
    # Two February days: CEMS 4 100 and 4 200 t, their fuel's CH4 / N2O adding 24.3870912 t
    # CO2e under SAR (the first) and 21.3512496 t under AR5 (the second, a new set in force).
    for day, co2, gas, gwp in [(datetime(2026, 2, 1, tzinfo=UTC), 4100.0, 24.3870912, "SAR"),
                               (datetime(2026, 2, 2, tzinfo=UTC), 4200.0, 21.3512496, "AR5")]:
        rec = _day(day, co2)
        (unit,), (coal,) = rec.units, rec.streams
        await h.on_period(replace(
            rec, units=(replace(unit, co2e_t=co2 + gas, gwp_set=gwp),),
            streams=(replace(coal, ch4_t=0.0501792, n2o_t=0.0752688,
                             co2e_t=coal.co2_t + gas, gwp_set=gwp),)))
    q = "?from=2026-02-01T00:00:00%2B08:00&to=2026-03-01T00:00:00%2B08:00"
    (feb,) = await get_json(http, url(sink, f"units/U1/months{q}"))
    # 4 124.3870912 + 4 221.3512496 = 8 345.7383408 t CO2e
    assert feb["co2e_t"] == pytest.approx(8345.7383408, rel=1e-9)
    assert feb["gwp_set"] == "SAR,AR5"
    days = await get_json(http, url(sink, f"units/U1/days{q}"))
    assert [(d["co2e_t"], d["gwp_set"]) for d in days] == [
        (4100.0 + 24.3870912, "SAR"), (4200.0 + 21.3512496, "AR5")]
