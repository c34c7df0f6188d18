"""The HMI's records view in headless Chromium (issue 15): an engineer entering lab factors,
importing a CSV (a bad line refused with the line named), correcting an hour (without a
reason refused, with one kept beside the original in the value history), entering a periodic
comparison test (HJ 75-2017 relative accuracy; a bad pasted line named); an admin entering
a CEMS span check and locking and unlocking a period; a viewer seeing the lists and no forms.

A real server (server/runtime.py: simulated CEMS, historian, record keeper, web sink) on
loopback with hours of 30 s (0.5 s minutes), the plant of tests/server/test_records.py.
Screenshots of the view go to var/screenshots/records-<w>x<h>.png.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from model.flags import DataFlag
from server.config import parse_plant
from server.runtime import Runtime
from tests.compute.test_qa import CEMS, RM
from tests.conftest import free_port
from tests.server.test_records import plant, stored_hours, wait_hours
from tests.web.test_hmi import (
    browser,  # noqa: F401  (the fixture)
    log_in,
)

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Runtime]:
    d = plant(tmp_path)
    d["web"] = {"enabled": True, "host": "127.0.0.1", "port": free_port(), "demo_users": True}
    rt = Runtime(parse_plant(d, "test_hmi_records"))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


def url(rt: Runtime) -> str:
    return f"http://127.0.0.1:{rt.config.web.port}/"


def local(rt: Runtime, t: datetime) -> str:
    """t as the plant-local text a datetime-local input with seconds takes."""
    return t.astimezone(ZoneInfo(rt.config.site.timezone)).strftime("%Y-%m-%dT%H:%M:%S")


def shown(rt: Runtime, t: datetime) -> str:
    """t as the page shows it: plant local time."""
    return t.astimezone(ZoneInfo(rt.config.site.timezone)).strftime("%Y-%m-%d %H:%M:%S")


async def _records(browser: Browser, rt: Runtime, user: str,  # noqa: F811
                   width: int = 1920, height: int = 1080) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(url(rt) + "#/records")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    await log_in(page, user, f"demo-{user}")
    await expect(page.locator('#nav a[data-view="records"]')).to_have_class("active")
    return page


async def api_get(rt: Runtime, path: str) -> Any:
    """GET path as a fresh viewer session."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as c:
        async with c.post(f"{url(rt)}api/v1/login",
                          json={"user": "viewer", "password": "demo-viewer"}) as r:
            assert r.status == 200
        async with c.get(f"{url(rt)}{path.lstrip('/')}") as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def no_sideways_scroll(page: Page, what: str) -> None:
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"{what} scrolls sideways: {scroll} > {client}"


async def test_engineer_enters_lab_data_imports_csv_and_corrects_an_hour(
        browser: Browser, server: Runtime, tmp_path: Path) -> None:  # noqa: F811
    rt = server
    # two hours: the first (maybe partial) for the lab entry, the second whole one for the
    # correction and the CSV's quantity (a third would cost the suite 30 s more)
    hours = await wait_hours(rt, 2, 120.0)
    assert len(hours) >= 2, "the server closed fewer than 2 hours in 120 s"
    page = await _records(browser, rt, "engineer")
    await expect(page.locator("#rec-entry-forms")).to_be_visible()
    await expect(page.locator("#records-role")).to_be_hidden()
    await expect(page.locator("#rec-lock-form")).to_be_hidden()  # admins only
    await expect(page.locator("#rec-entry-panel .rec-tz")).to_have_text("Asia/Shanghai")

    # --- a correction of hour 1's CO2 (a whole hour: the first may be partial)
    target = hours[1]
    s1 = target.sources[0]
    assert s1.valid and s1.flag is DataFlag.N
    await page.locator("#rec-corr-target").select_option("source:S1")
    await page.locator("#rec-corr-level").select_option("hour")
    await page.locator("#rec-corr-t").fill(local(rt, target.t))
    await page.locator("#rec-history-load").click()
    history = page.locator("#rec-history-table tbody tr")
    await expect(history).to_have_count(1)  # as calculated, no correction yet
    await page.locator("#rec-corr-field").select_option("co2_t")
    await expect(page.locator("#rec-corr-unit")).to_have_text("t")
    await page.locator("#rec-corr-value").fill(repr(s1.co2_t + 10.0))
    await page.locator("#rec-corr-submit").click()  # no reason: the server refuses it
    msg = page.locator("#rec-corr-msg")
    await expect(msg).to_contain_text(
        "entry: correction.reason: String should have at least 1 character")
    await expect(msg).to_have_class("status bad")
    assert rt.records.entries("correction") == []

    reason = "分析仪漂移，月度检查发现 / analyser drift found at the monthly check"
    await page.locator("#rec-corr-reason").fill(reason)
    await page.locator("#rec-corr-doc").fill("QA-2026-12-07")
    await page.locator("#rec-corr-submit").click()
    await expect(msg).to_contain_text("已记录 entered #1")
    await expect(msg).to_have_class("status")
    await expect(history).to_have_count(2)
    original, current = history.nth(0), history.nth(1)
    await expect(original.locator('[data-field="co2_t"]')).to_have_text(f"{s1.co2_t:,.3f}")
    await expect(original.locator('[data-field="flag"]')).to_have_text("N")
    await expect(original.locator('[data-field="user"]')).to_have_text("计算 calculated")
    await expect(current.locator('[data-field="co2_t"]')).to_have_text(
        f"{s1.co2_t + 10.0:,.3f}")
    await expect(current.locator('[data-field="flag"]')).to_have_text("S")
    await expect(current.locator('[data-field="user"]')).to_have_text("engineer")
    await expect(current.locator('[data-field="reason"]')).to_have_text(reason)
    (fix,) = rt.records.entries("correction")
    await expect(current.locator('[data-field="entered"]')).to_have_text(
        shown(rt, datetime.fromisoformat(fix["entered"])))
    assert (fix["user"], fix["target"], fix["level"], fix["fields"], fix["reason"]) == (
        "engineer", "source:S1", "hour", {"co2_t": s1.co2_t + 10.0}, reason)
    assert datetime.fromisoformat(fix["t"]) == target.t
    # What the API keeps: the original row and the corrected one.
    kept = await rt.records.history("source_hour", "S1", target.t)
    (orig,) = kept["versions"]
    assert orig["row"]["co2_t"] == s1.co2_t and orig["row"]["flag"] == "N"
    assert kept["current"]["co2_t"] == s1.co2_t + 10.0 and kept["current"]["flag"] == "S"

    # --- a lab entry: the coal's NCV and carbon content, in force from the first hour
    await page.locator("#rec-factor-set").fill("demo_coal")
    await page.locator("#rec-factor-from").fill(local(rt, hours[0].t))
    await page.locator("#rec-factor-ncv_gj_t").fill("18.5")
    await page.locator("#rec-factor-cc_tc_gj").fill("0.0290")
    await page.locator("#rec-factor-doc").fill("LAB-2026-12-001")
    await page.locator("#rec-factor-submit").click()
    await expect(page.locator("#rec-factor-msg")).to_contain_text("已记录 entered #2")
    row = page.locator('#rec-entries-table tr[data-entry="2"]')
    await expect(row.locator('[data-field="target"]')).to_have_text("demo_coal@lab2")
    await expect(row.locator('[data-field="values"]')).to_have_text(
        "cc_tc_gj = 0.029, ncv_gj_t = 18.5")  # as the ledger keeps them
    await expect(row.locator('[data-field="document"]')).to_have_text("LAB-2026-12-001")
    await expect(row.locator('[data-field="t"]')).to_have_text(shown(rt, hours[0].t))
    (lab,) = [e for e in await api_get(rt, "/api/v1/entries?kind=factor")]
    assert (lab["user"], lab["target"], lab["fields"], lab["document"]) == (
        "engineer", "demo_coal", {"ncv_gj_t": 18.5, "cc_tc_gj": 0.029}, "LAB-2026-12-001")
    assert datetime.fromisoformat(lab["t"]) == hours[0].t
    for h in (await stored_hours(rt))[:3]:
        coal = h.streams[0]
        assert coal.factor_version == "demo_coal@lab2"
        # quantity · 18.5 GJ/t · 0.0290 tC/GJ · 0.99 (OF of the version before) · 44/12
        assert coal.co2_t == pytest.approx(coal.quantity * 18.5 * 0.0290 * 0.99 * 44.0 / 12.0,
                                           rel=1e-12)

    # --- a CSV with a bad third line: refused, the line named, nothing entered
    bad = tmp_path / "bad.csv"
    t2 = hours[1].t.isoformat()
    bad.write_text("kind,target,level,t,name,value,unit,document,reason\n"
                   f"quantity,stream:U1_coal,hour,{t2},,101.5,t,WB-7,\n"
                   f"factor,demo_coal,,{t2},ncv_gj_t,abc,GJ/t,LAB-2,\n", encoding="utf-8")
    await page.locator("#rec-csv-file").set_input_files(str(bad))
    await page.locator("#rec-csv-submit").click()
    csv_msg = page.locator("#rec-csv-msg")
    await expect(csv_msg).to_have_text(
        "导入被拒绝 import refused: line 3: value 'abc' is not a number")
    await expect(csv_msg).to_have_class("status bad")
    assert len(rt.records.entries()) == 2
    good = tmp_path / "good.csv"
    good.write_text(bad.read_text(encoding="utf-8").replace("abc", "18.9"), encoding="utf-8")
    await page.locator("#rec-csv-file").set_input_files(str(good))
    await page.locator("#rec-csv-submit").click()
    await expect(csv_msg).to_have_text("已导入 imported 2 条记录 entries")
    quantity, factor = rt.records.entries()[2:]
    assert (quantity["kind"], quantity["target"], quantity["fields"], quantity["unit"]) == (
        "quantity", "stream:U1_coal", {"quantity": 101.5}, "t")
    assert (factor["kind"], factor["fields"], factor["document"]) == (
        "factor", {"ncv_gj_t": 18.9}, "LAB-2")
    await expect(page.locator("#rec-entries-count")).to_have_text("4")
    stored = {h.t: h for h in await stored_hours(rt)}[hours[1].t].streams[0]
    assert stored.quantity == 101.5 and stored.flag is DataFlag.S

    # --- a comparison test: the nine pairs of tests/compute/test_qa.py, pasted as a sheet
    # gives them (tabs) and typed (commas, spaces). RA = (|d̄| + |cc|) / RM̄ = (0.155556 +
    # 0.109458) / 10.444444 = 2.5374 % ≤ 15 %: pass; RM̄ 10.444, CEMS̄ 10.289.
    ra_t = datetime.now(UTC).replace(microsecond=0)
    await page.locator("#rec-ra-source").select_option("S1")
    await page.locator("#rec-ra-t").fill(local(rt, ra_t))
    await page.locator("#rec-ra-parameter").select_option("flow")
    await expect(page.locator("#rec-ra-unit")).to_have_value("m/s")
    await page.locator("#rec-ra-parameter").select_option("co2")
    await expect(page.locator("#rec-ra-unit")).to_have_value("%")
    await page.locator("#rec-ra-doc").fill("CMP-2026-Q4")
    seps = ["\t", ", ", " ", ",", "\t", "，", ";", "  ", ","]
    lines = [f"{r}{sep}{c}" for r, c, sep in zip(RM, CEMS, seps, strict=True)]
    # line 3 has one number: the page names it and sends nothing
    broken = [*lines[:2], "10.1", *lines[3:]]
    await page.locator("#rec-ra-pairs").fill("\n".join(broken))
    await page.locator("#rec-ra-submit").click()
    ra_msg = page.locator("#rec-ra-msg")
    await expect(ra_msg).to_have_text(
        '第 3 行 line 3 "10.1": 应为两个数（参比值, CEMS 值），得到 1 个 '
        "expected two numbers (reference, CEMS), got 1")
    await expect(ra_msg).to_have_class("status bad")
    await page.locator("#rec-ra-pairs").fill("10.2, 10.0\n10.5, abc")
    await page.locator("#rec-ra-submit").click()
    await expect(ra_msg).to_have_text('第 2 行 line 2 "10.5, abc": "abc" 不是数字 is not a number')
    # one pair passes the page: the server's 400 message is shown
    await page.locator("#rec-ra-pairs").fill("10.2, 10.0\n")
    await page.locator("#rec-ra-submit").click()
    await expect(ra_msg).to_contain_text("ra_test.reference: List should have at least 2 items")
    await expect(ra_msg).to_have_class("status bad")
    assert rt.records.entries("ra_test") == []
    assert len(rt.records.entries()) == 4

    await page.locator("#rec-ra-pairs").fill("\n".join(lines) + "\n\n")
    await page.locator("#rec-ra-submit").click()
    await expect(ra_msg).to_contain_text("已记录 entered #5")
    await expect(ra_msg).to_have_class("status")
    await expect(page.locator("#rec-ra-count")).to_have_text("1")
    ra_row = page.locator('#rec-ra-table tr[data-entry="5"]')
    await expect(ra_row.locator('[data-field="t"]')).to_have_text(shown(rt, ra_t))
    await expect(ra_row.locator('[data-field="source"]')).to_have_text("S1")
    await expect(ra_row.locator('[data-field="n"]')).to_have_text("9")
    await expect(ra_row.locator('[data-field="mean_reference"]')).to_have_text("10.444 %")
    await expect(ra_row.locator('[data-field="mean_cems"]')).to_have_text("10.289 %")
    await expect(ra_row.locator('[data-field="accuracy"]')).to_have_text("RA 2.54")
    await expect(ra_row.locator('[data-field="limit"]')).to_have_text("≤ 15.0")
    await expect(ra_row.locator('[data-field="passed"]')).to_have_text("合格pass")
    await expect(ra_row.locator('[data-field="document"]')).to_have_text("CMP-2026-Q4")
    (ra,) = (await api_get(rt, "/api/v1/qa"))["comparison_tests"]
    assert (ra["kind"], ra["target"], ra["unit"], ra["document"], ra["user"]) == (
        "ra_test", "S1", "%", "CMP-2026-Q4", "engineer")
    assert ra["fields"] == {"parameter": "co2", "reference": list(RM), "cems": list(CEMS)}
    assert datetime.fromisoformat(ra["t"]) == ra_t
    res = ra["result"]
    assert res["n"] == 9 and res["passed"] is True and res["ra_limit_pct"] == 15.0
    assert res["ra_pct"] == pytest.approx(2.5374, abs=1e-4)
    assert res["re_pct"] == pytest.approx(-1.4894, abs=1e-4)
    assert res["mean_reference"] == pytest.approx(10.444444, abs=1e-6)
    assert res["mean_cems"] == pytest.approx(10.288889, abs=1e-6)

    SHOTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((1920, 1080), (768, 1024)):
        await page.set_viewport_size({"width": width, "height": height})
        await asyncio.sleep(0.2)
        await no_sideways_scroll(page, f"records at {width} px")
        await page.screenshot(path=str(SHOTS / f"records-{width}x{height}.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_admin_checks_and_locks_and_a_viewer_sees_no_forms(
        browser: Browser, server: Runtime) -> None:  # noqa: F811
    rt = server
    page = await _records(browser, rt, "admin")
    await expect(page.locator("#rec-lock-form")).to_be_visible()

    # A span check: (10.6 − 10.0) / 20 = 3.0 % F.S., past the 2.5 % requirement and within
    # the 10 % out-of-control limit of HJ 75-2017 (compute/qa.py): adjust.
    now = datetime.now(UTC).replace(microsecond=0)
    await page.locator("#rec-qa-source").select_option("S1")
    await page.locator("#rec-qa-t").fill(local(rt, now))
    await page.locator("#rec-qa-check").select_option("span")
    await page.locator("#rec-qa-parameter").select_option("co2")
    await page.locator("#rec-qa-ref").fill("10.0")
    await page.locator("#rec-qa-measured").fill("10.6")
    await page.locator("#rec-qa-fs").fill("20")
    await page.locator("#rec-qa-submit").click()
    await expect(page.locator("#rec-qa-msg")).to_contain_text("已记录 entered #1")
    check = page.locator('#rec-qa-table tr[data-entry="1"]')
    await expect(check.locator('[data-field="drift"]')).to_have_text("3.00")
    await expect(check.locator('[data-field="status"]')).to_have_text("需校准adjust")
    (qa,) = (await api_get(rt, "/api/v1/qa"))["checks"]
    assert qa["fields"] == {"check": "span", "parameter": "co2", "reference_value": 10.0,
                            "measured_value": 10.6, "full_scale": 20.0}
    assert datetime.fromisoformat(qa["t"]) == now and qa["unit"] == "%"
    assert qa["result"]["status"] == "adjust"
    # A QA check with a full scale of 0: the server's message, no entry.
    await page.locator("#rec-qa-fs").fill("0")
    await page.locator("#rec-qa-submit").click()
    await expect(page.locator("#rec-qa-msg")).to_contain_text("full_scale = 0.0 must be > 0")
    await expect(page.locator("#rec-qa-msg")).to_have_class("status bad")

    # A lock of January 2026, listed; an unlock without a reason is refused.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await page.locator("#rec-lock-start").fill(local(rt, start))
    await page.locator("#rec-lock-end").fill(local(rt, start.replace(month=2)))
    await page.locator("#rec-lock-reason").fill("2026-01 reported")
    await page.locator("#rec-lock-submit").click()
    lock = page.locator('#rec-locks-table tr[data-lock="2"]')
    await expect(lock.locator('[data-field="start"]')).to_have_text("2026-01-01 08:00:00")
    await expect(lock.locator('[data-field="end"]')).to_have_text("2026-02-01 08:00:00")
    assert rt.records.locked_ranges() == [(start, start.replace(month=2))]
    await lock.locator("button").click()
    await expect(page.locator("#rec-lock-msg")).to_contain_text(
        "entry: unlock.reason: String should have at least 1 character")
    await expect(page.locator("#rec-lock-msg")).to_have_class("status bad")
    await lock.locator('input[name="reason"]').fill("resubmission asked by the regulator")
    await lock.locator("button").click()
    await expect(page.locator("#rec-locks-table tbody tr")).to_have_count(0)
    assert rt.records.locks() == []

    viewer = await _records(browser, rt, "viewer", 768, 1024)
    for form in ("#rec-entry-forms", "#rec-corr-edit", "#rec-lock-form", "#rec-qa-form"):
        await expect(viewer.locator(form)).to_be_hidden()
    await expect(viewer.locator("#records-role")).to_be_visible()
    await expect(viewer.locator("#rec-entries-table tbody tr")).to_have_count(3)
    await expect(viewer.locator('#rec-qa-table tr[data-entry="1"] [data-field="status"]')
                 ).to_have_text("需校准adjust")
    await expect(viewer.locator("#rec-locks-table thead th")).to_have_count(6)  # no unlock
    await expect(viewer.locator("button:visible", has_text=re.compile("提交|解锁|锁定|导入"))
                 ).to_have_count(0)
    await no_sideways_scroll(viewer, "records (viewer) at 768 px")
    assert page.errors == [] and viewer.errors == []  # type: ignore[attr-defined]
