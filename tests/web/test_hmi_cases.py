"""The HMI's cases view in headless Chromium (issue 18): the list of open, overdue and closed
cases with its filters (two cases the server opened by itself, one of them overdue); an
operator opening a case on a stored hour and recording an action (review and close not
offered to an operator); an engineer refused closing before a review, then reviewing and
closing; the list, the history and the API agreeing at each step.

A real web sink on loopback with a real historian, audit log, user store and case keeper
(the keeper's clock set by the test, as in tests/server/test_cases.py). Screenshot:
var/screenshots/cases-1600x900.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from compute.config import ClockConfig
from model.records import AlarmEvent, PeriodRecords
from server.audit import AuditLog
from server.cases import AutoCasesConfig, CaseSink
from server.config import parse_plant
from server.historian import Historian
from server.users import UserStore
from tests.server.test_cases import HOUR, NOW, FixedKeeper, substituted_hour
from tests.web.test_auth import users as users  # the fixture
from tests.web.test_hmi import (
    browser,  # noqa: F401  (the fixture)
    log_in,
)
from tests.web.test_hmi_records import no_sideways_scroll
from web.app import WebSink

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


class Site:
    """The running web sink and its keeper."""

    def __init__(self, sink: WebSink, keeper: FixedKeeper) -> None:
        self.sink = sink
        self.keeper = keeper

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sink.port}/"

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as c, c.get(f"{self.url}api/v1/{path}") as r:
            assert r.status == 200, await r.text()
            return await r.json()


@pytest.fixture
async def site(port: int, tmp_path: Path, users: UserStore) -> AsyncIterator[Site]:
    plant = parse_plant(_plant(port, tmp_path), "test_hmi_cases")
    path = Path(plant.config.historian.path)
    historian = Historian(path)
    await historian.start()
    await historian.on_period(PeriodRecords("hour", HOUR, HOUR + timedelta(hours=1),
                                            (substituted_hour(),), (), ()))
    audit = AuditLog(path)
    keeper = FixedKeeper(path, historian, audit)
    keeper.t = NOW
    await keeper.load()
    # Two cases the server opened by itself: an alarm's (due in 7 days) and, due in one
    # hour, S1's 09:00 hour's; two hours later the second is overdue.
    sink = CaseSink(keeper, AutoCasesConfig(alarms=("s1_rate",)), ClockConfig(),
                    "Asia/Shanghai")
    sink.on_alarm(AlarmEvent("s1_rate", HOUR + timedelta(minutes=30), "alarm", "normal",
                             5200.0, 5000.0, "source S1 co2_kg", "S1 CO2 rate high",
                             "S1 CO2 排放速率高"))
    await sink.stop()
    subject = {"kind": "period", "ref": "source_hour:S1:2026-03-01T09:00:00+00:00",
               "found": {"flag": "B"}}
    await keeper.open_system(subject, "source S1 hour 2026-03-01 17:00 invalid",
                             "hour invalid: 20 valid minutes < 45, flag B", 1 / 24)
    keeper.t = NOW + timedelta(hours=2)
    web = WebSink(plant.config, users=users, audit=audit, journal=historian, cases=keeper)
    await web.start()
    try:
        yield Site(web, keeper)
    finally:
        await web.stop()
        await historian.stop()


def _plant(port: int, tmp_path: Path) -> dict[str, Any]:
    from tests.fixtures.plant import plant_dict

    return plant_dict(web_port=port, var_dir=str(tmp_path))


async def rows(page: Page) -> list[tuple[str, str]]:
    """(case, state) of each row of the list as shown."""
    out = await page.locator("#cases-table tbody tr").evaluate_all(
        "trs => trs.map(t => [t.dataset.case, t.dataset.state])")
    return [(str(a), str(b)) for a, b in out]


async def test_a_case_from_open_to_close_in_the_hmi(browser: Browser, site: Site  # noqa: F811
                                                    ) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 900},
                                        locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(site.url + "#/cases")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    await expect(page.locator('#nav a[data-view="cases"]')).to_have_class("active")
    # Not logged in: the list, no forms.
    await expect(page.locator("#cases-table tbody tr")).to_have_count(2)
    await expect(page.locator("#case-open-panel")).to_be_hidden()
    await expect(page.locator("#cases-role")).to_be_visible()
    assert await rows(page) == [("1", "open"), ("2", "overdue")]
    first = page.locator('#cases-table tr[data-case="1"]')
    await expect(first.locator('[data-field="opened_by"]')).to_have_text("system")
    await expect(first.locator('[data-field="cause"]')).to_have_text(
        "alarm s1_rate alarm: source S1 co2_kg 5200 (limit 5000); S1 CO2 rate high")
    # plant time (UTC+8): the alarm at 08:30Z is 16:30
    await expect(first.locator('[data-field="subject"]')).to_contain_text(
        "s1_rate 2026-03-01 16:30:00")

    # the filters: overdue only; alarms only; opened by people (none yet)
    await page.locator("#cases-state").select_option("overdue")
    await expect(page.locator("#cases-table tbody tr")).to_have_count(1)
    assert await rows(page) == [("2", "overdue")]
    await page.locator("#cases-state").select_option("")
    await page.locator("#cases-kind").select_option("alarm")
    await expect(page.locator("#cases-table tbody tr")).to_have_count(1)
    assert await rows(page) == [("1", "open")]
    await page.locator("#cases-kind").select_option("")
    await page.locator("#cases-by").select_option("people")
    await expect(page.locator("#cases-table tbody tr")).to_have_count(0)
    await page.locator("#cases-by").select_option("")

    # --- an operator opens a case on S1's stored 08:00 hour (16:00 plant time)
    await log_in(page, "operator", "demo-operator")
    await expect(page.locator("#case-open-panel")).to_be_visible()
    await page.locator("#case-subject-kind").select_option("period")
    await page.locator("#case-period-table").select_option("source_hour")
    await page.locator("#case-period-id").fill("S1")
    await page.locator("#case-period-t").fill("2026-03-01T16:00:00")
    await page.locator("#case-title").fill("S1 16:00 substituted")
    await page.locator("#case-cause").fill("analyser drift suspected")
    due = await page.locator("#case-due").input_value()
    assert due, "the due time has a default"
    await page.locator("#case-due").fill("2026-03-08T18:00")  # plant time: 10:00Z
    await page.locator("#case-open-submit").click()
    await expect(page.locator("#case-open-msg")).to_have_text("已登记 opened #3")
    await expect(page.locator("#case-detail-panel")).to_be_visible()
    history = page.locator("#case-history-table tbody tr")
    await expect(history).to_have_count(1)
    await expect(page.locator("#cases-table tbody tr")).to_have_count(3)
    await expect(page.locator('#case-figures [data-field="due"]')).to_have_text(
        "2026-03-08 18:00:00")
    # an operator records actions; the review and the close are the engineer's
    step = page.locator("#case-step-event")
    await expect(page.locator("#case-step-form")).to_be_visible()
    assert await step.locator("option:not([disabled])").evaluate_all(
        "os => os.map(o => o.value)") == ["action"]
    await page.locator("#case-step-note").fill("span check re-run; analyser re-spanned")
    await page.locator("#case-step-cause").fill("CO2 analyser drift")
    await page.locator("#case-step-submit").click()
    await expect(page.locator("#case-step-msg")).to_have_text("已记录 recorded: 处理措施 action")
    await expect(history).to_have_count(2)
    await expect(history.nth(1).locator('[data-field="detail"]')).to_have_text(
        "说明 note: span check re-run; analyser re-spanned · 原因 cause: CO2 analyser drift")
    await expect(page.locator('#case-figures [data-field="cause"]')).to_have_text(
        "CO2 analyser drift")

    # --- an engineer: closing before a review is refused with the server's reason
    await page.locator("#logout").click()
    await log_in(page, "engineer", "demo-engineer")
    await page.locator("#case-detail-close").click()
    await expect(page.locator("#case-detail-panel")).to_be_hidden()
    await page.locator('#cases-table button[data-open="3"]').click()
    await expect(page.locator("#case-detail-panel")).to_be_visible()
    await expect(page.locator("#case-detail-id")).to_have_text("#3 S1 16:00 substituted")
    assert await step.locator("option:not([disabled])").evaluate_all(
        "os => os.map(o => o.value)") == ["action", "assign", "review", "close"]
    await step.select_option("close")
    await expect(page.locator("#case-step-cause")).to_be_hidden()
    await page.locator("#case-step-note").fill("done")
    await page.locator("#case-step-submit").click()
    await expect(page.locator("#case-step-msg")).to_contain_text(
        "case 3 close: review: the case has no review")
    await expect(page.locator("#case-step-msg")).to_have_class("status bad")
    await step.select_option("review")
    await page.locator("#case-step-finding").select_option("accepted")
    await page.locator("#case-step-submit").click()
    await expect(history).to_have_count(3)
    await step.select_option("close")
    await page.locator("#case-step-note").fill("substitute stands; analyser re-spanned")
    await page.locator("#case-step-submit").click()
    await expect(history).to_have_count(4)
    await expect(page.locator('#case-figures [data-field="state"]')).to_have_text(
        "已关闭closed")
    # closed: only a reopen is offered
    assert await step.locator("option:not([disabled])").evaluate_all(
        "os => os.map(o => o.value)") == ["reopen"]

    # --- the list and the API agree
    await expect(page.locator('#cases-table tr[data-case="3"]')).to_have_attribute(
        "data-state", "closed")
    for state in ("", "open", "overdue", "closed"):
        await page.locator("#cases-state").select_option(state)
        api = await site.get(f"cases?state={state}" if state else "cases")
        want = [(str(c["id"]), "overdue" if c["overdue"] else c["state"]) for c in api]
        await expect(page.locator("#cases-table tbody tr")).to_have_count(len(want))
        assert await rows(page) == want, state
    assert [c["id"] for c in await site.get("cases?state=closed")] == [3]
    case = await site.get("cases/3")
    assert [(e["event"], e["user"]) for e in case["history"]] == [
        ("open", "operator"), ("action", "operator"), ("review", "engineer"),
        ("close", "engineer")]
    assert case["subject"]["ref"] == "source_hour:S1:2026-03-01T08:00:00+00:00"
    assert case["due"] == "2026-03-08T10:00:00+00:00"
    assert case["cause"] == "CO2 analyser drift"
    shown = await history.evaluate_all(
        "trs => trs.map(t => [t.dataset.event, t.querySelector('[data-field=user]').textContent])")
    assert [tuple(x) for x in shown] == [(e["event"], e["user"]) for e in case["history"]]

    await page.locator("#cases-state").select_option("")
    await no_sideways_scroll(page, "the cases view")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "cases-1600x900.png"), full_page=True)
    assert errors == []
    await context.close()
