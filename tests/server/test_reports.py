"""Reports (issue 16): daily, monthly, annual, custom and the carbon-market platform's
monthly workbook, opened back with openpyxl; the CLI, the API and the e-mailed schedule.

The historian holds the worked day of tests/compute/test_periods.py (plant day 2026-01-01
in Asia/Shanghai): hours 0–2 at 12.0, 12.5, 13.0 % CO2, hour 3 an instrument fault (D)
substituted by mrr_mean_2sigma (221.58251 t), hours 4–23 at 196.96223 t, and hour 0 of
the next day. Day total 4 776.33409 t (measured 4 554.75158 t, 23 valid hours); coal
24 h × 100 t/h. Here the coal's NCV comes from a lab entry of the ledger (18.0 GJ/t, entry
1, report LAB-2026-01), so the factor method gives
2 400 · 18.0 · 0.03085 · 0.99 · 44/12 = 4 837.7736 t.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from openpyxl import load_workbook

from compute.entries import LabFactor, Records
from compute.periods import PeriodCycle
from model.errors import ConfigError
from model.flags import DataFlag
from model.records import PeriodRecords
from server.cli import main
from server.config import Plant, parse_plant
from server.historian import Historian
from server.ledger import Ledger
from server.reports.definition import load_definition, parse_definition
from server.reports.engine import ReportMaker
from server.reports.local import make_from_files
from server.reports.schedule import ReportScheduler, email_channels
from server.reports.writers import CJK_FONTS
from tests.compute.test_periods import DAY0, hours_of_minutes, kwh_readings, printed, run
from tests.fixtures.plant import plant_dict
from tests.fixtures.smtp import SmtpServer
from web.app import WebSink

REPO = Path(__file__).resolve().parents[2]
DAY1 = DAY0 + timedelta(days=1)
LAB_COAL_T = 2400 * 18.0 * 0.03085 * 0.99 * 44 / 12  # 4 837.7736 t


def plant_data(tmp: Path, smtp_port: int = 2525, **reports: Any) -> dict[str, Any]:
    """test_periods.config()'s plant, its historian in `tmp`, an e-mail channel."""
    d = plant_dict(var_dir=str(tmp))
    d["devices"][0]["tags"] += [
        {"id": "u1_coal", "register": 30, "unit": "t/h", "sim": {"value": 100.0}},
        {"id": "u1_aux_kwh", "register": 32, "type": "float64", "unit": "kWh",
         "sim": {"value": 0.0}}]
    d["factor_table"] = str(REPO / "config" / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["streams"] = [
        {"id": "U1_coal", "kind": "solid_fuel", "factors": "demo_coal",
         "rate_per_h": {"tag": "u1_coal"}},
        {"id": "U1_aux", "kind": "electricity", "factors": "grid_electricity",
         "counter": {"tag": "u1_aux_kwh", "rollover_count": 1_000_000,
                     "max_jump_per_h": 100_000, "quantity_per_count": 0.001}}]
    d["allowance"] = {"annual_t": 1_000_000.0, "carbon_price_cny_t": 80.0}
    d["units"][0]["sources"][0]["substitution"] = {"rule": "mrr_mean_2sigma", "lookback_h": 3}
    d["alarms"] = {"channels": [{"id": "mail", "kind": "email", "host": "127.0.0.1",
                                 "port": smtp_port, "sender": "scada@plant.test",
                                 "to": ["ops@plant.test"]}]}
    d["reports"] = {"capacity_mw": {"U1": 600.0}, **reports}
    return d


LAB = LabFactor("demo_coal", DAY0, {"ncv_gj_t": 18.0}, "LAB-2026-01", entry=1)


def worked_records(plant: Plant, hours: int = 25) -> list[PeriodRecords]:
    batch = hours_of_minutes(DAY0, hours, conc={1: 12.5, 2: 13.0}, bad={3: DataFlag.D},
                             kwh=kwh_readings(hours * 60, jump_at=5 * 60 + 30))
    return run(PeriodCycle(plant.plan(Records(lab_factors=(LAB,)))), batch)


async def store(plant: Plant, hours: int = 25) -> list[PeriodRecords]:
    """The worked day in the plant's historian and the lab entry in its ledger."""
    path = Path(plant.config.historian.path)
    ledger = Ledger(path)
    e = ledger.append("engineer", "factor", "demo_coal", "", DAY0, {"ncv_gj_t": 18.0},
                      document="LAB-2026-01", reason="monthly coal analysis")
    assert e.id == LAB.entry
    recs = worked_records(plant, hours)
    h = Historian(path)
    await h.start()
    for r in recs:
        await h.on_period(r)
    await h.stop()
    return recs


@pytest.fixture
async def plant(tmp_path: Path) -> Plant:
    p = parse_plant(plant_data(tmp_path), str(tmp_path / "plant.yaml"))
    await store(p)
    return p


def sheet_rows(body: bytes, sheet_key: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    """(Chinese headers, English headers, rows) of the sheet whose title ends in the key."""
    wb = load_workbook(io.BytesIO(body))
    (ws,) = [wb[n] for n in wb.sheetnames if n.endswith(sheet_key)]
    rows = list(ws.iter_rows(values_only=True))
    return [str(c) for c in rows[0]], [str(c) for c in rows[1]], rows[2:]


def by_en(en: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(en, row, strict=True))


async def make(plant: Plant, kind: str, start: datetime, end: datetime, fmt: str) -> bytes:
    rep = await make_from_files(plant, "plant.yaml", kind, start, end, fmt)
    return rep.body


async def test_daily_report_figures_are_the_worked_day_and_the_historian(plant: Plant) -> None:
    body = await make(plant, "daily", DAY0, DAY1, "xlsx")
    zh, en, rows = sheet_rows(body, "sources")
    assert "CEMS二氧化碳排放量(t)" in zh and "Valid-hour capture rate (%)" in en
    (s1,) = [by_en(en, r) for r in rows]
    assert s1["Period (plant time)"] == "2026-01-01" and s1["Source"] == "S1"
    assert s1["CO2 by CEMS (t)"] == printed(4776.33409, 5)
    assert s1["CO2 measured (t)"] == printed(4776.33409 - 221.58251, 5)
    assert (s1["Hours in period (h)"], s1["Valid hours (h)"]) == (24, 23)
    assert s1["Valid-hour capture rate (%)"] == pytest.approx(23 / 24 * 100, rel=1e-12)
    assert (s1["Substituted hours (h)"], s1["Substitution rule"]) == (1, "mrr_mean_2sigma")
    assert s1["Missing hours (h)"] == 0 and s1["Flag (HJ 212)"] == "N"
    # The day with a substituted hour shows that hour, its flag and its rule.
    _, en_h, hours = sheet_rows(body, "substituted_hours")
    (h3,) = [by_en(en_h, r) for r in hours]
    assert (h3["Hour (plant time)"], h3["Flag (HJ 212)"], h3["Substitution rule"]) == (
        "2026-01-01 03:00", "D", "mrr_mean_2sigma")
    assert h3["Substituted"] is True and h3["CO2 counted (t)"] == printed(221.58251, 5)
    # The factor method with the lab entry's version; the unit's reconciliation.
    _, en_s, streams = sheet_rows(body, "streams")
    coal, aux = (by_en(en_s, r) for r in streams)
    assert (coal["Quantity (t)"], coal["Factor version"]) == (2400.0, "demo_coal@lab1")
    assert coal["CO2 by factor method (t)"] == printed(4837.7736, 4) == LAB_COAL_T
    assert aux["Quantity (MWh)"] == pytest.approx(1438.0) and aux["Quantity (t)"] is None
    assert aux["Factor version"] == "grid-cn-0.5703"
    _, en_u, units = sheet_rows(body, "units")
    (u1,) = [by_en(en_u, r) for r in units]
    assert u1["CO2 by factor method (t)"] == printed(4837.7736, 4)
    # (4 776.33409 − 4 837.7736) / 4 837.7736 · 100 = −1.27000 %
    assert u1["Reconciliation CEMS vs factor (%)"] == printed(-1.27000, 5)
    assert u1["Output (MWh)"] == pytest.approx(14_400.0)
    _, en_f, factors = sheet_rows(body, "factor_versions")
    lab = [by_en(en_f, r) for r in factors if r[0] == "demo_coal@lab1"]
    assert {(f["Factor"], f["Value"]) for f in lab} >= {("ncv_gj_t", 18.0)}
    assert all(f["Origin"] == "化验录入 lab entry" and f["Document"] == "LAB-2026-01"
               for f in lab)
    # Every figure equals the historian's stored day, to the 16 significant digits a
    # workbook keeps (openpyxl writes them so; Excel itself shows 15).
    h = Historian(plant.config.historian.path)
    await h.start()
    try:
        (day,) = await h.periods("day", DAY0, DAY1)
    finally:
        await h.stop()

    def same(x: Any) -> Any:
        return pytest.approx(x, rel=1e-15, abs=0)

    assert s1["CO2 by CEMS (t)"] == same(day.sources[0].co2_t)
    assert s1["CO2 measured (t)"] == same(day.sources[0].co2_measured_t)
    assert u1["CO2 by CEMS (t)"] == same(day.units[0].co2_cems_t)
    assert u1["CO2 by factor method (t)"] == same(day.units[0].co2_factor_t)
    assert u1["Reconciliation CEMS vs factor (%)"] == same(
        day.units[0].reconciliation_diff_pct)
    # CO2e: the stored day's (no other gas configured: its CO2), under the default set SAR
    assert (u1["CO2e (t)"], u1["GWP set"]) == (same(day.units[0].co2e_t), "SAR")
    # The unit's day counts its source's substituted hour 3 as an hour with substituted data
    assert u1["Hours with substituted data (h)"] == day.units[0].n_substituted == 1
    (stored_coal,) = [s for s in day.streams if s.stream == "U1_coal"]
    assert coal["CO2 by factor method (t)"] == same(stored_coal.co2_t)
    _, en_a, allowance = sheet_rows(body, "allowance")
    (a,) = [by_en(en_a, r) for r in allowance]
    assert a["As of (plant time)"] == "2026-01-02 00:00"
    assert a["Year to date (t)"] == printed(4776.33409, 5)


async def test_monthly_and_annual_reports_sum_the_days(tmp_path: Path) -> None:
    p = parse_plant(plant_data(tmp_path), "plant.yaml")
    await store(p, hours=49)  # the worked day, then 2026-01-02 all at 12.0 %, 01-03 00:00
    body = await make(p, "monthly", DAY0, DAY1, "xlsx")
    _, en, rows = sheet_rows(body, "sources")
    (m,) = [by_en(en, r) for r in rows]
    # Day 2: 24 · 196.96223035 = 4 727.09353 t; the month 4 776.334086 + 4 727.093528 =
    # 9 503.42761 t. January: 31 · 24 = 744 hours, 23 + 24 = 47 valid; the 29 days
    # without a record are 696 missing hours; two valid days of 31: the month is B.
    assert m["Period (plant time)"] == "2026-01"
    assert m["CO2 by CEMS (t)"] == printed(9503.42761, 5)
    assert m["CO2 measured (t)"] == printed(9281.84511, 5)  # less the substituted hour
    assert (m["Hours in period (h)"], m["Valid hours (h)"], m["Missing hours (h)"]) == (
        744, 47, 696)
    assert m["Valid-hour capture rate (%)"] == pytest.approx(47 / 744 * 100, rel=1e-12)
    assert (m["Substituted hours (h)"], m["Substitution rule"]) == (1, "mrr_mean_2sigma")
    assert (m["Valid days (d)"], m["Days (d)"], m["Flag (HJ 212)"]) == (2, 31, "B")
    _, en_u, units = sheet_rows(body, "units")
    (u,) = [by_en(en_u, r) for r in units]
    # Factor method: 2 days · 4 837.7736 t; (9 503.42761 − 9 675.5472) / 9 675.5472 · 100
    # = −1.77891 %
    assert u["CO2 by factor method (t)"] == printed(2 * 4837.7736, 4)
    assert u["Reconciliation CEMS vs factor (%)"] == printed(-1.77891, 5)
    assert u["Output (MWh)"] == pytest.approx(2 * 14_400.0)
    body = await make(p, "annual", DAY0, DAY1, "xlsx")
    _, en, rows = sheet_rows(body, "sources")
    (y,) = [by_en(en, r) for r in rows]
    assert (y["Period (plant time)"], y["Hours in period (h)"], y["Missing hours (h)"]) == (
        "2026", 8760, 8760 - 48)
    assert y["CO2 by CEMS (t)"] == printed(9503.42761, 5)
    # A daily report of both days: one row each.
    body = await make(p, "daily", DAY0, DAY1 + timedelta(days=1), "xlsx")
    _, en, rows = sheet_rows(body, "sources")
    assert [(r[0], round(r[4], 5)) for r in rows] == [("2026-01-01", 4776.33409),
                                                      ("2026-01-02", 4727.09353)]


async def test_csv_report_has_both_languages_and_the_figures(plant: Plant) -> None:
    body = await make(plant, "daily", DAY0, DAY1, "csv")
    text = body.decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(text)))
    head = lines.index(["# 排放源 Sources (CEMS)"]) + 1
    header = lines[head]
    assert "CEMS二氧化碳排放量(t) CO2 by CEMS (t)" in header
    row = dict(zip(header, lines[head + 1], strict=True))
    assert float(row["CEMS二氧化碳排放量(t) CO2 by CEMS (t)"]) == printed(4776.33409, 5)
    # CSV keeps every digit: the very float the historian stored.
    h = Historian(plant.config.historian.path)
    await h.start()
    try:
        (day,) = await h.periods("day", DAY0, DAY1)
    finally:
        await h.stop()
    assert float(row["实测二氧化碳排放量(t) CO2 measured (t)"]) == day.sources[0].co2_measured_t
    assert row["替代规则 Substitution rule"] == "mrr_mean_2sigma"


@pytest.mark.skipif(not any(Path(f).is_file() for f in CJK_FONTS), reason="no CJK font")
async def test_pdf_report_embeds_a_chinese_font(plant: Plant) -> None:
    body = await make(plant, "daily", DAY0, DAY1, "pdf")
    assert body.startswith(b"%PDF-") and b"/FontFile2" in body  # the TrueType font embedded


async def test_platform_workbook_gives_each_figure_its_source(plant: Plant) -> None:
    body = await make(plant, "platform", DAY0, DAY1, "xlsx")
    _, en, rows = sheet_rows(body, "platform")
    got = {(r[6], r[1]): by_en(en, r) for r in rows}
    gen = got[("generation_mwh", "U1")]
    assert gen["Value"] == pytest.approx(14_400.0) and gen["Source of the figure"] == "计量 meter"
    assert gen["Document, tag or reason"] == "tag u1_power"
    heat = got[("heat_supplied_gj", "U1")]
    assert heat["Value"] is None and "no heat-supply meter" in heat["Document, tag or reason"]
    assert got[("operating_hours_h", "U1")]["Value"] == 25  # stored hours with output > 0
    # 14 400 MWh / (600 MW · 744 h) · 100 = 3.2258065 %
    assert got[("load_factor_pct", "U1")]["Value"] == printed(3.2258065, 7)
    assert got[("purchased_electricity_mwh", "U1")]["Value"] == pytest.approx(1438.0)
    ncv = got[("ncv", "U1_coal (U1)")]
    assert (ncv["Value"], ncv["Unit of the value"], ncv["Source of the figure"]) == (
        18.0, "GJ/t", "化验录入 lab entry")
    assert "LAB-2026-01" in ncv["Document, tag or reason"]
    cc = got[("carbon_content_tc_gj", "U1_coal (U1)")]
    # The lab entry gave the NCV only: the carbon content is the configured version's.
    assert cc["Value"] == 0.03085 and cc["Source of the figure"] == "化验录入 lab entry"
    fuel = got[("fuel_consumption", "U1_coal (U1)")]
    assert (fuel["Value"], fuel["Document, tag or reason"]) == (2400.0, "tag u1_coal")
    assert got[("fuel_co2_t", "U1_coal (U1)")]["Value"] == printed(4837.7736, 4)


async def test_platform_workbook_without_capacity_says_why(tmp_path: Path) -> None:
    d = plant_data(tmp_path)
    d["reports"] = {}
    p = parse_plant(d, "plant.yaml")
    await store(p)
    body = await make(p, "platform", DAY0, DAY1, "xlsx")
    _, en, rows = sheet_rows(body, "platform")
    (load,) = [by_en(en, r) for r in rows if r[6] == "load_factor_pct"]
    assert load["Value"] is None
    assert load["Document, tag or reason"] == "no rated capacity: set reports.capacity_mw.U1"


def test_shipped_definitions_are_valid() -> None:
    for path in sorted((REPO / "config" / "reports").glob("*.yaml")):
        d = load_definition(path)
        assert d.fields and d.title.zh


def test_a_wrong_definition_names_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "title": {"zh": "甲", "en": "X"},
                                   "period": "week", "grouping": "source",
                                   "fields": ["co2_cems_t"]}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_definition(bad)
    assert str(err.value).startswith(f"{bad}: period:")
    with pytest.raises(ConfigError) as err:
        parse_definition({"name": "x", "title": {"zh": "甲", "en": "X"}, "period": "day",
                          "grouping": "unit", "fields": ["output_mwh", "co2_kg"]}, "f.yaml")
    assert str(err.value).startswith("f.yaml: fields[1]: unknown field 'co2_kg' of grouping unit")


async def test_custom_report_from_a_definition(tmp_path: Path) -> None:
    p = parse_plant(plant_data(tmp_path, definitions=[
        str(REPO / "config" / "reports" / "stack-daily.yaml")]), "plant.yaml")
    await store(p)
    body = await make(p, "stack_daily", DAY0, DAY1, "xlsx")
    _, en, rows = sheet_rows(body, "stack_daily")
    assert en[:3] == ["Period (plant time)", "Start (UTC)", "Source"]
    (row,) = [by_en(en, r) for r in rows]
    assert row["CO2 by CEMS (t)"] == printed(4776.33409, 5)
    assert (row["Substituted hours (h)"], row["Substitution rule"]) == (1, "mrr_mean_2sigma")
    assert "Output (MWh)" not in en


def write_plant(tmp: Path, **reports: Any) -> Path:
    path = tmp / "plant.yaml"
    path.write_text(yaml.safe_dump(plant_data(tmp, **reports), allow_unicode=True),
                    encoding="utf-8")
    return path


def test_cli_report_and_its_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       ) -> None:
    path = write_plant(tmp_path)
    base = ["report", "-c", str(path), "--from", "2026-01-01T00:00:00+08:00",
            "--to", "2026-01-02T00:00:00+08:00"]
    out = tmp_path / "day.xlsx"
    # No historian yet: exit 2 naming the file.
    assert main([*base[:1], "daily", *base[1:], "--out", str(out)]) == 2
    assert "no historian file here" in capsys.readouterr().err and not out.exists()
    asyncio.run(store(parse_plant(plant_data(tmp_path), str(path))))
    assert main([*base[:1], "daily", *base[1:], "--out", str(out)]) == 0
    _, en, rows = sheet_rows(out.read_bytes(), "sources")
    assert by_en(en, rows[0])["CO2 by CEMS (t)"] == printed(4776.33409, 5)
    assert main([*base[:1], "weekly", *base[1:], "--out", str(out)]) == 2
    assert "unknown report kind 'weekly'" in capsys.readouterr().err
    assert main(["report", "daily", "-c", str(path), "--from", "2026-01-02T00:00:00+08:00",
                 "--to", "2026-01-01T00:00:00+08:00", "--out", str(out)]) == 2
    assert "must be after --from" in capsys.readouterr().err
    assert main(["report", "daily", "-c", str(path), "--from", "2026-01-01",
                 "--to", "2026-01-02T00:00:00+08:00", "--out", str(out)]) == 2
    assert "--from" in capsys.readouterr().err
    assert main([*base[:1], "platform", *base[1:3], "--from", "2026-01-01T00:00:00+08:00",
                 "--to", "2026-03-01T00:00:00+08:00", "--out", str(out)]) == 2
    assert "covers one month" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*base[:1], "daily", *base[1:], "--format", "docx", "--out", str(out)])
    assert exit_.value.code == 2
    csv_out = tmp_path / "day.csv"
    assert main([*base[:1], "daily", *base[1:], "--format", "csv", "--out", str(csv_out)]) == 0
    assert "mrr_mean_2sigma" in csv_out.read_text(encoding="utf-8-sig")


@pytest.fixture
async def web_sink(plant: Plant, port: int) -> AsyncIterator[tuple[WebSink, Historian]]:
    cfg = plant.config.model_copy(update={"web": plant.config.web.model_copy(
        update={"port": port})})
    h = Historian(cfg.historian.path)
    await h.start()
    factors = plant.plan(Records(lab_factors=(LAB,))).factors
    sink = WebSink(cfg, history=h, reports=ReportMaker(cfg, h, lambda: factors))
    await sink.start()
    yield sink, h
    await sink.stop()
    await h.stop()


async def test_api_returns_the_workbook(web_sink: tuple[WebSink, Historian]) -> None:
    sink, _ = web_sink
    base = f"http://127.0.0.1:{sink.port}/api/v1/reports"
    q = "from=2026-01-01T00:00:00%2B08:00&to=2026-01-02T00:00:00%2B08:00"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/daily?{q}&format=xlsx") as r:
            assert r.status == 200, await r.text()
            assert r.content_type == ("application/vnd.openxmlformats-officedocument."
                                      "spreadsheetml.sheet")
            assert "testsite-daily-2026-01-01.xlsx" in r.headers["Content-Disposition"]
            body = await r.read()
        _, en, rows = sheet_rows(body, "sources")
        assert by_en(en, rows[0])["CO2 by CEMS (t)"] == printed(4776.33409, 5)
        async with http.get(f"{base}/daily?{q}&format=csv") as r:
            assert r.status == 200 and r.content_type == "text/csv"
            assert "mrr_mean_2sigma" in (await r.read()).decode("utf-8-sig")
        for url, status in ((f"{base}/weekly?{q}", 404), (f"{base}/daily?{q}&format=doc", 400),
                            (f"{base}/daily?from=2026-01-01", 400)):
            async with http.get(url) as r:
                assert r.status == status, url
                assert r.content_type == "application/json"


async def test_api_without_a_report_maker_is_503(port: int, tmp_path: Path) -> None:
    cfg = parse_plant(plant_data(tmp_path), "plant.yaml").config
    sink = WebSink(cfg.model_copy(update={"web": cfg.web.model_copy(update={"port": port})}))
    await sink.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{sink.port}/api/v1/reports/daily?from=2026-01-01T00:00:00Z"
                "&to=2026-01-02T00:00:00Z") as r:
            assert r.status == 503
    finally:
        await sink.stop()


def test_schedule_times_are_plant_time(tmp_path: Path) -> None:
    p = parse_plant(plant_data(tmp_path, schedule=[
        {"kind": "daily", "at": "01:00", "channel": "mail"},
        {"kind": "monthly", "at": "06:30", "channel": "mail"}]), "plant.yaml")
    maker = ReportMaker(p.config, Historian(tmp_path / "h.sqlite"), lambda: p.factors)
    daily, monthly = p.config.reports.schedule
    s = ReportScheduler([daily, monthly], maker, {}, {})
    # 2026-01-02 01:30 in Shanghai: the next daily run is 2026-01-03 01:00 (17:00 UTC).
    after = datetime(2026, 1, 1, 17, 30, tzinfo=UTC)
    assert s.next_run(daily, after) == datetime(2026, 1, 2, 17, 0, tzinfo=UTC)
    assert s.next_run(daily, after - timedelta(hours=1)) == after - timedelta(minutes=30)
    # The monthly one on 1 February 06:30 plant time = 2026-01-31 22:30 UTC.
    assert s.next_run(monthly, after) == datetime(2026, 1, 31, 22, 30, tzinfo=UTC)
    # What the 01:00 run of 2026-01-02 reports: the plant day 2026-01-01.
    assert maker.previous_period("daily", datetime(2026, 1, 1, 17, tzinfo=UTC)) == (DAY0, DAY1)


def test_a_schedule_naming_no_email_channel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_plant(plant_data(tmp_path, schedule=[{"kind": "daily", "channel": "sms"}]),
                    "plant.yaml")
    assert "plant.yaml: reports.schedule[0].channel: 'sms' is no e-mail channel" in str(
        err.value)


async def test_scheduled_daily_report_is_emailed(tmp_path: Path, smtp_server: SmtpServer,
                                                 ) -> None:
    p = parse_plant(plant_data(tmp_path, smtp_server.port, schedule=[
        {"kind": "daily", "at": "01:00", "channel": "mail", "email": ["env@plant.test"],
         "format": "xlsx"}]), "plant.yaml")
    await store(p)
    h = Historian(p.config.historian.path)
    await h.start()
    factors = p.plan(Records(lab_factors=(LAB,))).factors
    maker = ReportMaker(p.config, h, lambda: factors)
    # The loop starts at 00:59:59 plant time of 2026-01-02; its next look is past 01:00.
    times = iter([datetime(2026, 1, 1, 16, 59, 59, tzinfo=UTC)])

    def now() -> datetime:
        return next(times, datetime(2026, 1, 1, 17, 0, 1, tzinfo=UTC))

    s = ReportScheduler(p.config.reports.schedule, maker, email_channels(p.config),
                        {"mail": "scada@plant.test"}, now=now)
    await s.start()
    try:
        (msg,) = await smtp_server.wait_for(1, timeout=20)
        for _ in range(500):  # the server has the mail before the client has its answer
            if s.sent:
                break
            await asyncio.sleep(0.02)
    finally:
        await s.stop()
        await h.stop()
    assert smtp_server.received[0].rcpt_tos == ["env@plant.test"]
    assert msg["Subject"] == "[报表 REPORT] 测试电厂 daily testsite-daily-2026-01-01.xlsx"
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "testsite-daily-2026-01-01.xlsx"
    _, en, rows = sheet_rows(att.get_content(), "sources")
    row = by_en(en, rows[0])
    assert row["CO2 by CEMS (t)"] == printed(4776.33409, 5)
    assert (row["Substituted hours (h)"], row["Substitution rule"]) == (1, "mrr_mean_2sigma")
    assert s.sent == 1 and s.failed == 0


async def test_the_running_server_serves_reports_with_a_schedule_configured(
        tmp_path: Path, smtp_server: SmtpServer) -> None:
    from server.runtime import Runtime
    from tests.conftest import free_port

    d = plant_data(tmp_path, smtp_server.port, schedule=[
        {"kind": "daily", "at": "01:00", "channel": "mail", "format": "csv"}])
    d["devices"][0]["port"] = free_port()
    d["opcua"]["enabled"] = False
    d["web"]["port"] = web_port = free_port()
    p = parse_plant(d, str(tmp_path / "plant.yaml"))
    await store(p)
    runtime = Runtime(p)
    await runtime.start()
    try:
        q = "from=2026-01-01T00:00:00%2B08:00&to=2026-01-02T00:00:00%2B08:00&format=xlsx"
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{web_port}/api/v1/reports/daily?{q}") as r:
            assert r.status == 200, await r.text()
            body = await r.read()
        _, en, rows = sheet_rows(body, "streams")
        # The server applies the ledger's lab entry: the stored coal day used its version.
        assert by_en(en, rows[0])["Factor version"] == "demo_coal@lab1"
    finally:
        await runtime.stop()


async def test_a_report_lists_the_cases_about_its_period(plant: Plant) -> None:
    # A case opened today (at the review) on the worked day's substituted hour 03:00 local
    # belongs to that day's report however late it was opened; the next day's has none.
    from server.audit import AuditLog
    from server.cases import CaseKeeper

    path = plant.config.historian.path
    h = Historian(path)
    await h.start()
    try:
        cases = CaseKeeper(path, h, AuditLog(path))
        await cases.load()
        hour3 = DAY0 + timedelta(hours=3)
        await cases.record("operator", {
            "event": "open", "subject": {"kind": "period",
                                         "ref": f"source_hour:S1:{hour3.isoformat()}"},
            "title": "analyser fault 03:00", "cause": "sample line blocked",
            "due": (datetime.now(UTC) + timedelta(days=7)).isoformat()})
    finally:
        await h.stop()
    body = await make(plant, "daily", DAY0, DAY1, "xlsx")
    zh, en, rows = sheet_rows(body, "cases")
    assert "异常数据处理台账" not in zh and "编号" in zh  # headers of the columns
    (row,) = [by_en(en, r) for r in rows]
    assert row["Case"] == 1 and row["Title"] == "analyser fault 03:00"
    assert row["State"] == "未关闭 open" and row["Overdue"] is False
    assert row["Subject"] == f"period source_hour:S1:{hour3.isoformat()}"
    assert row["Cause"] == "sample line blocked"
    # the day after: the case is about another day, and it was not open then
    body = await make(plant, "daily", DAY1, DAY1 + timedelta(days=1), "xlsx")
    assert sheet_rows(body, "cases")[2] == []
