"""The carbon-asset keeper (server/assets.py) on a real historian file and audit log
(issue 17): the worked example entered through the keeper, live emissions from stored days
and today's hours, the refusals (naming the field), the append-only ledger, the audit
chain, the CSV export and import."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from model.errors import ConfigError, InvalidValueError
from server.assets import AssetKeeper, AssetsError, position_json
from server.audit import AuditLog, verify
from server.config import parse_plant
from server.historian import Historian
from tests.fixtures.plant import plant_dict
from tests.web.test_api import stored_hour

# 2026-03-03 12:00 in Shanghai (the plant's zone): plant-local days start at 16:00 UTC
NOW = datetime(2026, 3, 3, 4, 0, tzinfo=UTC)
NA = "national_allowance"


class FixedKeeper(AssetKeeper):
    """The keeper at a fixed time."""

    at = NOW

    def now(self) -> datetime:
        return self.at


def local_day(y: int, m: int, d: int) -> datetime:
    """UTC start of a Shanghai day."""
    return datetime(y, m, d, tzinfo=UTC) - timedelta(hours=8)


async def store_day(h: Historian, start: datetime, co2_t: float) -> None:
    rec = stored_hour(start, co2_t)
    await h.on_period(replace(rec, level="day", t_end=start + timedelta(days=1),
                              allowance=None))


@pytest.fixture
async def keeper(tmp_path: Path) -> AsyncIterator[FixedKeeper]:
    plant = parse_plant(plant_dict(var_dir=str(tmp_path)), "test_assets")
    h = Historian(plant.config.historian.path)
    await h.start()
    # 2026: the days of 1 and 2 March (100 t, 120 t), an hour of 2 March already in its
    # day (7 t, not counted again), today's two hours (5 t each); 31 Dec 2025: 999 t
    await store_day(h, local_day(2026, 3, 1), 100.0)
    await store_day(h, local_day(2026, 3, 2), 120.0)
    await store_day(h, local_day(2025, 12, 31), 999.0)
    await h.on_period(stored_hour(local_day(2026, 3, 2), 7.0))
    await h.on_period(stored_hour(local_day(2026, 3, 3), 5.0))
    await h.on_period(stored_hour(local_day(2026, 3, 3) + timedelta(hours=1), 5.0))
    k = FixedKeeper(plant, h, AuditLog(plant.config.historian.path))
    await k.load()
    try:
        yield k
    finally:
        await h.stop()


WORKED: list[dict[str, Any]] = [
    {"kind": "allocation", "year": 2025, "side": "final", "quantity_t": 950_000,
     "document": "MEE allocation 2025", "t": "2025-03-01T00:00:00+08:00"},
    {"kind": "trade", "year": 2025, "instrument": NA, "side": "buy", "quantity_t": 20_000,
     "price_cny_t": 80, "counterparty": "A", "t": "2025-04-01T10:00:00+08:00"},
    {"kind": "trade", "year": 2025, "instrument": NA, "side": "buy", "quantity_t": 10_000,
     "price_cny_t": 85, "counterparty": "B", "t": "2025-05-01T10:00:00+08:00"},
    {"kind": "trade", "year": 2025, "instrument": NA, "side": "sell", "quantity_t": 5_000,
     "price_cny_t": 90, "counterparty": "C", "t": "2025-06-01T10:00:00+08:00"},
    {"kind": "acquisition", "year": 2025, "instrument": "ccer", "quantity_t": 60_000,
     "price_cny_t": 40, "vintage": 2024, "t": "2025-06-15T10:00:00+08:00"},
    {"kind": "price", "price_cny_t": 92, "t": "2025-06-30T15:00:00+08:00"},
]


async def enter_all(k: AssetKeeper, bodies: list[dict[str, Any]]) -> list[int]:
    return [(await k.enter("engineer", b))["entry"]["id"] for b in bodies]


async def test_worked_example_through_the_keeper(keeper: FixedKeeper) -> None:
    await enter_all(keeper, WORKED)
    # before verification: the live emissions of 2025 are its one stored day, 999 t
    live = await keeper.position(2025)
    assert (live.emissions_basis, live.emissions_t) == ("live", 999.0)
    ids = await enter_all(keeper, [{"kind": "verified", "year": 2025,
                                    "quantity_t": 1_000_000, "document": "verifier"}])
    p = await keeper.position(2025)
    # 975 000 allowances + min(60 000, 50 000) eligible − 1 000 000 = +25 000 t
    assert p.emissions_basis == "verified" and p.emissions_t == 1_000_000.0
    assert (p.allowances_t, p.offsets_eligible_t, p.surplus_t, p.deficit_t) == (
        975_000.0, 50_000.0, 25_000.0, 0.0)
    assert p.price_cny_t == 92.0 and p.holdings_value_cny == 89_700_000.0
    assert p.surrender_deadline == date(2026, 12, 31) and p.days_to_deadline == 303.0
    # a second verified figure is refused while the first stands
    with pytest.raises(AssetsError, match="verified: year: 2025 has verified emissions "
                                          "already"):
        await keeper.enter("engineer", {"kind": "verified", "year": 2025,
                                        "quantity_t": 1_100_000})
    # the verifier corrects to 1 100 000 t: the old entry reversed, a new one entered
    await enter_all(keeper, [{"kind": "reversal", "reverses": ids[0], "reason": "typo"},
                             {"kind": "verified", "year": 2025, "quantity_t": 1_100_000}])
    p = await keeper.position(2025)
    # 975 000 + min(60 000, 55 000) − 1 100 000 = −70 000 t; at 92 CNY/t 6 440 000 CNY
    assert (p.offsets_eligible_t, p.deficit_t, p.deficit_cost_cny) == (
        55_000.0, 70_000.0, 6_440_000.0)
    js = position_json(p)
    assert js["deficit_cost_cny"] == 6_440_000.0 and js["surrender_deadline"] == "2026-12-31"
    assert js["allowances_t"] == 975_000.0 and js["emissions_basis"] == "verified"
    # a surrender reduces the holdings, not the balance
    await enter_all(keeper, [{"kind": "surrender", "year": 2025, "instrument": NA,
                              "quantity_t": 900_000}])
    p = await keeper.position(2025)
    assert (p.allowances_t, p.surrendered_t, p.deficit_t) == (75_000.0, 900_000.0, 70_000.0)
    held = {h.instrument: h.held_t for h in p.holdings}
    assert held[NA] == 75_000.0 and held["ccer"] == 60_000.0


async def test_live_emissions_and_forecast(keeper: FixedKeeper) -> None:
    p = await keeper.position()  # the current year, 2026
    # 100 + 120 (days) + 5 + 5 (today's hours) = 230 t; the 7 t hour is in its day
    assert (p.year, p.emissions_basis, p.emissions_t) == (2026, "live", 230.0)
    # rate: mean of 100, 120 = 110 t/d; days left: 3 Mar 12:00 → 1 Jan 00:00 = 303.5 d
    # central 230 + 110 · 303.5 = 33 615 t; s² = 200, var = 200 · (303.5 + 303.5² / 2)
    # = 9 271 925, 1.96 · √ = 5 968.058 t
    assert p.forecast_year_end_t == 33_615.0 and p.forecast_rate_t_d == 110.0
    assert p.forecast_low_t == pytest.approx(27_646.942, abs=1e-3)
    assert p.forecast_high_t == pytest.approx(39_583.058, abs=1e-3)
    # no allowances for 2026: the whole forecast is the forecast deficit
    assert p.forecast_deficit_t == 33_615.0 and p.deficit_t == 230.0
    await keeper.enter("engineer", {"kind": "allocation", "year": 2026, "side": "pre",
                                    "quantity_t": 3650})
    trend = await keeper.trend(2026)
    # March: 220 t of two days; allowance 3 650 · 90/365 = 900 by its end; cumulative 220
    assert trend[2]["emissions_t"] == 220.0 and trend[2]["days"] == 2.0
    assert trend[2]["allowance_prorated_t"] == 900.0 and trend[2]["gap_t"] == 680.0


@pytest.mark.parametrize(("body", "words"), [
    ({"kind": "trade", "year": 2025, "instrument": NA, "side": "sell", "quantity_t": 980_000,
      "price_cny_t": 90}, "quantity_t: sale of 980000 t is more than the 975000 t of "
                          "national_allowance held for 2025"),
    ({"kind": "surrender", "year": 2025, "instrument": "ccer", "quantity_t": 60_001},
     "quantity_t: surrender of 60001 t is more than the 60000 t of ccer held"),
    ({"kind": "transfer", "year": 2025, "instrument": "local_allowance", "side": "out",
      "quantity_t": 1}, "quantity_t: transfer out of 1 t is more than the 0 t"),
    ({"kind": "trade", "year": 2025, "instrument": NA, "side": "buy", "quantity_t": -5,
      "price_cny_t": 80}, "quantity_t: Input should be greater than 0"),
    ({"kind": "trade", "year": 2025, "instrument": NA, "side": "buy", "quantity_t": 5,
      "price_cny_t": -1}, "price_cny_t: Input should be greater than or equal to 0"),
    ({"kind": "price", "price_cny_t": "NaN"}, "price_cny_t"),
    ({"kind": "allocation", "year": 1990, "side": "pre", "quantity_t": 5}, "year: Input"),
    ({"kind": "allocation", "year": 2028, "side": "pre", "quantity_t": 5},
     "year 2028 is after next year (2027)"),
    ({"kind": "allocation", "year": 2025, "side": "pre"}, "quantity_t: Field required"),
    ({"kind": "allocation", "year": 2025, "side": "pre", "quantity_t": 5, "colour": "red"},
     "colour: Extra inputs are not permitted"),
    ({"kind": "acquisition", "year": 2025, "instrument": "ccer", "quantity_t": 5,
      "vintage": 2027}, "vintage 2027 is in the future"),
    ({"kind": "price", "price_cny_t": 5, "t": "2026-03-10T00:00:00Z"}, "is in the future"),
    ({"kind": "swap"}, "'kind'"),
    ({"kind": "reversal", "reverses": 99, "reason": "x"}, "reverses: there is no entry 99"),
    ({"kind": "reversal", "reverses": 1}, "reason: Field required"),
])
async def test_refusals_name_the_field(keeper: FixedKeeper, body: dict[str, Any],
                                       words: str) -> None:
    await enter_all(keeper, WORKED)
    with pytest.raises(AssetsError, match=None) as info:
        await keeper.enter("engineer", body)
    assert words in str(info.value), str(info.value)
    assert isinstance(info.value, InvalidValueError)
    assert len(keeper.entries()) == len(WORKED)  # nothing kept


async def test_reversal_rules(keeper: FixedKeeper) -> None:
    ids = await enter_all(keeper, WORKED)
    await enter_all(keeper, [{"kind": "surrender", "year": 2025, "instrument": "ccer",
                              "quantity_t": 50_000}])
    # undoing the CCER purchase would leave −50 000 t held: refused
    with pytest.raises(AssetsError, match=r"reverses: reversing entry 5 .* is more than"):
        await keeper.enter("engineer", {"kind": "reversal", "reverses": ids[4],
                                        "reason": "wrong"})
    (rev,) = await enter_all(keeper, [{"kind": "reversal", "reverses": ids[3],
                                       "reason": "the sale fell through"}])
    with pytest.raises(AssetsError, match="reverses: entry 4 is already reversed"):
        await keeper.enter("engineer", {"kind": "reversal", "reverses": ids[3],
                                        "reason": "again"})
    with pytest.raises(AssetsError, match="is a reversal"):
        await keeper.enter("engineer", {"kind": "reversal", "reverses": rev, "reason": "x"})
    sale = keeper.entries("trade")[2]
    assert sale["id"] == ids[3] and sale["reversed_by"] == rev
    assert (await keeper.position(2025)).allowances_t == 980_000.0


async def test_ledger_is_append_only_and_audited(keeper: FixedKeeper) -> None:
    await enter_all(keeper, WORKED)
    path = keeper.ledger.path
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE carbon_entry SET quantity_t = 1 WHERE id = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM carbon_entry WHERE id = 4")
        assert db.execute("SELECT quantity_t FROM carbon_entry WHERE id = 2").fetchone() == (
            20_000.0,)
    finally:
        db.close()
    # read back in order by a new keeper
    again = FixedKeeper(keeper.plant, keeper.historian, keeper.audit)
    await again.load()
    assert again.entries() == keeper.entries()
    assert [e["kind"] for e in again.entries()] == [
        "allocation", "trade", "trade", "trade", "acquisition", "price"]
    verdict = verify(path)
    assert verdict.ok and verdict.entries == 6, verdict.problem
    audit = keeper.audit.entries()
    assert [a.action for a in audit] == ["carbon_allocation", "carbon_trade", "carbon_trade",
                                         "carbon_trade", "carbon_acquisition", "carbon_price"]
    assert audit[3].target == "carbon:4" and audit[3].detail["side"] == "sell"
    assert audit[3].detail["quantity_t"] == 5000.0 and audit[3].user == "engineer"


async def test_csv_export_and_import(keeper: FixedKeeper) -> None:
    await enter_all(keeper, WORKED[:2])
    text = keeper.csv_export()
    lines = text.splitlines()
    assert lines[0] == ("id,kind,t,year,instrument,quantity_t,side,price_cny_t,counterparty,"
                        "vintage,reverses,document,user,reason")
    assert lines[2] == ("2,trade,2025-04-01T02:00:00+00:00,2025,national_allowance,20000.0,"
                        "buy,80.0,A,,,,engineer,")
    # the export imports into another ledger as it is (id and user are the importer's)
    other = parse_plant(plant_dict(var_dir=str(keeper.ledger.path.parent / "other")), "o")
    k2 = FixedKeeper(other, keeper.historian, AuditLog(other.config.historian.path))
    await k2.load()
    done = await k2.import_csv("admin", text)
    assert [e["quantity_t"] for e in done["entries"]] == [950_000.0, 20_000.0]
    assert done["entries"][1]["user"] == "admin"
    assert (await k2.position(2025)).allowances_t == 970_000.0
    header = lines[0]
    bad = f"{header}\nx,price,2025-07-01T00:00:00+08:00,,,,,93,,,,,,\n" \
          f"x,trade,2025-07-02T00:00:00+08:00,2025,{NA},abc,sell,90,,,,,,\n"
    with pytest.raises(AssetsError, match="line 3, column quantity_t: 'abc' is not a number"):
        await keeper.import_csv("engineer", bad)
    oversell = bad.replace(",abc,", ",999999,")
    with pytest.raises(AssetsError, match="line 3: trade: quantity_t: sale of 999999 t"):
        await keeper.import_csv("engineer", oversell)
    negative = bad.replace(",abc,", ",-3,")
    with pytest.raises(AssetsError, match="line 3, column quantity_t: Input should be greater"):
        await keeper.import_csv("engineer", negative)
    with pytest.raises(AssetsError, match="line 1: the header must be"):
        await keeper.import_csv("engineer", "kind,quantity_t\ntrade,5\n")
    assert len(keeper.entries()) == 2  # all or none: the price row did not go in
    ok = bad.replace(",abc,", ",1000,")
    done = await keeper.import_csv("engineer", ok)
    assert [e["kind"] for e in done["entries"]] == ["price", "trade"]
    # the latest price entry (93 on 1 July) values the holdings, not the later trade's 90
    assert (await keeper.position(2025)).price_cny_t == 93.0


async def test_renewable_meter_tag(tmp_path: Path) -> None:
    d = plant_dict(var_dir=str(tmp_path))
    d["devices"][0]["tags"].append({"id": "pv_mw", "register": 30, "unit": "MW",
                                    "sim": {"value": 3.0}})
    d["carbon"] = {"renewable_tag": "pv_mw", "grid_factor_tco2_mwh": 0.5703}
    plant = parse_plant(d, "test_assets")
    h = Historian(plant.config.historian.path)
    await h.start()
    try:
        k = FixedKeeper(plant, h, AuditLog(plant.config.historian.path))
        await k.load()
        start = local_day(2026, 3, 3)
        rows: list[tuple[str, int, float | None, float | None, float | None, int, str]] = [
            ("pv_mw", int((start + timedelta(minutes=i)).timestamp() * 1000), 3.0, 2.9,
                 3.1, 12, "N") for i in range(120)]
        rows.append(("pv_mw", int((start + timedelta(minutes=200)).timestamp() * 1000), None,
                     None, None, 0, "B"))  # a minute without samples counts nothing
        rows.append(("pv_mw", int(local_day(2025, 6, 1).timestamp() * 1000), 50.0, 50.0,
                     50.0, 12, "N"))  # another year
        db = sqlite3.connect(plant.config.historian.path)
        with db:
            db.executemany("INSERT INTO tag_minute VALUES (?,?,?,?,?,?,?)", rows)
        db.close()
        await k.enter("engineer", {"kind": "reduction", "year": 2026,
                                   "side": "renewable_mwh", "quantity_t": 4.0})
        p = await k.position(2026)
        # 120 minutes at 3 MW = 6 MWh metered + 4 MWh entered = 10 MWh · 0.5703 = 5.703 t
        assert p.renewable_mwh == pytest.approx(10.0, abs=1e-12)
        assert p.renewable_avoided_t == pytest.approx(5.703, abs=1e-12)
        assert p.net_emissions_t == pytest.approx(p.emissions_t - 5.703, abs=1e-9)
    finally:
        await h.stop()
    d["carbon"] = {"renewable_tag": "s1_co2"}  # a tag in %, not a meter
    with pytest.raises(ConfigError, match=r"carbon\.renewable_tag: tag 's1_co2' has unit '%'"):
        FixedKeeper(parse_plant(d, "t"), h, AuditLog(plant.config.historian.path))
    d["carbon"] = {"renewable_tag": "nope"}
    with pytest.raises(ConfigError, match="unknown tag 'nope'"):
        FixedKeeper(parse_plant(d, "t"), h, AuditLog(plant.config.historian.path))
