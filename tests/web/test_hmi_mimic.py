"""The overview's plant mimic in headless Chromium (issue 14, view 1): every configured unit
piped to its stacks, a pushed minute's values on the right stack with their units, a flag B
shown as bad in colour and in words, stale and missing data, updates without a rebuild, and
the layout at 1920×1080 and 768×1024 (screenshots in var/screenshots/)."""

from __future__ import annotations

import copy
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from model.flags import DataFlag
from model.records import MinuteResult, SourceMinute, UnitMinute
from server.config import PlantConfig, parse_config
from tests.fixtures.plant import plant_dict
from tests.web.test_api import T0, minute_result, source_minute
from tests.web.test_hmi import browser  # noqa: F401  (the fixture)
from tests.web.test_hmi_views import SHOTS
from web.app import WebSink

BAD_RGB = "rgb(240, 72, 72)"  # --bad of style.css


def two_unit_plant(port: int) -> PlantConfig:
    """The test plant with a second unit of two stacks (S2, S3) on the same simulated tags."""
    d = plant_dict(web_port=port)
    (u1,) = d["units"]
    s1 = u1["sources"][0]
    u2 = copy.deepcopy(u1)
    u2.update(id="U2", name="Unit 2", name_zh="2号机组")
    u2["sources"] = [dict(copy.deepcopy(s1), id="S2", name="Stack 2A", name_zh="2号A烟囱"),
                     dict(copy.deepcopy(s1), id="S3", name="Stack 2B", name_zh="2号B烟囱")]
    d["units"].append(u2)
    return parse_config(d, "tests/web/test_hmi_mimic.py")


def unit_minute(unit: str, t: datetime, output_mwh: float, intensity_t_mwh: float,
                flag: DataFlag = DataFlag.N) -> UnitMinute:
    """One minute of a unit with the output and intensity given."""
    return UnitMinute(unit=unit, t=t, output_mwh=output_mwh, co2_kg=output_mwh * intensity_t_mwh
                      * 1000.0, intensity_t_mwh=intensity_t_mwh, valid=flag == DataFlag.N,
                      flag=flag)


def minute(t: datetime, sources: tuple[SourceMinute, ...],
           units: tuple[UnitMinute, ...]) -> MinuteResult:
    """A minute of the given sources and units, with the test plant's site totals."""
    return MinuteResult(t=t, sources=sources, units=units, site=minute_result(t).site)


@pytest.fixture
async def sink(port: int) -> AsyncIterator[WebSink]:
    s = WebSink(two_unit_plant(port))
    await s.start()
    yield s
    await s.stop()


async def _page(browser: Browser, width: int, height: int) -> Page:  # noqa: F811
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    return await context.new_page()


async def _open(page: Page, sink: WebSink) -> None:
    await page.goto(f"http://127.0.0.1:{sink.port}/#/overview")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")


def stack(page: Page, source: str) -> Locator:
    """The mimic's block of one stack."""
    return page.locator(f'#mimic [data-mimic-source="{source}"]')


async def test_mimic_draws_units_and_stacks_and_updates_in_place(
        browser: Browser, sink: WebSink) -> None:  # noqa: F811
    page = await _page(browser, 1600, 900)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text)
            if "Content Security Policy" in m.text else None)
    await _open(page, sink)

    # Every configured unit, each with its own stacks, in configuration order.
    units = page.locator("#mimic [data-mimic-unit]")
    await expect(units).to_have_count(2)
    assert [await u.get_attribute("data-mimic-unit") for u in await units.all()] == ["U1", "U2"]
    await expect(units.nth(1).locator(".mimic-unit-box .title")).to_have_text("2号机组Unit 2")
    for unit, ids in (("U1", ["S1"]), ("U2", ["S2", "S3"])):
        got = page.locator(f'#mimic [data-mimic-unit="{unit}"] .mimic-stacks [data-mimic-source]')
        assert [await s.get_attribute("data-mimic-source") for s in await got.all()] == ids
    await expect(stack(page, "S3").locator(".title")).to_have_text("2号B烟囱Stack 2B")
    # Before the first minute: no values, and "no data" said in words.
    s1 = stack(page, "S1")
    await expect(s1).to_have_attribute("data-data", "nodata")
    await expect(s1.locator('[data-field="status"]')).to_have_text("无数据no data")
    await expect(s1.locator('.num[data-field="co2_rate_t_h"]')).to_have_text("—")

    # The DOM is built once: a push changes text and attributes, adds and removes no element.
    await page.evaluate("""() => {
        window.__mimicNode = document.querySelector('[data-mimic-source="S2"]');
        window.__mimicAdded = 0;
        new MutationObserver((rs) => { for (const r of rs) {
            for (const n of [...r.addedNodes, ...r.removedNodes]) {
                if (n.nodeType === Node.ELEMENT_NODE) window.__mimicAdded += 1; } } })
            .observe(document.getElementById('mimic'), {childList: true, subtree: true});
    }""")

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    nan = math.nan
    sources = (
        source_minute(now),  # the worked example: 196,962.2 kg/h, 835,718.9 m³/h
        source_minute(now, "S2", unit="U2", co2_rate_kg_h=123_456.0,
                      flow_std_dry_m3_h=612_345.4),
        source_minute(now, "S3", unit="U2", co2_rate_kg_h=nan, flow_std_dry_m3_h=nan,
                      co2_dry_pct=nan, valid=False, flag=DataFlag.B),
    )
    await sink.on_minute(minute(now, sources, (
        unit_minute("U1", now, 10.0, 0.32827),
        unit_minute("U2", now, 5.5, 0.41234, DataFlag.B))))

    # Each value on its own stack, formatted as the sources table formats it, with its unit.
    reading = '.mimic-value:has([data-field="{}"]) .reading'
    await expect(s1.locator(reading.format("co2_rate_t_h"))).to_have_text("196.96t/h")
    await expect(s1.locator(reading.format("flow_std_dry_m3_h"))).to_have_text("835,719m³/h")
    s2 = stack(page, "S2")
    await expect(s2.locator(reading.format("co2_rate_t_h"))).to_have_text("123.46t/h")
    await expect(s2.locator(reading.format("flow_std_dry_m3_h"))).to_have_text("612,345m³/h")
    await expect(s1.locator('[data-field="flag"]')).to_have_text("N")
    await expect(s1.locator('[data-field="flag_text"]')).to_have_text("正常normal")
    await expect(s1).to_have_attribute("data-state", "ok")
    await expect(s1).to_have_attribute("data-data", "live")
    await expect(s1.locator('[data-field="status"]')).to_be_hidden()
    table = page.locator('tr[data-source-row="S2"] [data-field="co2_rate_t_h"]')
    await expect(table).to_have_text("123.46")  # the same figure as the sources table
    # The units' output and intensity.
    u1 = page.locator('#mimic [data-mimic-unit="U1"] .mimic-unit-box')
    await expect(u1.locator(reading.format("output_mwh"))).to_have_text("10.00MWh")
    await expect(u1.locator(reading.format("intensity_t_mwh"))).to_have_text("0.328t/MWh")
    u2 = page.locator('#mimic [data-mimic-unit="U2"] .mimic-unit-box')
    await expect(u2.locator(reading.format("output_mwh"))).to_have_text("5.50MWh")
    await expect(u2).to_have_attribute("data-state", "bad")

    # S3 flagged B: no numbers, the bad state in colour and in words.
    s3 = stack(page, "S3")
    await expect(s3).to_have_attribute("data-state", "bad")
    await expect(s3).to_have_attribute("data-invalid", "true")
    await expect(s3.locator('[data-field="flag"]')).to_have_text("B")
    await expect(s3.locator('[data-field="flag"]')).to_have_class("flag flag-bad")
    await expect(s3.locator('[data-field="flag_text"]')).to_have_text(
        "通讯故障communication failure")
    await expect(s3.locator('.num[data-field="co2_rate_t_h"]')).to_have_text("—")
    colours = await s3.evaluate("""(n) => [getComputedStyle(n).borderLeftColor,
        getComputedStyle(n, '::before').borderTopColor,
        getComputedStyle(n.querySelector('.flag-text')).color]""")
    assert colours == [BAD_RGB] * 3, colours
    assert await s1.evaluate("(n) => getComputedStyle(n).borderLeftColor") == "rgb(63, 185, 80)"

    # A stack whose last minute is more than three minutes old is marked stale, in words.
    await sink.on_minute(minute(T0, (source_minute(T0, "S2", unit="U2"),), ()))
    await expect(s2).to_have_attribute("data-data", "stale")
    await expect(s2.locator('[data-field="status"]')).to_have_text("数据过期stale")
    await expect(s2.locator('[data-field="t"]')).to_have_text("10:03:00")
    await expect(s2.locator(reading.format("co2_rate_t_h"))).to_have_text("196.96t/h")
    await expect(s1).to_have_attribute("data-data", "live")
    await expect(u2).to_have_attribute("data-data", "live")
    await expect(u2.locator('[data-field="t"]')).to_have_text(
        (await s1.locator('[data-field="t"]').inner_text()).strip())

    # A new snapshot of the same plant (a reconnect) keeps the DOM too.
    await page.evaluate("""() => { window.__snapshots = 0;
        window.hmi.snapshotHooks.push(() => { window.__snapshots += 1; });
        window.hmi.state.resync = true; window.hmi.state.ws.close(); }""")
    await page.wait_for_function("() => window.__snapshots === 1")
    await expect(s2).to_have_attribute("data-data", "stale")
    assert await page.evaluate("window.__mimicAdded") == 0
    assert await page.evaluate(
        "document.querySelector('[data-mimic-source=\"S2\"]') === window.__mimicNode")

    # In English the flag's words are English alone.
    await page.locator("#lang-switch").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    assert (await s3.locator('[data-field="flag_text"]').inner_text()).strip() == (
        "communication failure")
    assert (await s2.locator('[data-field="status"]').inner_text()).strip() == "stale"
    await page.locator("#lang-switch").click()
    assert errors == []


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (768, 1024)])
async def test_mimic_fits_the_screen(browser: Browser, sink: WebSink,  # noqa: F811
                                     width: int, height: int) -> None:
    page = await _page(browser, width, height)
    await _open(page, sink)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    sources = (source_minute(now),
               source_minute(now, "S2", unit="U2", co2_rate_kg_h=123_456.0,
                             flow_std_dry_m3_h=612_345.4, flag=DataFlag.M),
               source_minute(now, "S3", unit="U2", co2_rate_kg_h=math.nan,
                             flow_std_dry_m3_h=math.nan, valid=False, flag=DataFlag.B))
    await sink.on_minute(minute(now, sources, (
        unit_minute("U1", now, 10.0, 0.32827), unit_minute("U2", now, 5.5, 0.41234,
                                                         DataFlag.B))))
    await expect(stack(page, "S3").locator('[data-field="flag"]')).to_have_text("B")
    await expect(page.locator("#mimic")).to_be_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"overview-mimic-{width}x{height}.png"),
                          full_page=True)
    await page.locator(".mimic-panel").screenshot(
        path=str(SHOTS / f"mimic-{width}x{height}.png"))
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"overview at {width} px scrolls sideways: {scroll} > {client}"
    # No block spills out of the panel or clips its own content.
    spill = await page.evaluate("""() => {
        const panel = document.querySelector('.mimic-panel').getBoundingClientRect();
        return [...document.querySelectorAll('#mimic .mimic-unit-box, #mimic .mimic-stack')]
            .filter((n) => { const r = n.getBoundingClientRect();
                return r.left < panel.left || r.right > panel.right ||
                    [...n.querySelectorAll('*')].some((c) => {
                        const b = c.getBoundingClientRect();
                        return b.width > 0 && (b.left < r.left || b.right > r.right); }); })
            .map((n) => n.dataset.mimicSource || 'unit'); }""")
    assert spill == []
