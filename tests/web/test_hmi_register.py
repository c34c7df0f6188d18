"""The instrument register in the devices view, in headless Chromium against a real web
sink: the page shows what /api/v1/instruments answers for a plant whose instruments are
due on dates set relative to today (tests/web/test_instruments.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from server.config import parse_config
from tests.web.test_hmi import browser  # noqa: F401  (the fixture)
from tests.web.test_instruments import _plant, _today
from web.app import WebSink

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (768, 1024)])
async def test_register_shows_due_dates_states_and_the_uncertainty(
        browser: Browser, width: int, height: int) -> None:  # noqa: F811
    today = _today()
    sink = WebSink(parse_config(_plant(today), "test_hmi_register"))
    await sink.start()
    try:
        context = await browser.new_context(viewport={"width": width, "height": height},
                                            locale="zh-CN")
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{sink.port}/#/devices")
        rows = page.locator("#register-table tbody tr")
        await expect(rows).to_have_count(6)  # every tag, registered or not
        if await page.locator("#register-date").text_content() != \
                f"{today.isoformat()} Asia/Shanghai":
            pytest.skip("the plant-local date changed during the test")
        # Most urgent first: overdue, then due soon by days left, valid, unregistered.
        assert await rows.evaluate_all("(rs) => rs.map((r) => r.dataset.tag)") == [
            "s1_moisture", "s1_temp", "s1_static", "s1_velocity", "s1_co2", "u1_power"]
        late = page.locator('#register-table tr[data-tag="s1_moisture"]')
        await expect(late.locator('[data-field="state"]')).to_have_text("已逾期overdue")
        await expect(late.locator('[data-field="days_to_due"]')).to_have_text("-3")
        due = (today - dt.timedelta(days=3)).isoformat()
        await expect(late.locator('[data-field="calibration_due"]')).to_have_text(due)
        await expect(late.locator('[data-field="accuracy_pct"]')).to_have_text("1.20")
        await expect(page.locator('#register-table tr[data-tag="s1_temp"] [data-field="state"]')
                     ).to_have_text("即将到期due soon")
        await expect(page.locator('#register-table tr[data-tag="u1_power"] '
                                  '[data-field="state"]')).to_have_text("未登记not registered")
        await expect(page.locator("#register-status")).to_have_text(
            "1 已逾期 overdue · 2 即将到期 due soon (≤ 14 d) · 2 有效 valid · "
            "1 未登记 not registered")
        # u_c = √((1.5² + 3² + 0.6² + 0.9² + 1.2²)/3) = √4.62 = 2.1494 %, k = 2: 4.2988 %
        await expect(page.locator('#register-uncertainty li[data-source="S1"]')).to_have_text(
            "S1 CO₂ 相对不确定度 relative uncertainty 2.15 % (k = 2: 4.30 %)")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"register-{width}x{height}.png"),
                              full_page=True)
        scroll, client = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert scroll <= client
        await context.close()
    finally:
        await sink.stop()
