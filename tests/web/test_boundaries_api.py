"""GET /api/v1/boundaries and /boundaries/tree on a real web sink over a real historian
file: the tree of three units in two processes rolled up over a stored hour, a day and a
month, worked by hand; plant-local dates; 400 naming a bad parameter; 503 without a
historian."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.config import parse_plant
from server.historian import Historian
from tests.fixtures.boundaries import boundary_plant_dict, period, source_period, unit_period
from tests.web.test_api import get_json
from web.app import WebSink

D0 = datetime(2026, 11, 20, 16, tzinfo=UTC)  # 2026-11-21 00:00 plant time (+08:00)
H, DAY = timedelta(hours=1), timedelta(days=1)


def rel(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def nodes(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out, stack = {}, [body["site"]]
    while stack:
        n = stack.pop()
        out[n["id"]] = n
        stack.extend(n["children"])
    return out


class Room:
    """A web sink over a historian holding a stored hour and two stored days."""

    def __init__(self, port: int, tmp_path: Path) -> None:
        d = boundary_plant_dict(web_port=port, var_dir=str(tmp_path))
        plant = parse_plant(d, str(tmp_path / "plant.yaml"))
        self.historian = Historian(plant.config.historian.path)
        self.sink = WebSink(plant.config, history=self.historian)
        self.base = f"http://127.0.0.1:{port}/api/v1"

    async def __aenter__(self) -> Room:
        await self.historian.start()
        # The hour 08:00 of 21 November: BF1 12.5 t, BF2 7.5 t, G1 30 t (60 MWh).
        t = D0 + 8 * H
        await self.historian.on_period(period("hour", t, t + H, [
            unit_period("BF1", t, 12.5), unit_period("BF2", t, 7.5),
            unit_period("G1", t, 30.0, output_mwh=60.0)],
            [source_period("S_BF1", t, 12.5), source_period("S_BF2", t, 7.5),
             source_period("S_G1", t, 30.0)]))
        # 21 November: BF1 300, BF2 100, G1 600 t; 22 November: BF1 200, BF2 invalid without
        # a value, G1 500 t.
        d1 = D0 + DAY
        await self.historian.on_period(period("day", D0, d1, [
            unit_period("BF1", D0, 300.0), unit_period("BF2", D0, 100.0),
            unit_period("G1", D0, 600.0)]))
        await self.historian.on_period(period("day", d1, d1 + DAY, [
            unit_period("BF1", d1, 200.0), unit_period("BF2", d1, math.nan, valid=False),
            unit_period("G1", d1, 500.0)]))
        await self.sink.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sink.stop()
        await self.historian.stop()


@pytest.fixture
async def room(port: int, tmp_path: Path) -> AsyncIterator[Room]:
    async with Room(port, tmp_path) as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_the_tree(room: Room, http: aiohttp.ClientSession) -> None:
    tree = await get_json(http, f"{room.base}/boundaries/tree")
    assert tree["site"] == {"id": "testsite", "name": "Test Plant", "name_zh": "测试电厂"}
    assert [(p["id"], p["kind"], [f["id"] for f in p["facilities"]])
            for p in tree["processes"]] == [("iron", "ironmaking", ["BF1", "BF2"]),
                                            ("power", "power", ["G1"])]
    assert tree["processes"][0]["facilities"][0]["sources"] == ["S_BF1"]


async def test_an_hour(room: Room, http: aiohttp.ClientSession) -> None:
    # iron = 12.5 + 7.5 = 20 t, power 30 t, site 50 t: iron 40 %, power 60 % of the site;
    # BF1 12.5/20 = 62.5 % of iron, 25 % of the site; BF2 37.5 % of iron, 15 % of the site.
    body = await get_json(http, f"{room.base}/boundaries?level=hour"
                                "&t=2026-11-21T08:30:00%2B08:00")
    assert (body["level"], body["label"]) == ("hour", "2026-11-21 08:00")
    assert body["t"] == "2026-11-21T08:00:00+08:00"
    assert body["t_end"] == "2026-11-21T09:00:00+08:00"
    assert body["periods_stored"] == 1
    n = nodes(body)
    assert rel(n["testsite"]["co2_t"], 50.0) and rel(n["iron"]["co2_t"], 20.0)
    assert rel(n["testsite"]["co2e_t"], 50.0)  # no other gas: CO2e = CO2
    assert rel(n["iron"]["share_of_site_pct"], 40.0)
    assert rel(n["power"]["share_of_site_pct"], 60.0)
    assert rel(n["BF1"]["share_of_parent_pct"], 62.5)
    assert rel(n["BF1"]["share_of_site_pct"], 25.0)
    assert rel(n["BF2"]["share_of_parent_pct"], 37.5)
    assert rel(n["BF2"]["share_of_site_pct"], 15.0)
    assert rel(n["G1"]["output_mwh"], 60.0) and n["testsite"]["output_t"] is None
    assert n["testsite"]["complete"] and n["testsite"]["share_of_parent_pct"] is None
    assert (n["testsite"]["n_valid"], n["testsite"]["n_invalid"]) == (2, 0)
    assert (n["BF1"]["n_valid"], n["BF1"]["n_invalid"]) == (1, 0)


async def test_a_day_by_its_plant_local_date(room: Room, http: aiohttp.ClientSession) -> None:
    # 21 November: iron 300 + 100 = 400 t, power 600 t, site 1000 t: iron 40 %, BF1 75 % of
    # iron and 30 % of the site, G1 60 %.
    body = await get_json(http, f"{room.base}/boundaries?level=day&t=2026-11-21")
    assert body["t"] == "2026-11-21T00:00:00+08:00" and body["label"] == "2026-11-21"
    n = nodes(body)
    assert rel(n["testsite"]["co2_t"], 1000.0) and rel(n["iron"]["co2_t"], 400.0)
    assert rel(n["BF1"]["share_of_parent_pct"], 75.0)
    assert rel(n["BF1"]["share_of_site_pct"], 30.0)
    assert rel(n["G1"]["share_of_site_pct"], 60.0)
    # The same day by a time in it with its offset.
    again = await get_json(http, f"{room.base}/boundaries?level=day"
                                 "&t=2026-11-21T23:59:00%2B08:00")
    assert again == body


async def test_a_month_with_a_unit_missing_a_day(room: Room, http: aiohttp.ClientSession
                                                 ) -> None:
    # November so far: BF1 300 + 200 = 500, BF2 100 (22 November without a value), G1 600
    # + 500 = 1100 t. iron = 600 t of what is known, incomplete, BF2 missing; power 1100 t
    # complete; site 1700 t known, incomplete: no share of the site or of iron.
    body = await get_json(http, f"{room.base}/boundaries?level=month&t=2026-11")
    assert (body["label"], body["periods_stored"]) == ("2026-11", 2)
    assert body["t"] == "2026-11-01T00:00:00+08:00"
    assert body["t_end"] == "2026-12-01T00:00:00+08:00"
    n = nodes(body)
    assert rel(n["iron"]["co2_t"], 600.0) and not n["iron"]["complete"]
    assert n["iron"]["missing"] == ["BF2"] and n["testsite"]["missing"] == ["BF2"]
    assert (n["iron"]["n_valid"], n["iron"]["n_invalid"]) == (1, 1)
    assert rel(n["power"]["co2_t"], 1100.0) and n["power"]["complete"]
    assert rel(n["G1"]["share_of_parent_pct"], 100.0)
    assert rel(n["testsite"]["co2_t"], 1700.0) and not n["testsite"]["complete"]
    assert n["iron"]["share_of_site_pct"] is None and n["BF1"]["share_of_parent_pct"] is None
    year = await get_json(http, f"{room.base}/boundaries?level=year&t=2026")
    assert year["label"] == "2026" and rel(nodes(year)["testsite"]["co2_t"], 1700.0)


@pytest.mark.parametrize(("query", "says"), [
    ("level=week", "'level' must be one of hour, day, month, year"),
    ("level=hour&t=2026-11-21", "does not name one hour"),
    ("level=day&t=2026-11", "does not name one day"),
    ("level=month&t=2026-02-30", "is not a date"),
    ("level=day&t=yesterday", "query parameter 't'"),
    ("level=day&t=2026-11-21T08:00:00", "needs a UTC offset"),
    ("level=year&t=9999", "outside the allowed range"),
])
async def test_bad_parameters_are_400_naming_them(room: Room, http: aiohttp.ClientSession,
                                                  query: str, says: str) -> None:
    body = await get_json(http, f"{room.base}/boundaries?{query}", status=400)
    assert says in body["error"]


async def test_without_a_historian_the_rollup_is_503(port: int, tmp_path: Path,
                                                     http: aiohttp.ClientSession) -> None:
    d = boundary_plant_dict(web_port=port, var_dir=str(tmp_path))
    sink = WebSink(parse_plant(d, "plant.yaml").config)
    await sink.start()
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        body = await get_json(http, f"{base}/boundaries?level=day", status=503)
        assert "no historian" in body["error"]
        tree = await get_json(http, f"{base}/boundaries/tree")
        assert len(tree["processes"]) == 2
    finally:
        await sink.stop()


def test_a_plant_date_names_its_day_on_a_sped_up_clock() -> None:
    """?t=2027-03-01 on a 0.5-s minute clock is the wall span that clock shows as that day
    (it used to be scaled from 1970 and, after the clock's 2026 anchor, landed elsewhere)."""
    from compute.clock import PlantClock
    from web.boundaries import bounds

    clock = PlantClock(minute_seconds=0.5)
    now = datetime(2026, 12, 7, 18, tzinfo=UTC)
    for level, text, first, after in (("day", "2027-03-01", "2027-03-01", "2027-03-02"),
                                      ("month", "2027-03", "2027-03-01", "2027-04-01"),
                                      ("year", "2027", "2027-01-01", "2028-01-01")):
        start, end = bounds(clock, level, text, now)
        assert clock.scaled_local(start).strftime("%Y-%m-%d %H:%M") == f"{first} 00:00"
        assert clock.scaled_local(end).strftime("%Y-%m-%d %H:%M") == f"{after} 00:00"
    # a day of a 0.5-s clock is 24 · 30 s = 720 s of wall time
    start, end = bounds(clock, "day", "2027-03-01", now)
    assert (end - start).total_seconds() == 720.0
