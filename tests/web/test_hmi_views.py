"""The HMI's views in headless Chromium (issue 14): the trend chart drawing the stored minutes
the API answers, the language switch, the devices and the hours views, the tablet layout.
A real web sink on loopback reads a real historian; screenshots go to var/screenshots/."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from drivers.bus import DeviceStats
from drivers.link import BusStats
from model.flags import DataFlag
from model.records import MinuteResult, PeriodRecords, TagMinute, UnitPeriod
from server.config import parse_config
from server.historian import Historian
from tests.alarms.test_rules import record
from tests.fixtures.plant import plant_config, plant_dict
from tests.web.test_api import HOUR0, alarm_event, minute_result, source_minute, stored_hour
from tests.web.test_auth import at
from tests.web.test_history import _minute
from tests.web.test_hmi import (
    ControlRoom,
    browser,  # noqa: F401  (the fixture)
    log_in,
)
from web.app import WebSink

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
T_EPOCH_S = 1_767_225_600  # 2026-01-01T00:00:00Z = 08:00 in Asia/Shanghai
VIEWS = ("overview", "trends", "periods", "alarms", "devices", "records")
SILENT_ERROR = "cems2: no reply from unit 2 (timeout 0.5 s)"


def _devices() -> list[dict[str, Any]]:
    """The devices answer as the runtime builds it: cems1 polling, cems2 silent."""
    bus = BusStats("tcp:127.0.0.1:15020", requests=1200, errors=40, connects=1,
                   connected=True)
    good = DeviceStats("cems1", bus.bus, polls=600, requests=600, errors=0,
                       last_latency_s=0.0123, online=True)
    bad = DeviceStats("cems2", bus.bus, polls=560, requests=600, errors=40,
                      last_error=SILENT_ERROR, last_latency_s=0.5, online=False)
    return [{**asdict(bus), "devices": [asdict(good), asdict(bad)]}]


@pytest.fixture
async def served(port: int, tmp_path: Path) -> AsyncIterator[tuple[WebSink, Historian]]:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    # 120 minutes from 08:00 local: co2_kg = 1000 + i, minute 45 missing (NaN, flag B),
    # minute 50 flagged D (invalid, value kept), minute 100 a spike of 5000 kg.
    for i in range(120):
        kg = math.nan if i == 45 else 5000.0 if i == 100 else 1000.0 + i
        flag = DataFlag.B if i == 45 else DataFlag.D if i == 50 else DataFlag.N
        await h.on_minute(_minute(i, kg, flag=flag))
    for i, (co2, sub) in enumerate([(196.96223, False), (221.58251, True),
                                    (196.96223, False)]):
        await h.on_period(stored_hour(HOUR0 + timedelta(hours=i), co2, substituted=sub))
    # The journal: S1's rate alarm (10:03 local), acknowledged with a comment, returned.
    raised = alarm_event()
    for e in (raised,
              replace(raised, t=raised.t + timedelta(minutes=4), previous="alarm",
                      ack_state="active-acknowledged", previous_ack_state="active-unacknowledged",
                      cause="acknowledge", user="operator", comment="负荷升高，已通知运行值班"),
              replace(raised, t=raised.t + timedelta(minutes=9), state="normal", previous="alarm",
                      value=180.2, ack_state="normal", previous_ack_state="active-acknowledged")):
        await h.record_alarm(e)
    s = WebSink(plant_config(web_port=port), history=h, journal=h, devices=_devices)
    await s.start()
    await s.on_minute(minute_result())
    yield s, h
    await s.stop()
    await h.stop()


async def _page(browser: Browser, width: int, height: int) -> Page:  # noqa: F811
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    return await context.new_page()


async def _open(page: Page, sink: WebSink, view: str) -> None:
    await page.goto(f"http://127.0.0.1:{sink.port}/#/{view}")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    await expect(page.locator(f"#nav a[data-view={view}]")).to_have_class("active")


async def _show_trend_range(page: Page) -> None:
    await page.locator("#trend-from").fill("2026-01-01T08:00")
    await page.locator("#trend-to").fill("2026-01-01T10:00")
    await page.locator("#trend-custom").click()


async def test_trend_draws_the_stored_minutes(browser: Browser,  # noqa: F811
                                              served: tuple[WebSink, Historian]) -> None:
    sink, _ = served
    page = await _page(browser, 1600, 900)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The chart library works under the page's CSP (same origin, no inline style attributes).
    page.on("console", lambda m: errors.append(m.text)
            if "Content Security Policy" in m.text else None)
    await _open(page, sink, "trends")
    await expect(page.locator('#trend-series li[data-series="source:S1:co2_kg"]')).to_have_count(1)
    await _show_trend_range(page)
    # The chart is ~1500 px wide: 1500 points over 120 minutes is one bucket a minute.
    await expect(page.locator("#trend-status")).to_contain_text("120")
    data = await page.evaluate("window.hmi.charts.trend.data.map((s) => Array.from(s))")
    xs, mean, lo, hi, flagged = data
    assert xs == [T_EPOCH_S + 60 * i for i in range(120)]
    expected = [None if i == 45 else 5000.0 if i == 100 else 1000.0 + i for i in range(120)]
    assert mean == expected and lo == expected and hi == expected
    # Minute 50 (flag D) is marked at its value; minute 45 (B, no value) is a gap.
    assert [i for i, v in enumerate(flagged) if v is not None] == [50]
    assert flagged[50] == 1050.0

    # Four points: buckets of 30 minutes, each with its min/max band (worked out in
    # tests/web/test_history.py: the mean of bucket 1 leaves out the missing minute 45).
    await page.evaluate("window.hmi.trend.maxPoints = 4")
    await page.locator("#trend-custom").click()
    await expect(page.locator("#trend-status")).to_contain_text(" 4 ")
    xs, mean, lo, hi, flagged = await page.evaluate(
        "window.hmi.charts.trend.data.map((s) => Array.from(s))")
    assert xs == [T_EPOCH_S + 1800 * i for i in range(4)]
    assert lo == [1000.0, 1030.0, 1060.0, 1090.0] and hi == [1029.0, 1059.0, 1089.0, 5000.0]
    assert mean[0] == 1014.5 and mean[2:] == [1074.5, 1234.5]
    assert mean[1] == pytest.approx(30_290 / 29, abs=1e-9)
    assert flagged == [None, mean[1], None, None]  # minutes 45 (B) and 50 (D) in bucket 1
    bands = await page.evaluate("window.hmi.charts.trend.bands.map((b) => b.series)")
    assert bands == [[3, 2]]  # filled between the max and the min series
    await page.evaluate("window.hmi.trend.maxPoints = 5000")
    await page.locator("#trend-custom").click()
    await expect(page.locator("#trend-status")).to_contain_text("120")

    # A second series with its own unit gets its own axis.
    await page.locator("#trend-kind").select_option("unit")
    await page.locator("#trend-field").select_option("output_mwh")
    await page.locator("#trend-add").click()
    await expect(page.locator("#trend-series li")).to_have_count(2)
    await expect(page.locator("#trend-status")).to_contain_text("120")
    info = await page.evaluate("""() => { const c = window.hmi.charts.trend;
        return {labels: c.series.map((s) => s.label), axes: c.axes.map((a) => a.label || ""),
                out: Array.from(c.data[5])}; }""")
    assert info["axes"][1:] == ["kg", "MWh"]
    assert info["labels"][1].endswith("[kg]") and info["labels"][5].endswith("[MWh]")
    assert info["out"] == [10.0] * 45 + [10.0] * 75
    csv = (await page.evaluate("window.hmi.trendCsv()")).split("\r\n")
    assert csv[0].startswith("time (Asia/Shanghai),S1 co2_kg [kg] mean,S1 co2_kg [kg] min")
    assert csv[1] == "2026-01-01 08:00:00,1000,1000,1000,0,10,10,10,0"
    assert csv[51] == "2026-01-01 08:50:00,1050,1050,1050,1,10,10,10,1"
    assert len(csv) == 1 + 120 + 1  # header, 120 minutes, the final line end

    # Zoomed (uPlot's drag zoom sets the x scale): the CSV holds what is shown.
    await page.evaluate(f"window.hmi.charts.trend.setScale('x', "
                        f"{{min: {T_EPOCH_S + 600}, max: {T_EPOCH_S + 660}}})")
    csv = (await page.evaluate("window.hmi.trendCsv()")).split("\r\n")
    assert [line[:19] for line in csv[1:-1]] == ["2026-01-01 08:10:00", "2026-01-01 08:11:00"]

    # Live: on a rolling range a minute pushed over the WebSocket extends the curve.
    await page.locator('#trend-series li[data-series="unit:U1:output_mwh"] .remove').click()
    await page.locator('#trend-ranges button[data-range="3600"]').click()
    await expect(page.locator("#trend-status")).to_contain_text("0 ")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await sink.on_minute(minute_result(now, sources=(source_minute(now, co2_kg=4321.5),)))
    await page.wait_for_function("window.hmi.charts.trend.data[0].length === 1")
    live = await page.evaluate("Array.from(window.hmi.charts.trend.data[1])")
    assert live == [4321.5]
    assert errors == []


async def test_trend_draws_stored_hours_as_bars(browser: Browser,  # noqa: F811
                                               served: tuple[WebSink, Historian]) -> None:
    sink, _ = served
    page = await _page(browser, 1600, 900)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await _open(page, sink, "trends")
    await page.locator("#trend-level").select_option("hours")
    # Raw tags have no hours; the minute series gave way to the source's CO2 of the hour.
    assert await page.locator('#trend-kind option[value="tag"]').is_disabled()
    await expect(page.locator('#trend-series li[data-series="source:S1:co2_t"]')).to_have_count(1)
    await page.locator("#trend-from").fill("2026-01-01T08:00")
    await page.locator("#trend-to").fill("2026-01-01T11:00")
    await page.locator("#trend-custom").click()
    await expect(page.locator("#trend-status")).to_contain_text(" 3 ")
    xs, mean, _lo, _hi, flagged = await page.evaluate(
        "window.hmi.charts.trend.data.map((s) => Array.from(s))")
    # The three stored hours (08:00, 09:00, 10:00 local), each bar centred on its hour.
    assert xs == [T_EPOCH_S + 3600 * i + 1800 for i in range(3)]
    assert mean == [196.96223, 221.58251, 196.96223]
    assert flagged == [None, 221.58251, None]  # the substituted hour, marked at its value
    # A bar, not a line: half-way up the middle hour the canvas is painted; between two
    # bars (7.5 minutes into the hour, off the grid lines) it is not.
    info = await page.evaluate("""() => { const c = window.hmi.charts.trend;
        const px = (x, y) => Array.from(c.ctx.getImageData(
            Math.round(c.valToPos(x, "x", true)), Math.round(c.valToPos(y, "t", true)), 1, 1).data);
        const x1 = c.data[0][1];
        return {inside: px(x1, 110), gap: px(x1 - 1350, 110), label: c.series[1].label,
                hour: c.series[0].value(c, x1), y: [c.scales.t.min, c.scales.t.max]}; }""")
    assert info["inside"][3] > 0 and info["gap"][3] == 0, info
    assert info["label"].endswith("[t]")
    assert info["hour"] == "2026-01-01 09:00"  # the legend names the hour by its start
    assert info["y"][0] == 0  # bars stand on zero
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "trends-hours-1600x900.png"), full_page=True)
    csv = (await page.evaluate("window.hmi.trendCsv()")).split("\r\n")
    assert csv[0].startswith("hour start (Asia/Shanghai),S1 co2_t [t] mean")
    assert csv[2] == "2026-01-01 09:00:00,221.58251,221.58251,221.58251,1"

    # Days of the unit: one stored day is not there (the fixture closes hours only).
    await page.locator("#trend-level").select_option("days")
    await expect(page.locator("#trend-status")).to_contain_text(" 0 ")
    await page.locator("#trend-level").select_option("minutes")
    await expect(page.locator('#trend-series li[data-series="source:S1:co2_kg"]')).to_have_count(1)
    assert not await page.locator('#trend-kind option[value="tag"]').is_disabled()
    assert errors == []


async def test_a_raw_tag_trend_follows_the_minutes(browser: Browser,  # noqa: F811
                                                  served: tuple[WebSink, Historian]) -> None:
    sink, h = served
    page = await _page(browser, 1600, 900)
    await _open(page, sink, "trends")
    await page.locator("#trend-kind").select_option("tag")
    await page.locator("#trend-tag").fill("s1_co2")
    await page.locator("#trend-add").click()
    await page.locator('#trend-series li[data-series="source:S1:co2_kg"] .remove').click()
    await expect(page.locator("#trend-series li")).to_have_count(1)
    await page.locator('#trend-ranges button[data-range="3600"]').click()
    await expect(page.locator("#trend-status")).to_contain_text(" 0 ")
    # A minute closes: the historian stores the tag's statistics, the page gets the push
    # (which carries no raw tags) and reads the tag's minute back.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    base = minute_result(now)
    result = MinuteResult(t=now, sources=base.sources, units=base.units, site=base.site,
                          tags=(TagMinute("s1_co2", now, 12.34, 12.1, 12.6, 60, DataFlag.N),))
    await h.on_minute(result)
    await sink.on_minute(result)
    await page.wait_for_function(
        "() => window.hmi.charts.trend && window.hmi.charts.trend.data[0].length === 1",
        timeout=10_000)
    xs, mean, lo, hi, flagged = await page.evaluate(
        "window.hmi.charts.trend.data.map((s) => Array.from(s))")
    # One bucket (of a rolling hour, starting at its own edge) holding the minute.
    assert len(xs) == 1 and xs[0] <= now.timestamp() and (mean, lo, hi) == ([12.34], [12.1], [12.6])
    assert flagged == [None]


async def test_overview_shows_the_year_end_forecast_and_shortfall_cost(
        browser: Browser, served: tuple[WebSink, Historian]) -> None:  # noqa: F811
    sink, _ = served
    page = await _page(browser, 1920, 1080)
    await _open(page, sink, "overview")
    await expect(page.locator("#forecast-t")).to_have_text("—")
    # A closed hour's position (tests/web/test_api.py stored_hour): 4 973.29632 t so far,
    # 143 290 t in the last 30 days → 4 776.333 t/day × 363.958333 days left + 4 973.29632
    # = 1 743 359.89 t at year end, 743 359.89 t over the 1 000 000 t allowance, × 80 CNY/t
    # = 59 468 791.2 CNY; pro-rated today 2 853.88 t = 0.29 % of the allowance.
    await sink.on_period(stored_hour(HOUR0, 196.96223))
    await sink.on_minute(minute_result())
    await expect(page.locator("#forecast-t")).to_have_text("1,743,360")
    await expect(page.locator("#forecast-pct")).to_have_text("174.3 % 配额 of allowance")
    await expect(page.locator("#shortfall-cost")).to_have_text("59,468,791")
    await expect(page.locator("#shortfall-text")).to_have_text(
        "缺口 shortfall 743,360 t × 80.00 元/t")
    await expect(page.locator("#shortfall-tile")).to_have_class("tile over")
    await expect(page.locator("#allowance-prorated-text")).to_have_text("按时间 pro-rated 0.3 %")
    # /site and /allowance give that same position: the overview shows what they say.
    assert await page.evaluate("""async () => { const r = await fetch('/api/v1/allowance');
        return (await r.json()).forecast_year_end_t; }""") == 1_743_359.890
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "overview-forecast-1920x1080.png"), full_page=True)


async def test_periods_of_a_fuel_stream_and_a_unit_day_reconciliation(
        browser: Browser, port: int, tmp_path: Path) -> None:  # noqa: F811
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    d = plant_dict(web_port=port)
    d["factor_table"] = str(Path(__file__).resolve().parents[2] / "config" / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["streams"] = [{"id": "U1_coal", "name": "Unit 1 coal", "name_zh": "1号机组燃煤",
                                 "kind": "solid_fuel", "factors": "demo_coal",
                                 "rate_per_h": {"tag": "u1_power"}}]
    sink = WebSink(parse_config(d, "test"), history=h)
    await sink.start()
    try:
        # Three stored hours: 100 t of coal each, 100 × 17.2 GJ/t × 0.03085 tC/GJ × 0.99
        # × 44/12 = 192.61506 t CO2 by version demo-coal-2020-01 (tests/web/test_api.py).
        for i in range(3):
            await h.on_period(stored_hour(HOUR0 + timedelta(hours=i), 196.96223))
        # A day whose CEMS figure is 7.5 % above the factor method's (limit 5 %).
        # Its coal's CH4 0.0020908 t and N2O 0.0031362 t (100 t at 1 / 1.5 kg/TJ) add
        # 0.0020908 · 21 + 0.0031362 · 310 = 1.0161288 t under SAR: CO2e 216.0161288 t.
        day = UnitPeriod("U1", HOUR0, 215.0, 200.0, 600.0, 215.0 / 600.0, True, DataFlag.N,
                         reconciliation_diff_pct=7.5, reconciliation_exceeded=True,
                         co2_t=215.0, co2e_t=216.0161288, gwp_set="SAR",
                         n_substituted=2)
        await h.on_period(PeriodRecords("day", HOUR0, HOUR0 + timedelta(days=1), (), (), (day,)))
        page = await _page(browser, 1600, 900)
        await _open(page, sink, "periods")
        await page.locator("#period-item").select_option("stream:U1_coal")
        await page.locator("#period-level").select_option("hours")
        await page.locator("#period-from").fill("2026-01-01")
        await page.locator("#period-to").fill("2026-01-02")
        await page.locator("#period-load").click()
        rows = page.locator("#period-table tbody tr")
        await expect(rows).to_have_count(3)
        await expect(page.locator("#period-table thead")).to_contain_text("消耗量Quantityt")
        first = rows.nth(0)
        await expect(first.locator('[data-field="quantity"]')).to_have_text("100.000")
        await expect(first.locator('[data-field="co2_t"]')).to_have_text("192.615")
        await expect(first.locator('[data-field="factor_version"]')).to_have_text(
            "demo-coal-2020-01")
        await expect(first.locator('[data-field="method"]')).to_have_text(
            "低位发热量×单位热值含碳量×氧化率NCV × CC × OF")
        await page.locator("#period-item").select_option("unit:U1")
        await page.locator("#period-level").select_option("days")
        await page.locator("#period-from").fill("2026-01-01")
        await page.locator("#period-to").fill("2026-01-03")
        await page.locator("#period-load").click()
        cell = page.locator('#period-table tbody tr [data-field="reconciliation_diff_pct"]')
        await expect(cell).to_have_text("7.50 ⚠")
        await expect(cell).to_have_class("num exceeded")
        row = page.locator("#period-table tbody tr").nth(0)
        await expect(row.locator('[data-field="co2_t"]')).to_have_text("215.000")
        await expect(row.locator('[data-field="co2e_t"]')).to_have_text("216.016")
        # Two of its hours hold substituted data: the auditor sees how many.
        await expect(row.locator('[data-field="n_substituted"]')).to_have_text("2")
    finally:
        await sink.stop()
        await h.stop()


async def test_language_switch_persists(browser: Browser,  # noqa: F811
                                        served: tuple[WebSink, Historian]) -> None:
    sink, _ = served
    page = await _page(browser, 1600, 900)
    await _open(page, sink, "overview")
    nav = page.locator("#nav a[data-view=trends]")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    assert (await nav.inner_text()).strip() == "趋势Trends"
    await page.locator("#lang-switch").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    assert (await nav.inner_text()).strip() == "Trends"
    await page.reload()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    assert (await nav.inner_text()).strip() == "Trends"
    await expect(page.locator("#lang-switch")).to_have_text("中文")
    # Rows built after the switch (alarm actions, units) are shown in English too.
    unit_label = page.locator('[data-unit-card="U1"] dt').first
    assert (await unit_label.inner_text()).strip() == "Output this minute"
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "overview-en-1600x900.png"), full_page=True)
    await page.locator("#lang-switch").click()
    await page.reload()
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")


async def test_devices_view_shows_the_silent_device(browser: Browser,  # noqa: F811
                                                    served: tuple[WebSink, Historian]) -> None:
    sink, _ = served
    page = await _page(browser, 1600, 900)
    await _open(page, sink, "devices")
    bad = page.locator('#devices-table tr[data-device="cems2"]')
    await expect(bad).to_have_class("device offline")
    await expect(bad.locator('[data-field="state"]')).to_have_text("离线offline")
    await expect(bad.locator('[data-field="last_error"]')).to_have_text(SILENT_ERROR)
    await expect(bad.locator('[data-field="errors"]')).to_have_text("40")
    good = page.locator('#devices-table tr[data-device="cems1"]')
    await expect(good.locator('[data-field="state"]')).to_have_text("在线online")
    await expect(good.locator('[data-field="latency_ms"]')).to_have_text("12.3")
    await expect(good.locator('[data-field="polls"]')).to_have_text("600")
    await expect(page.locator('#devices-table tr[data-bus="tcp:127.0.0.1:15020"]')).to_contain_text(
        "1,200")


async def test_hours_view_marks_the_invalid_hour(browser: Browser,  # noqa: F811
                                                 served: tuple[WebSink, Historian]) -> None:
    sink, _ = served
    page = await _page(browser, 1600, 900)
    await _open(page, sink, "periods")
    await page.locator("#period-from").fill("2026-01-01")
    await page.locator("#period-to").fill("2026-01-02")
    await page.locator("#period-load").click()
    rows = page.locator("#period-table tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.locator("th")).to_have_text(["2026-01-01 08:00", "2026-01-01 09:00",
                                                   "2026-01-01 10:00"])
    invalid = page.locator("#period-table tbody tr.invalid")
    await expect(invalid).to_have_count(1)
    await expect(invalid).to_have_attribute("data-t", "2026-01-01T01:00:00Z")
    await expect(invalid).to_have_class("invalid substituted")
    await expect(invalid.locator('[data-field="valid"]')).to_have_text("无效invalid")
    await expect(invalid.locator('[data-field="flag"]')).to_have_text("D")
    await expect(invalid.locator('[data-field="substitution_rule"]')).to_have_text(
        "mrr_mean_2sigma")
    await expect(invalid.locator('[data-field="co2_t"]')).to_have_text("221.583")
    await expect(invalid.locator('[data-field="co2_measured_t"]')).to_have_text("—")
    await expect(rows.nth(0).locator('[data-field="co2_t"]')).to_have_text("196.962")


async def test_alarm_row_keeps_the_alarm_time_and_names_things(
        browser: Browser, port: int, tmp_path: Path) -> None:  # noqa: F811
    page = await _page(browser, 1600, 900)
    async with ControlRoom(port, tmp_path) as room:
        await room.sink.on_minute(minute_result())
        await page.goto(room.url + "#/alarms")
        await log_in(page, "operator", "demo-operator")
        # S1 at 5200 kg in the minute of 08:00 local (00:00 UTC): over the 5000 kg limit.
        await room.alarms.on_minute(record(at(0), s1_kg=5200.0))
        row = page.locator('#alarm-list li[data-rule="s1_rate"]')
        await expect(row.locator(".when")).to_have_text("08:00:00")
        await expect(row.locator(".target")).to_have_text(
            "1号烟囱 本分钟排放Stack 1 CO₂ per minute")
        await expect(row.locator(".detail")).to_have_text(
            "值 value 5,200.00 kg · 限值 limit 5,000.00 kg")
        await row.locator('button[data-action="acknowledge"]').click()
        await row.locator('form.action-form input[name="comment"]').fill("负荷升高")
        await row.locator('form.action-form button[type="submit"]').click()
        await expect(row.locator('[data-field="ack_state"]')).to_have_text("已确认acknowledged")
        # Acknowledged now (2026), the row still shows when the alarm began, and who acked.
        await expect(row.locator(".when")).to_have_text("08:00:00")
        await expect(row.locator(".detail")).to_contain_text(
            "确认人 acknowledged by operator：负荷升高")
        ack_t = room.alarms.alarm_list()[0].t
        assert ack_t > at(1)
        # No part of the row is cut off with an ellipsis.
        cut = await page.evaluate("""() => [...document.querySelectorAll('#alarm-list li *')]
            .filter((n) => getComputedStyle(n).textOverflow === 'ellipsis').length""")
        assert cut == 0


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (768, 1024)])
async def test_every_view_fits_and_is_saved(browser: Browser,  # noqa: F811
                                            served: tuple[WebSink, Historian],
                                            width: int, height: int) -> None:
    sink, _ = served
    sink.on_alarm(alarm_event())
    page = await _page(browser, width, height)
    SHOTS.mkdir(parents=True, exist_ok=True)
    await _open(page, sink, "overview")
    for view in VIEWS:
        await page.goto(f"http://127.0.0.1:{sink.port}/#/{view}")
        await expect(page.locator(f"#nav a[data-view={view}]")).to_have_class("active")
        if view == "trends":
            await _show_trend_range(page)
            await expect(page.locator("#trend-status")).to_contain_text("120")
        if view == "periods":
            await page.locator("#period-from").fill("2026-01-01")
            await page.locator("#period-to").fill("2026-01-02")
            await page.locator("#period-load").click()
            await expect(page.locator("#period-table tbody tr")).to_have_count(3)
        if view == "alarms":
            await page.locator("#journal-from").fill("2024-05-01T10:00")
            await page.locator("#journal-to").fill("2024-05-01T11:00")
            await page.locator("#journal-load").click()
            await expect(page.locator("#journal-table tbody tr")).to_have_count(3)
            acked = page.locator('#journal-table tr[data-cause="acknowledge"]')
            await expect(acked.locator('[data-field="value"]')).to_have_text("196.96 t/h")
            await expect(acked.locator('[data-field="comment"]')).to_be_visible()
            # Every column is on screen: the journal does not hide in a scrolled table.
            inner, outer = await page.evaluate("""() => { const w = document.querySelector(
                '#journal-table').parentElement; return [w.scrollWidth, w.clientWidth]; }""")
            assert inner <= outer, f"journal at {width} px scrolls: {inner} > {outer}"
        if view == "devices":
            await expect(page.locator("#devices-table tr.device")).to_have_count(2)
        if view == "records":  # a sink without a record keeper: its answer, not a traceback
            await expect(page.locator("#rec-entries-status")).to_have_text(
                "this server keeps no entries (no record keeper)")
        # devices: saved with a device opened, from real drivers, by
        # tests/web/test_hmi_devices.py; records: with entries, by tests/web/test_hmi_records.py
        if view not in ("devices", "records"):
            await page.screenshot(path=str(SHOTS / f"{view}-{width}x{height}.png"),
                                  full_page=True)
        scroll, client = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll <= client, f"{view} at {width} px scrolls sideways: {scroll} > {client}"
