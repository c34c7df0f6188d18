"""The HMI's performance view in headless Chromium: baseline, targets, progress bars,
deviations and the benchmark comparison of the worked example (tests/compute/
test_performance.py, in thousands: see tests/server/test_performance.py), bilingual; a bad
year answered with the server's message. A real web sink on loopback with the real
performance keeper over a real historian file. Screenshot:
var/screenshots/performance-1920x1080.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from server.config import parse_plant
from server.historian import Historian
from tests.compute.test_performance import two_units
from tests.server.test_performance import FixedKeeper, perf_kt, store
from tests.web.test_hmi import browser  # noqa: F401  (the fixture)
from web.app import WebSink

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


class Room:
    """Web sink, historian and the performance keeper."""

    def __init__(self, port: int, tmp_path: Path) -> None:
        d = two_units(perf_kt())
        d["historian"] = {"path": str(tmp_path / "h.sqlite")}
        d["web"] = {"host": "127.0.0.1", "port": port}
        cfg = parse_plant(d, str(tmp_path / "plant.yaml")).config
        self.historian = Historian(cfg.historian.path)
        self.keeper = FixedKeeper(cfg)
        self.sink = WebSink(cfg, history=self.historian, performance=self.keeper)
        self.url = f"http://127.0.0.1:{port}/"

    async def __aenter__(self) -> Room:
        h = self.historian
        await h.start()
        # As in tests/server/test_performance.py: U1 700 / 880 (Q1), 300 / 390 (Q2);
        # U2 420 / 480, 190 / 200; the baseline year 2024 U1 3000 / 3600, U2 1800 / 2000.
        await store(h, (2026, 2, 1), "U1", 700.0, 880.0)
        await store(h, (2026, 4, 1), "U1", 300.0, 390.0)
        await store(h, (2026, 2, 1), "U2", 420.0, 480.0)
        await store(h, (2026, 5, 10), "U2", 190.0, 200.0)
        await store(h, (2024, 3, 1), "U1", 3_000.0, 3_600.0)
        await store(h, (2024, 3, 1), "U2", 1_800.0, 2_000.0)
        await self.sink.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sink.stop()
        await self.historian.stop()


@pytest.fixture
async def room(port: int, tmp_path: Path) -> AsyncIterator[Room]:
    async with Room(port, tmp_path) as r:
        yield r


async def _page(browser: Browser, url: str) -> Page:  # noqa: F811
    context = await browser.new_context(viewport={"width": 1920, "height": 1080},
                                        locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(url + "#/performance")
    await expect(page.locator('#nav a[data-view="performance"]')).to_have_class("active")
    return page


def cell(page: Page, unit: str, field: str) -> object:
    return page.locator(f'#perf-table tr[data-unit="{unit}"] [data-field="{field}"]')


async def test_performance_view(browser: Browser, room: Room) -> None:  # noqa: F811
    page = await _page(browser, room.url)
    await expect(page.locator("#perf-year")).to_have_value("2026")
    await expect(page.locator("#perf-asof")).to_have_text("2026 Q2 · 130 / 365 d")
    await expect(page.locator("#perf-status")).to_contain_text("historian 2024")
    await expect(page.locator("#perf-status")).to_contain_text("group target 2026")
    # Site: 1 610 t against 4 380 · 130/365 = 1 560 t: +50 t, +3.21 %; 1 610 / 4 380 =
    # 36.76 % of the year's target used, the mark at 130/365 = 35.6 % of the bar.
    await expect(cell(page, "site", "co2_ytd_t")).to_have_text("1,610.0")  # type: ignore[arg-type]
    await expect(cell(page, "site", "target_ytd_t")).to_have_text("1,560.0")  # type: ignore[arg-type]
    await expect(cell(page, "site", "deviation_ytd_t")).to_have_text("+50.0")  # type: ignore[arg-type]
    await expect(cell(page, "site", "deviation_ytd_pct")).to_have_text("+3.21")  # type: ignore[arg-type]
    await expect(cell(page, "site", "deviation_ytd_pct")).to_have_class("num bad")  # type: ignore[arg-type]
    await expect(cell(page, "site", "target_used_pct")).to_have_text("36.8")  # type: ignore[arg-type]
    bar = page.locator('#perf-table tr[data-unit="site"] .perf-bar span')
    width = await bar.evaluate("(n) => n.style.width")
    # (the CSSOM keeps three decimals)
    assert float(width.rstrip("%")) == pytest.approx(161_000 / 4_380, abs=1e-3), width
    mark = await page.locator('#perf-table tr[data-unit="site"] .perf-bar .mark').evaluate(
        "(n) => n.style.left")
    assert float(mark.rstrip("%")) == pytest.approx(13_000 / 365, abs=1e-3), mark
    # U2 below its target: 610 against 40 % · 1 560 = 624 t: −14 t, −2.24 %, green.
    await expect(cell(page, "U2", "deviation_ytd_t")).to_have_text("-14.0")  # type: ignore[arg-type]
    await expect(cell(page, "U2", "deviation_ytd_pct")).to_have_class("num ok")  # type: ignore[arg-type]
    # U1: intensity 1 000 / 1 270 = 0.7874 t/MWh, baseline 5/6 = 0.8333, normalised
    # 1 270 · 5/6 = 1 058.3 t, 1 000 against it −7/127 = −5.51 %.
    await expect(cell(page, "U1", "intensity_ytd")).to_have_text("0.7874t/MWh")  # type: ignore[arg-type]
    await expect(cell(page, "U1", "baseline_intensity")).to_have_text("0.8333")  # type: ignore[arg-type]
    await expect(cell(page, "U1", "normalised_baseline_ytd_t")).to_have_text("1,058.3")  # type: ignore[arg-type]
    await expect(cell(page, "U1", "vs_baseline_pct")).to_have_text("-5.51")  # type: ignore[arg-type]
    # Figures of the site.
    figs = page.locator("#perf-figures")
    await expect(figs).to_contain_text("2024")
    await expect(figs).to_contain_text("4,380")
    # Benchmarks ranked: U2 +9.16 %, the site +3.21 %, U1 best in class +0.95 %, U1 −4.19 %.
    rows = page.locator("#perf-bench tbody tr")
    await expect(rows).to_have_count(4)
    assert [await r.get_attribute("data-unit") for r in await rows.all()] == [
        "U2", "site", "U1", "U1"]
    first = rows.nth(0)
    await expect(first.locator('[data-field="gap_pct"]')).to_have_text("+9.16")
    await expect(first.locator('[data-field="source"]')).to_have_text("allocation plan")
    await expect(rows.nth(2).locator('[data-field="kind"]')).to_contain_text("best in class")
    await expect(rows.nth(3).locator('[data-field="gap_pct"]')).to_have_text("-4.19")
    await expect(page.locator("#perf-bench-none")).to_be_hidden()
    # English only after the switch; the status line is built again.
    await page.locator("#lang-switch").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("#perf-status")).to_contain_text("baseline source: historian")
    await expect(page.locator("#perf-status")).not_to_contain_text("基准来源")
    await expect(page.locator('#perf-table tr[data-unit="U1"] th .perf-id')).to_be_visible()
    assert await page.locator('#perf-table tr[data-unit="site"] th').inner_text() == "Site"
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "performance-1920x1080.png"), full_page=True)
    # A year outside the range: the server's message, nothing left from before.
    await page.locator("#perf-year").fill("1999")
    await page.locator("#perf-load").click()
    await expect(page.locator("#perf-status")).to_contain_text(
        "query parameter 'year' must be a year from 2005 to 2100")
    await expect(page.locator("#perf-status")).to_have_class("status bad")
    await expect(page.locator("#perf-table tr")).to_have_count(0)
    # A past year with no target: deviations empty, actuals there.
    await page.locator("#perf-year").fill("2024")
    await page.locator("#perf-load").click()
    await expect(page.locator("#perf-asof")).to_have_text("2024 Q4 · 366 / 366 d")
    await expect(cell(page, "site", "co2_ytd_t")).to_have_text("4,800.0")  # type: ignore[arg-type]
    await expect(cell(page, "site", "deviation_ytd_t")).to_have_text("—")  # type: ignore[arg-type]
    assert page.errors == []  # type: ignore[attr-defined]
