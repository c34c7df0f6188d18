"""Carbon assets over HTTP (web/assets.py, issue 17) on a real web sink on loopback with a
real historian, audit log, user store and asset keeper: the worked example posted by an
engineer gives the position by hand; roles; refusals as 400 naming the field; CSV export
and import (a bad line named with its column); 503 without a keeper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.audit import AuditLog, verify
from server.config import Plant, parse_plant
from server.historian import Historian
from server.users import UserStore
from tests.fixtures.plant import plant_dict
from tests.server.test_assets import WORKED, FixedKeeper
from tests.web.test_auth import Client, NewClient, call, csrf
from tests.web.test_auth import new_client as new_client  # the fixture
from tests.web.test_auth import users as users  # the fixture
from web.app import WebSink


@dataclass
class Carbon:
    """A running web sink with an asset keeper."""

    sink: WebSink
    keeper: FixedKeeper
    plant: Plant

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.sink.port}/api/v1"


@pytest.fixture
async def carbon(port: int, tmp_path: Path, users: UserStore
                 ) -> AsyncIterator[Carbon]:
    plant = parse_plant(plant_dict(web_port=port, var_dir=str(tmp_path)), "test_carbon")
    historian = Historian(plant.config.historian.path)
    await historian.start()
    audit = AuditLog(plant.config.historian.path)
    keeper = FixedKeeper(plant, historian, audit)
    await keeper.load()
    sink = WebSink(plant.config, users=users, audit=audit, journal=historian, assets=keeper)
    await sink.start()
    try:
        yield Carbon(sink, keeper, plant)
    finally:
        await sink.stop()
        await historian.stop()


async def login(c: Client, api: str, role: str) -> dict[str, str]:
    s = await call(c, "POST", f"{api}/login", 200,
                   body={"user": role, "password": f"demo-{role}"})
    return csrf(s)


async def test_worked_example_over_http(carbon: Carbon, new_client: NewClient
                                        ) -> None:
    c = await new_client()
    h = await login(c, carbon.api, "engineer")
    for body in [*WORKED, {"kind": "verified", "year": 2025, "quantity_t": 1_100_000}]:
        got = await call(c, "POST", f"{carbon.api}/carbon/entries", 201, body=body, headers=h)
        assert got["entry"]["kind"] == body["kind"] and got["entry"]["user"] == "engineer"
    p = await call(c, "GET", f"{carbon.api}/carbon/position?year=2025", 200)
    # 975 000 + min(60 000, 5 % · 1 100 000 = 55 000) − 1 100 000 = −70 000 t;
    # 70 000 t · 92 CNY/t = 6 440 000 CNY; holdings 975 000 · 92 = 89 700 000 CNY
    assert (p["emissions_t"], p["emissions_basis"]) == (1_100_000.0, "verified")
    assert (p["allowances_t"], p["offsets_held_t"], p["offsets_eligible_t"]) == (
        975_000.0, 60_000.0, 55_000.0)
    assert (p["surplus_t"], p["deficit_t"], p["deficit_cost_cny"]) == (
        0.0, 70_000.0, 6_440_000.0)
    assert p["holdings_value_cny"] == 89_700_000.0 and p["price_cny_t"] == 92.0
    assert p["surrender_deadline"] == "2026-12-31" and p["days_to_deadline_d"] == 303.0
    trades = await call(c, "GET", f"{carbon.api}/carbon/entries?kind=trade", 200)
    assert [(e["side"], e["quantity_t"]) for e in trades] == [
        ("buy", 20_000.0), ("buy", 10_000.0), ("sell", 5_000.0)]
    trend = await call(c, "GET", f"{carbon.api}/carbon/trend?year=2025", 200)
    # allowance budget 975 000 t prorated to the end of January: 975 000 · 31 / 365
    assert len(trend) == 12
    assert trend[0]["allowance_prorated_t"] == pytest.approx(82_808.219, abs=1e-3)
    # the sale reversed over HTTP: 980 000 t
    await call(c, "POST", f"{carbon.api}/carbon/entries", 201, headers=h,
               body={"kind": "reversal", "reverses": trades[2]["id"], "reason": "cancelled"})
    p = await call(c, "GET", f"{carbon.api}/carbon/position?year=2025", 200)
    assert p["allowances_t"] == 980_000.0 and p["deficit_t"] == 65_000.0
    assert verify(carbon.plant.config.historian.path).ok


async def test_roles_and_refusals(carbon: Carbon, new_client: NewClient
                                  ) -> None:
    anon = await new_client()
    body = WORKED[0]
    got = await call(anon, "POST", f"{carbon.api}/carbon/entries", 401, body=body)
    assert got["error"] == "not logged in"
    viewer = await new_client()
    hv = await login(viewer, carbon.api, "viewer")
    await call(viewer, "POST", f"{carbon.api}/carbon/entries", 403, body=body, headers=hv)
    c = await new_client()
    h = await login(c, carbon.api, "engineer")
    await call(c, "POST", f"{carbon.api}/carbon/entries", 201, body=body, headers=h)
    bad = await call(c, "POST", f"{carbon.api}/carbon/entries", 400, headers=h, body={
        "kind": "trade", "year": 2025, "instrument": "national_allowance", "side": "sell",
        "quantity_t": 950_001, "price_cny_t": 90})
    assert "quantity_t: sale of 950001 t is more than the 950000 t" in bad["error"]
    bad = await call(c, "POST", f"{carbon.api}/carbon/entries", 400, headers=h,
                     body={"kind": "price", "price_cny_t": -4})
    assert "price_cny_t" in bad["error"]
    for q in ("year=abc", "year=1999", "year=20255"):
        bad = await call(c, "GET", f"{carbon.api}/carbon/position?{q}", 400)
        assert "'year'" in bad["error"]
    bad = await call(c, "GET", f"{carbon.api}/carbon/entries?kind=gift", 400)
    assert "'kind'" in bad["error"]
    assert len(carbon.keeper.entries()) == 1


async def test_csv_over_http(carbon: Carbon, new_client: NewClient) -> None:
    c = await new_client()
    h = await login(c, carbon.api, "engineer")
    await call(c, "POST", f"{carbon.api}/carbon/entries", 201, body=WORKED[0], headers=h)
    async with c.get(f"{carbon.api}/carbon/entries.csv") as r:
        assert r.status == 200 and r.content_type == "text/csv"
        text = await r.text()
    header = text.splitlines()[0]
    assert header.startswith("id,kind,t,year,instrument,quantity_t,side,price_cny_t")
    rows = (f"{header}\n,trade,2025-07-01T00:00:00+08:00,2025,national_allowance,2000,buy,"
            "81,X,,,note,,\n,surrender,2025-07-02T00:00:00+08:00,2025,ccer,1,,,,,,,,\n")
    ct = {**h, "Content-Type": "text/csv"}
    bad = await call(c, "POST", f"{carbon.api}/carbon/entries/import", 400, raw=rows,
                     headers=ct)
    assert bad["error"].startswith("line 3: surrender: quantity_t: surrender of 1 t is more "
                                   "than the 0 t of ccer held for 2025")
    good = rows.split("\n")
    done = await call(c, "POST", f"{carbon.api}/carbon/entries/import", 201,
                      raw="\n".join(good[:2]) + "\n", headers=ct)
    assert [(e["kind"], e["quantity_t"], e["document"]) for e in done["entries"]] == [
        ("trade", 2000.0, "note")]
    p = await call(c, "GET", f"{carbon.api}/carbon/position?year=2025", 200)
    assert p["allowances_t"] == 952_000.0 and p["price_cny_t"] == 81.0


async def test_no_keeper_is_503(port: int, tmp_path: Path) -> None:
    cfg = parse_plant(plant_dict(web_port=port, var_dir=str(tmp_path)), "t").config
    sink = WebSink(cfg)
    await sink.start()
    try:
        async with aiohttp.ClientSession() as c:
            got: Any = await call(c, "GET",
                                  f"http://127.0.0.1:{sink.port}/api/v1/carbon/position", 503)
            assert "no carbon assets" in got["error"]
    finally:
        await sink.stop()
