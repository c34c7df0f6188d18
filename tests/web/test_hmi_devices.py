"""The devices view in headless Chromium against a running server (issue 14, view 5).

Real drivers poll real simulators: cems1 over Modbus TCP, cems2 (Modbus RTU) behind a
simulated serial-to-Ethernet gateway whose fault injection turns it silent while the page
is open. The raw-tag table is checked against the values the simulators were set to.
Screenshots with a device opened go to var/screenshots/devices-<w>x<h>.png.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from drivers.stream_sim import StreamSimulator
from server.config import parse_plant
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import VECTOR, plant_dict
from tests.web.test_hmi import browser  # noqa: F401  (the fixture)

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
ZONE = ZoneInfo("Asia/Shanghai")
# What cems2's simulated registers hold (float32: 6.3 is stored as 6.30000019).
FLOW_M3_H = 1234.5
O2_PCT = 6.3


def _plant(tmp_path: Path) -> dict[str, Any]:
    d = plant_dict(free_port(), web_port=free_port(), var_dir=str(tmp_path / "var"))
    d["opcua"]["enabled"] = False
    d["devices"][0]["tags"][4]["description_zh"] = "二氧化碳浓度"
    d["devices"][0]["tags"][4]["description"] = "CO2 concentration"
    d["devices"].append({
        "id": "cems2", "protocol": "modbus_rtu", "device_id": 2, "simulate": True,
        "link": {"host": "127.0.0.1", "port": free_port()},
        "poll_interval_s": 0.1, "timeout_s": 0.2, "retries": 0,
        "tags": [
            {"id": "s2_flow", "register": 0, "unit": "m³/h", "description_zh": "烟气流量",
             "description": "Flue gas flow", "sim": {"value": FLOW_M3_H}},
            {"id": "s2_o2", "register": 2, "unit": "%", "description_zh": "氧量",
             "sim": {"value": O2_PCT}},
        ]})
    return d


async def _until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not done():
            await asyncio.sleep(0.05)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Runtime, StreamSimulator]]:
    rt = Runtime(parse_plant(_plant(tmp_path), "test_hmi_devices"))
    await rt.start()
    try:
        [gateway] = [s for s in rt.simulators if isinstance(s, StreamSimulator)]

        def polled() -> bool:
            devs = [d for b in rt.device_status() for d in b["devices"]]
            return len(devs) == 2 and all(d["online"] and d["polls"] >= 2 for d in devs)
        await _until(polled)
        yield rt, gateway
    finally:
        await rt.stop()


def _port(rt: Runtime) -> int:
    return rt.config.web.port


async def _page(browser: Browser, width: int, height: int) -> Page:  # noqa: F811
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    return await context.new_page()


async def _open_devices(page: Page, rt: Runtime) -> None:
    await page.goto(f"http://127.0.0.1:{_port(rt)}/#/devices")
    await expect(page.locator("#nav a[data-view=devices]")).to_have_class("active")
    await expect(page.locator("#devices-table tr.device")).to_have_count(2)


async def test_a_device_silenced_by_the_simulator_goes_offline_on_the_page(
        browser: Browser,  # noqa: F811
        running: tuple[Runtime, StreamSimulator]) -> None:
    rt, gateway = running
    page = await _page(browser, 1600, 900)
    await _open_devices(page, rt)
    bad = page.locator('#devices-table tr[data-device="cems2"]')
    good = page.locator('#devices-table tr[data-device="cems1"]')
    await expect(bad).to_have_class("device online")
    await expect(bad.locator('[data-field="last_error"]')).to_have_text("—")
    await page.locator('button[data-open="cems2"]').click()
    row = page.locator('#device-tags-table tr[data-tag="s2_flow"]')
    await expect(row.locator('[data-field="quality"]')).to_have_text("好good")

    gateway.set_fault("cems2", "silent")  # the page stays open: its 5 s refresh sees it
    await expect(bad).to_have_class("device offline", timeout=12_000)
    await expect(bad.locator('[data-field="state"]')).to_have_text("离线offline")
    error = (await bad.locator('[data-field="last_error"]').inner_text()).strip()
    [stats] = [d for b in rt.device_status() for d in b["devices"] if d["device"] == "cems2"]
    # Registers 0..3 are its two float32 tags; 0.2 s is its timeout_s.
    assert error == "no reply reading holding 0..3 within 0.2 s" == stats["last_error"]
    errors_shown = int((await bad.locator('[data-field="errors"]').inner_text()).replace(",", ""))
    assert errors_shown >= 1
    # The other device on its own bus polls on.
    await expect(good).to_have_class("device online")
    await expect(good.locator('[data-field="last_error"]')).to_have_text("—")
    # Its raw tags: the newest readings now are the failed polls' (no value, flag B).
    await expect(row.locator('[data-field="quality"]')).to_have_text("坏bad", timeout=12_000)
    await expect(row.locator('[data-field="flag"]')).to_have_text("B")
    await expect(row.locator('[data-field="value"]')).to_have_text("—")

    gateway.set_fault("cems2", "none")  # and back
    await expect(bad).to_have_class("device online", timeout=12_000)
    await expect(row.locator('[data-field="value"]')).to_have_text("1,234.5", timeout=12_000)


async def test_raw_tags_show_what_the_simulator_serves(
        browser: Browser,  # noqa: F811
        running: tuple[Runtime, StreamSimulator]) -> None:
    rt, _ = running
    page = await _page(browser, 1600, 900)
    await _open_devices(page, rt)
    await page.locator('button[data-open="cems1"]').click()
    panel = page.locator("#device-tags-panel")
    await expect(panel).to_be_visible()
    await expect(page.locator("#device-tags-name")).to_have_text("cems1")
    rows = page.locator("#device-tags-table tbody tr")
    await expect(rows).to_have_count(6)
    # tests/fixtures/plant.py's worked example (calc_vectors.md), and 600 MW of power.
    want = {"s1_velocity": ("15", "m/s"), "s1_temp": ("50", "°C"),
            "s1_static": ("-500", "Pa"), "s1_moisture": ("8", "%"), "s1_co2": ("12", "%"),
            "u1_power": ("600", "MW")}
    assert VECTOR["velocity"] == 15.0 and VECTOR["static"] == -500.0
    for tag, (value, unit) in want.items():
        row = page.locator(f'#device-tags-table tr[data-tag="{tag}"]')
        await expect(row.locator('[data-field="value"]')).to_have_text(value)
        await expect(row.locator('[data-field="unit"]')).to_have_text(unit)
        await expect(row.locator('[data-field="flag"]')).to_have_text("N")
        await expect(row.locator('[data-field="quality"]')).to_have_text("好good")
    co2 = page.locator('#device-tags-table tr[data-tag="s1_co2"]')
    await expect(co2.locator('[data-field="name"]')).to_have_text("二氧化碳浓度")
    # The time is the plant's (Asia/Shanghai, UTC+8), within the last seconds.
    shown = await co2.locator('[data-field="t"]').inner_text()
    t = datetime.strptime(shown.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZONE)
    assert abs((datetime.now(UTC) - t).total_seconds()) < 10, shown
    age = (await co2.locator('[data-field="age_s"]').inner_text()).strip()
    assert age.endswith(" s") and float(age[:-2]) < 6, age
    # Another device: float32 registers shown as set, not 6.30000019.
    await page.locator('button[data-open="cems2"]').click()
    await expect(page.locator("#device-tags-name")).to_have_text("cems2")
    o2 = page.locator('#device-tags-table tr[data-tag="s2_o2"]')
    await expect(o2.locator('[data-field="value"]')).to_have_text("6.3")
    flow = page.locator('#device-tags-table tr[data-tag="s2_flow"]')
    await expect(flow.locator('[data-field="value"]')).to_have_text("1,234.5")
    await expect(flow.locator('[data-field="unit"]')).to_have_text("m³/h")
    await page.locator("#lang-switch").click()
    await expect(flow.locator('[data-field="name"]')).to_have_text("Flue gas flow", timeout=8000)
    await page.locator("#device-tags-close").click()
    await expect(panel).to_be_hidden()


async def test_device_tags_api_answers_the_newest_readings(
        running: tuple[Runtime, StreamSimulator]) -> None:
    rt, _ = running
    base = f"http://127.0.0.1:{_port(rt)}/api/v1/devices"
    async with aiohttp.ClientSession() as c:
        async with c.get(f"{base}/cems2/tags") as r:
            assert r.status == 200
            body = await r.json()
        async with c.get(f"{base}/nope/tags") as r:
            assert r.status == 404
            assert "nope" in (await r.json())["error"]
    assert body["device"] == "cems2"
    flow, o2 = body["tags"]
    assert (flow["tag"], flow["value"], flow["unit"], flow["flag"], flow["quality"]) == (
        "s2_flow", FLOW_M3_H, "m³/h", "N", "good")
    assert flow["name"] == "烟气流量" and flow["name_en"] == "Flue gas flow"
    assert abs(o2["value"] - O2_PCT) < 1e-6 and o2["value"] != O2_PCT  # a float32 register
    assert 0 <= flow["age_s"] < 5


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (768, 1024)])
async def test_devices_view_with_a_device_opened_fits_and_is_saved(
        browser: Browser,  # noqa: F811
        running: tuple[Runtime, StreamSimulator], width: int, height: int) -> None:
    rt, gateway = running
    gateway.set_fault("cems2", "silent")
    page = await _page(browser, width, height)
    await _open_devices(page, rt)
    await expect(page.locator('#devices-table tr[data-device="cems2"]')).to_have_class(
        "device offline", timeout=12_000)
    await page.locator('button[data-open="cems1"]').click()
    await expect(page.locator("#device-tags-table tbody tr")).to_have_count(6)
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"devices-{width}x{height}.png"), full_page=True)
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"devices at {width} px scrolls sideways: {scroll} > {client}"
