"""The HMI page in headless Chromium: live values, flags, alarms and the connection state."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from server.records import DataFlag
from tests.fixtures.plant import plant_config
from tests.web.test_api import T0, alarm_event, minute_result, source_minute
from web.app import WebSink

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT = "/tmp/hmi.png"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs it")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1600, "height": 900},
                                        locale="zh-CN")
    p = await context.new_page()
    yield p
    await context.close()


async def test_hmi_shows_live_values_and_connection_state(port: int, page: Page) -> None:
    sink = WebSink(plant_config(web_port=port))
    await sink.start()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    origins: set[str] = set()
    page.on("request", lambda req: origins.add(re.sub(r"^(\w+://[^/]+).*", r"\1", req.url)))
    try:
        await page.goto(f"http://127.0.0.1:{port}/")
        conn = page.locator("#conn")
        await expect(conn).to_have_attribute("data-state", "connected")
        await expect(conn).to_contain_text("已连接 / connected")
        await expect(page.locator("#site-name-zh")).to_have_text("测试电厂")
        await expect(page.locator("#tz")).to_have_text("Asia/Shanghai")
        # Before the first minute the configured source is listed with no values.
        await expect(page.locator('[data-source="S1"][data-field="co2_kg"]')).to_have_text("—")

        await sink.on_minute(minute_result())
        src = 'tr[data-source-row="S1"]'
        await expect(page.locator(f'{src} [data-field="co2_kg"]')).to_have_text("3,282.70")
        await expect(page.locator(f'{src} [data-field="co2_dry_pct"]')).to_have_text("12.00")
        await expect(page.locator(f'{src} [data-field="co2_mg_m3"]')).to_have_text("235,680")
        await expect(page.locator(f'{src} [data-field="flow_std_dry_m3_h"]')).to_have_text(
            "835,719")
        await expect(page.locator(f'{src} [data-field="co2_rate_t_h"]')).to_have_text("196.96")
        await expect(page.locator(f'{src} [data-field="co2_today_t"]')).to_have_text("1,234.57")
        await expect(page.locator(f'{src} [data-field="t"]')).to_have_text("10:03:00")
        flag = page.locator('[data-source="S1"][data-field="flag"]')
        await expect(flag).to_have_text("N")
        await expect(flag).to_have_class(re.compile(r"\bflag-ok\b"))
        await expect(page.locator("#last-minute")).to_have_text("2024-05-01 10:03:00")

        unit = '[data-unit="U1"]'
        await expect(page.locator(f'{unit}[data-field="output_mwh"]')).to_have_text("10.00")
        await expect(page.locator(f'{unit}[data-field="intensity_t_mwh"]')).to_have_text("0.328")
        await expect(page.locator(f'{unit}[data-field="co2_today_t"]')).to_have_text("1,234.57")
        site = '[data-site="site"]'
        await expect(page.locator(f'{site}[data-field="allowance_used_pct"]')).to_have_text(
            "11.42")
        await expect(page.locator(f'{site}[data-field="co2_ytd_t"]')).to_have_text("456,789")

        sink.on_alarm(alarm_event())
        alarm = page.locator('#alarm-list li[data-rule="s1_rate_high"]')
        await expect(alarm).to_have_class(re.compile(r"\balarm\b"))
        await expect(alarm).to_contain_text("1号烟囱 CO₂ 排放速率高")
        await expect(page.locator("#alarm-empty")).to_be_hidden()

        await page.screenshot(path=SCREENSHOT, full_page=True)

        # A faulty minute: no value shown for NaN, flag D in red, row marked invalid.
        bad = source_minute(T0 + timedelta(minutes=1), co2_dry_pct=float("nan"),
                            valid=False, flag=DataFlag.D)
        await sink.on_minute(minute_result(T0 + timedelta(minutes=1), sources=(bad,)))
        await expect(flag).to_have_text("D")
        await expect(flag).to_have_class(re.compile(r"\bflag-bad\b"))
        await expect(page.locator(f'{src} [data-field="co2_dry_pct"]')).to_have_text("—")
        sink.on_alarm(alarm_event("normal", T0 + timedelta(minutes=1)))
        await expect(alarm).to_have_count(0)
        await expect(page.locator("#alarm-empty")).to_be_visible()

        await sink.stop()
        await expect(conn).to_have_attribute("data-state", "disconnected")
        await expect(conn).to_contain_text("连接中断 / disconnected")

        # The page reconnects by itself (with backoff) once the server is back.
        sink = WebSink(plant_config(web_port=port))
        await sink.start()
        await expect(conn).to_have_attribute("data-state", "connected", timeout=15_000)
        await sink.on_minute(minute_result(T0 + timedelta(minutes=2)))
        await expect(page.locator(f'{src} [data-field="t"]')).to_have_text("10:05:00")
    finally:
        await sink.stop()
    assert errors == []
    assert origins == {f"http://127.0.0.1:{port}"}
