"""The HMI's alarm and allowance views in headless Chromium (issue 14): the alarm time kept by
the server over a reload, acknowledging from the alarm view, a viewer without actions, the
journal filters, the new-alarm banner and beep, and the allowance chart drawing the stored
days. A real web sink on loopback with a real alarm sink and historian; screenshots go to
var/screenshots/."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from alarms.engine import AlarmSink
from model.flags import DataFlag
from model.records import AlarmEvent, AllowancePosition, PeriodRecords, PeriodResult, UnitPeriod
from server.audit import AuditLog
from server.config import parse_config
from server.historian import Historian
from server.users import UserStore
from tests.alarms.test_rules import record
from tests.fixtures.plant import plant_config, plant_dict
from tests.web.test_auth import S1_RATE, at
from tests.web.test_hmi import (
    browser,  # noqa: F401  (the fixture)
    log_in,
)
from web.app import WebSink

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
U1_KG = {"id": "u1_kg", "name": "U1 CO2", "target": {"unit": "U1", "field": "co2_kg"},
         "warning": 9000.0, "alarm": 10000.0}
SIZES = ((1920, 1080), (768, 1024))


class JournaledRoom:
    """Web sink, alarm sink, users, audit log and a historian journaling every alarm event,
    wired as server/runtime.py does."""

    def __init__(self, port: int, tmp_path: Path) -> None:
        d = plant_dict(web_port=port)
        d["alarms"] = {"rules": [dict(S1_RATE), dict(U1_KG)], "channels": []}
        cfg = parse_config(d, "test_hmi_alarms")
        self.historian = Historian(tmp_path / "h.sqlite")
        self.users = UserStore(tmp_path / "users.sqlite")
        self.users.ensure_demo_users()
        self.audit = AuditLog(tmp_path / "audit.sqlite")
        self.alarms = AlarmSink(cfg)
        self.sink = WebSink(cfg, users=self.users, audit=self.audit, alarms=self.alarms,
                            journal=self.historian)
        self.writes: list[asyncio.Task[None]] = []
        self.alarms.subscribe(self._on_alarm)
        self.url = f"http://127.0.0.1:{port}/"

    def _on_alarm(self, event: AlarmEvent) -> None:
        self.writes.append(asyncio.ensure_future(self.historian.record_alarm(event)))
        self.sink.on_alarm(event)

    async def journaled(self) -> None:
        """Wait for every journal write queued so far."""
        await asyncio.gather(*self.writes)

    async def __aenter__(self) -> JournaledRoom:
        await self.historian.start()
        await self.alarms.start()
        await self.sink.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sink.stop()
        await self.alarms.stop()
        await self.journaled()
        await self.historian.stop()


async def _page(browser: Browser, width: int, height: int) -> Page:  # noqa: F811
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    return await context.new_page()


async def _no_sideways_scroll(page: Page) -> None:
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"sideways scroll: {scroll} > {client}"


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_alarm_view_ack_reload_journal_and_roles(
        browser: Browser, port: int, tmp_path: Path) -> None:  # noqa: F811
    async with JournaledRoom(port, tmp_path) as room:
        page = await _page(browser, 1600, 900)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(room.url + "#/alarms")
        await log_in(page, "operator", "demo-operator")

        # 08:00 local (00:00 UTC): S1 at 5 200 kg (alarm limit 5 000) and U1 at 12 000 kg
        # (alarm limit 10 000) both rise. A new alarm shows the banner and beeps.
        await room.alarms.on_minute(record(at(0), s1_kg=5200.0, u1_kg=12_000.0))
        banner = page.locator("#alarm-banner")
        await expect(banner).to_be_visible()
        await expect(banner).not_to_have_class("silenced")
        await page.wait_for_function("window.hmi.alarmSound.beeps >= 1")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "alarm-banner-1600x900.png"))
        await page.locator("#alarm-silence").click()
        await expect(banner).to_have_class("alarm-banner silenced")
        assert await page.evaluate("window.hmi.alarmSound.timer") is None
        assert await page.evaluate("window.hmi.alarmSound.silenced") is True

        row = page.locator('#alarm-list li[data-rule="s1_rate"]')
        await expect(row.locator(".when")).to_have_text("08:00:00")
        buttons = row.locator(".actions button")
        await expect(buttons).to_have_text(["确认Acknowledge", "搁置Shelve"])
        await row.locator('button[data-action="acknowledge"]').click()
        await row.locator('form.action-form input[name="comment"]').fill("负荷升高")
        await row.locator('form.action-form button[type="submit"]').click()
        await expect(row.locator('[data-field="ack_state"]')).to_have_text("已确认acknowledged")
        await expect(row.locator(".detail")).to_contain_text(
            "确认人 acknowledged by operator：负荷升高")
        states = {e.rule: e.ack_state for e in room.alarms.alarm_list()}
        assert states == {"s1_rate": "active-acknowledged", "u1_kg": "active-unacknowledged"}

        # At 08:01 S1 falls to 4 500 kg (a warning): a condition event, no user on it.
        await room.alarms.on_minute(record(at(1), s1_kg=4500.0, u1_kg=12_000.0))
        await expect(row).to_have_class("alarm-item warning")
        listed = {a["rule"]: a for a in await _get_json(f"{room.url}api/v1/alarms")}
        s1 = listed["s1_rate"]
        assert s1["t"] == "2024-05-01T00:01:00Z" and s1["user"] == ""
        assert s1["raised_at"] == "2024-05-01T00:00:00Z"
        assert s1["acknowledged_by"] == "operator"
        assert s1["acknowledged_at"] is not None
        assert datetime.fromisoformat(s1["acknowledged_at"]) > at(2)  # acked now, not in 2024
        u1 = listed["u1_kg"]
        assert (u1["raised_at"], u1["acknowledged_by"], u1["acknowledged_at"]) == (
            "2024-05-01T00:00:00Z", None, None)

        # After a reload the row still shows when the alarm began and who acknowledged it.
        await page.reload()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
        await expect(row.locator(".when")).to_have_text("08:00:00")
        await expect(row.locator(".detail")).to_contain_text("确认 acknowledged by operator")
        await expect(row.locator('[data-field="ack_state"]')).to_have_text("已确认acknowledged")

        # The journal from 07:00 to 09:00 local on 1 May 2024: the two alarms at 08:00 and
        # S1's warning at 08:01 (the acknowledgement is journaled at its own time, now).
        # The rule filter leaves S1's two, newest first; the state filter its one alarm.
        await room.journaled()
        await page.locator("#journal-from").fill("2024-05-01T07:00")
        await page.locator("#journal-to").fill("2024-05-01T09:00")
        await page.locator("#journal-load").click()
        rows = page.locator("#journal-table tbody tr")
        await expect(rows).to_have_count(3)
        await expect(page.locator("#journal-rule option")).to_have_count(3)  # all, 2 rules
        await page.locator("#journal-rule").select_option("s1_rate")
        await expect(rows).to_have_count(2)
        assert await rows.evaluate_all("(rs) => rs.map((r) => r.dataset.rule)") == [
            "s1_rate"] * 2
        assert await rows.evaluate_all("(rs) => rs.map((r) => r.dataset.state)") == [
            "warning", "alarm"]
        await page.locator("#journal-state").select_option("alarm")
        await expect(rows).to_have_count(1)
        await expect(rows.locator('[data-field="value"]')).to_have_text("5,200.00 kg")
        await expect(rows.locator("th")).to_have_text("2024-05-01 08:00:00")

        # Shelved: U1's alarm on the shelf for 30 minutes shows in the shelved list.
        u1_row = page.locator('#alarm-list li[data-rule="u1_kg"]')
        await u1_row.locator('button[data-action="shelve"]').click()
        await u1_row.locator('form.action-form input[name="comment"]').fill("分析仪校准")
        await u1_row.locator('form.action-form input[name="minutes"]').fill("30")
        await u1_row.locator('form.action-form button[type="submit"]').click()
        shelved = page.locator('#shelved-table tbody tr[data-rule="u1_kg"]')
        await expect(shelved).to_have_count(1)
        await expect(shelved.locator('[data-field="user"]')).to_have_text("operator")
        await expect(shelved.locator('[data-field="comment"]')).to_have_text("分析仪校准")
        await expect(shelved.locator('[data-field="raised_at"]')).to_have_text("08:00:00")
        await expect(page.locator("#shelved-count")).to_have_text("1")

        # A viewer in another browser sees the rows and no action buttons.
        viewer = await _page(browser, 1600, 900)
        await viewer.goto(room.url + "#/alarms")
        await log_in(viewer, "viewer", "demo-viewer")
        vrow = viewer.locator('#alarm-list li[data-rule="s1_rate"]')
        await expect(vrow.locator(".when")).to_have_text("08:00:00")
        await expect(vrow.locator(".actions button")).to_have_count(0)
        await expect(viewer.locator("#alarm-list .actions button")).to_have_count(0)
        await expect(page.locator('#alarm-list li[data-rule="s1_rate"] .actions button')
                     ).to_have_count(1)  # the operator: shelve (acknowledged already)

        SHOTS.mkdir(parents=True, exist_ok=True)
        for width, height in SIZES:
            shot = await _page(browser, width, height)
            await shot.goto(room.url + "#/alarms")
            await log_in(shot, "operator", "demo-operator")
            await shot.locator("#journal-from").fill("2024-05-01T07:00")
            await shot.locator("#journal-to").fill("2024-05-01T09:00")
            await shot.locator("#journal-load").click()
            await expect(shot.locator("#journal-table tbody tr")).to_have_count(3)
            await shot.screenshot(path=str(SHOTS / f"alarms-{width}x{height}.png"),
                                  full_page=True)
            await _no_sideways_scroll(shot)
            await shot.context.close()
        await viewer.context.close()
        await page.context.close()
    assert errors == []


# ------------------------------------------------------------------ allowance

YEAR0 = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 Asia/Shanghai
DAY_CO2_T = (100.0, 250.0, 175.0)  # U1's CO2 on 1, 2 and 3 January 2026
# 525 t of 5 000 t after 3 of 365 days: 10.5 % used, pro-rated 5 000 · 3/365 = 41.0959 t;
# 525 t over the trailing 30 days → 525 + 525/30 · 362 = 6 860 t at the year's end,
# 1 860 t short, at 80 CNY/t 148 800 CNY.
POSITION = AllowancePosition(5000.0, 525.0, 3 / 365, 362.0, 525.0, 5000.0 * 3 / 365, 10.5,
                             4475.0, 6860.0, 1860.0, 80.0, 148_800.0)


def _day(i: int, co2_t: float) -> PeriodRecords:
    t = YEAR0 + timedelta(days=i)
    src = PeriodResult("S1", t, 12.0, 835_718.9, co2_t / 24 * 1000, co2_t, co2_t, True,
                       DataFlag.N, 1440, False, "")
    unit = UnitPeriod("U1", t, co2_t, math.nan, 600.0 * 24, co2_t / (600.0 * 24), True,
                      DataFlag.N)
    return PeriodRecords("day", t, t + timedelta(days=1), (src,), (), (unit,))


@pytest.fixture
async def allowance_sink(port: int, tmp_path: Path) -> AsyncIterator[WebSink]:
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    for i, co2 in enumerate(DAY_CO2_T):
        await h.on_period(_day(i, co2))
    s = WebSink(plant_config(web_port=port), history=h)
    await s.start()
    # The position at the end of the last hour of 3 January (what /allowance answers).
    end = YEAR0 + timedelta(days=3)
    await s.on_period(PeriodRecords("hour", end - timedelta(hours=1), end, (), (), (),
                                    POSITION))
    yield s
    await s.stop()
    await h.stop()


async def test_allowance_view_draws_the_stored_days(browser: Browser,  # noqa: F811
                                                    allowance_sink: WebSink) -> None:
    sink = allowance_sink
    url = f"http://127.0.0.1:{sink.port}/#/allowance"
    start_s = int(YEAR0.timestamp())
    year_s = 365 * 86_400
    errors: list[str] = []
    for width, height in SIZES:
        page = await _page(browser, width, height)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text)
                if "Content Security Policy" in m.text else None)
        await page.goto(url)
        await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
        await expect(page.locator("#nav a[data-view=allowance]")).to_have_class("active")
        await page.locator("#allowance-year").fill("2026")
        await page.locator("#allowance-load").click()
        await expect(page.locator("#allowance-status")).to_contain_text("3 ")
        await page.wait_for_function("!!window.hmi.charts.allowance")
        xs, ytd, prorated, forecast = await page.evaluate(
            "window.hmi.charts.allowance.data.map((s) => Array.from(s))")
        assert xs == [start_s + 86_400 * i for i in range(4)] + [start_s + year_s]
        assert ytd == [0.0, 100.0, 350.0, 525.0, None]
        assert prorated == pytest.approx([0.0, 5000 / 365, 10_000 / 365, 15_000 / 365, 5000.0])
        assert forecast == [None, None, None, 525.0, 6860.0]
        fig = page.locator("#allowance-figures")
        await expect(fig.locator('[data-field="ytd_t"]')).to_have_text("525.0t")
        await expect(fig.locator('[data-field="prorated_t"]')).to_have_text("41.1t")
        await expect(fig.locator('[data-field="forecast_year_end_t"]')).to_have_text("6,860t")
        await expect(fig.locator('[data-field="forecast_shortfall_t"]')).to_have_text("1,860t")
        await expect(fig.locator('[data-field="shortfall_cost_cny"]')).to_have_text(
            "148,800CNY")
        month = page.locator('#months-table tbody tr[data-month="2026-01"]')
        await expect(month.locator('[data-field="co2_t"]')).to_have_text("525.0")
        await expect(month.locator('[data-field="days"]')).to_have_text("3")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"allowance-{width}x{height}.png"),
                              full_page=True)
        await _no_sideways_scroll(page)
        await page.context.close()
    assert errors == []
