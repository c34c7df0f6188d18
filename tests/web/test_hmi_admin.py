"""The HMI's administration view in headless Chromium (issue 14, view 7): an admin adding,
changing and removing accounts from the page, a viewer without the view, an engineer
editing an alarm rule, and the audit table showing what the API answers. A real web sink on
loopback with the real user store, audit log and alarm sink; screenshots go to
var/screenshots/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from server.config import parse_config
from tests.fixtures.plant import plant_dict
from tests.web.test_auth import S1_RATE
from tests.web.test_hmi import (
    ControlRoom,
    browser,  # noqa: F401  (the fixture)
    log_in,
)

SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
PLANT_TZ = ZoneInfo("Asia/Shanghai")
U1_KG = {"id": "u1_kg", "name": "U1 CO2", "target": {"unit": "U1", "field": "co2_kg"},
         "warning": 9000.0, "alarm": 10000.0}


class Room(ControlRoom):
    """The control room with two rules (a source's and a unit's) to administer."""

    def __init__(self, port: int, tmp_path: Path) -> None:
        d = plant_dict(web_port=port)
        d["alarms"] = {"rules": [dict(S1_RATE), dict(U1_KG)], "channels": []}
        super().__init__(port, tmp_path, parse_config(d, "test_hmi_admin"))

    async def api(self, role: str, path: str) -> Any:
        """GET path as a fresh session of the demo account of `role`."""
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as c:
            async with c.post(f"{self.url}api/v1/login",
                              json={"user": role, "password": f"demo-{role}"}) as r:
                assert r.status == 200
            async with c.get(f"{self.url}{path.lstrip('/')}") as r:
                assert r.status == 200, await r.text()
                return await r.json()


@pytest.fixture
async def room(port: int, tmp_path: Path) -> AsyncIterator[Room]:
    async with Room(port, tmp_path) as r:
        yield r


async def _page(browser: Browser, width: int = 1600, height: int = 900) -> Page:  # noqa: F811
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def _admin_view(browser: Browser, room: Room, user: str, password: str,  # noqa: F811
                      width: int = 1600, height: int = 900) -> Page:
    page = await _page(browser, width, height)
    await page.goto(room.url + "#/admin")
    await log_in(page, user, password)
    return page


async def test_admin_adds_a_user_who_can_then_log_in(browser: Browser,  # noqa: F811
                                                      room: Room) -> None:
    page = await _admin_view(browser, room, "admin", "demo-admin")
    await expect(page.locator('#nav a[data-view="admin"]')).to_be_visible()
    rows = page.locator("#users-table tbody tr")
    await expect(rows).to_have_count(4)
    # Their own row: no role change, no removal (the server refuses them too).
    me = page.locator('#users-table tr[data-user="admin"]')
    await expect(me.locator('button[data-action="role"]')).to_be_disabled()
    await expect(me.locator('button[data-action="remove"]')).to_be_disabled()

    # A short password: the server's message, and no account.
    await page.locator("#user-add-name").fill("li.wei")
    await page.locator("#user-add-role").select_option("operator")
    await page.locator("#user-add-password").evaluate("(n) => n.removeAttribute('minlength')")
    await page.locator("#user-add-password").fill("short")
    await page.locator("#user-add").click()
    await expect(page.locator("#users-status")).to_have_text(
        "user 'li.wei': a password needs at least 8 characters")
    await expect(page.locator("#users-status")).to_have_class("status bad")
    assert room.users.get("li.wei") is None

    await page.locator("#user-add-password").fill("s3cret-pass")
    await page.locator("#user-add").click()
    row = page.locator('#users-table tr[data-user="li.wei"]')
    await expect(row.locator('[data-field="role"]')).to_have_text("操作员operator")
    listed = await room.api("admin", "/api/v1/users")
    assert [(u["name"], u["role"]) for u in listed if u["name"] == "li.wei"] == [
        ("li.wei", "operator")]
    li = next(u for u in listed if u["name"] == "li.wei")
    created = datetime.fromisoformat(li["created"]).astimezone(PLANT_TZ)
    await expect(row.locator('[data-field="created"]')).to_have_text(
        created.strftime("%Y-%m-%d %H:%M:%S"))

    # The new account logs in from another browser.
    other = await _page(browser)
    await other.goto(room.url)
    await log_in(other, "li.wei", "s3cret-pass")
    await expect(other.locator("#session-role")).to_have_text("操作员operator")
    await expect(other.locator('#nav a[data-view="admin"]')).to_be_hidden()

    # Promoted to engineer after a confirmation; then removed after one.
    await row.locator('button[data-action="role"]').click()
    form = page.locator('#users-table tr.form-row[data-user="li.wei"] form')
    await form.locator('select[name="role"]').select_option("engineer")
    assert room.users.get("li.wei").role == "operator"  # type: ignore[union-attr]  # not yet
    await form.locator('button[type="submit"]').click()
    await expect(row.locator('[data-field="role"]')).to_have_text("工程师engineer")
    assert room.users.get("li.wei").role == "engineer"  # type: ignore[union-attr]
    await row.locator('button[data-action="remove"]').click()
    await expect(form.locator(".confirm.zh")).to_have_text("删除用户 li.wei？")
    await form.locator('button[type="submit"]').click()
    await expect(row).to_have_count(0)
    assert room.users.get("li.wei") is None
    assert [(e.user, e.action, e.target) for e in room.audit.entries()
            if e.action.startswith("user_")] == [
        ("admin", "user_add", "user:li.wei"), ("admin", "user_role", "user:li.wei"),
        ("admin", "user_remove", "user:li.wei")]
    assert page.errors == [] and other.errors == []  # type: ignore[attr-defined]


async def test_viewer_and_engineer_see_what_their_role_may(browser: Browser,  # noqa: F811
                                                           room: Room) -> None:
    viewer = await _admin_view(browser, room, "viewer", "demo-viewer")
    await expect(viewer.locator('#nav a[data-view="admin"]')).to_be_hidden()
    await expect(viewer.locator("#admin-denied")).to_be_visible()
    for section in ("#admin-users", "#admin-rules", "#admin-audit"):
        await expect(viewer.locator(section)).to_be_hidden()
    await expect(viewer.locator("#view-admin button:visible")).to_have_count(0)

    engineer = await _admin_view(browser, room, "engineer", "demo-engineer")
    await expect(engineer.locator('#nav a[data-view="admin"]')).to_be_visible()
    await expect(engineer.locator("#admin-denied")).to_be_hidden()
    await expect(engineer.locator("#admin-users")).to_be_hidden()
    await expect(engineer.locator("#admin-rules")).to_be_visible()
    await expect(engineer.locator("#admin-audit")).to_be_visible()
    await expect(engineer.locator("#rules-table tbody tr")).to_have_count(2)

    # Logging out in the open view hides it all again.
    await engineer.locator("#logout").click()
    await expect(engineer.locator("#admin-denied")).to_be_visible()
    await expect(engineer.locator("#admin-rules")).to_be_hidden()
    await expect(engineer.locator('#nav a[data-view="admin"]')).to_be_hidden()


async def test_rule_edited_from_the_page_is_what_the_api_answers(
        browser: Browser, room: Room) -> None:  # noqa: F811
    page = await _admin_view(browser, room, "engineer", "demo-engineer")
    row = page.locator('#rules-table tr[data-rule="s1_rate"]')
    await expect(row.locator('[data-field="warning"]')).to_have_text("4,000 kg")
    await expect(row.locator('[data-field="alarm"]')).to_have_text("5,000 kg")
    await expect(row.locator('[data-field="target"]')).to_contain_text("本分钟排放")

    # An alarm level below the warning level: the server's message, nothing changed.
    await row.locator('button[data-action="edit"]').click()
    await expect(page.locator("#rule-warning-unit")).to_have_text("kg")
    await page.locator("#rule-alarm").fill("3900")
    await page.locator("#rule-comment").fill("试错")
    await page.locator("#rule-save").click()
    await expect(page.locator("#rule-error")).to_contain_text(
        "alarm rules not changed: alarms.rules[0]")
    await expect(page.locator("#rule-error")).to_contain_text("'alarm' level must be beyond")
    rules = await room.api("viewer", "/api/v1/alarm-rules")
    assert (rules[0]["warning"], rules[0]["alarm"]) == (4000.0, 5000.0)

    await page.locator("#rule-warning").fill("4200")
    await page.locator("#rule-alarm").fill("5500")
    await page.locator("#rule-name").fill("S1 每分钟排放")
    await page.locator("#rule-comment").fill("负荷调整后放宽")
    await page.locator("#rule-save").click()
    await expect(page.locator("#rule-form")).to_be_hidden()
    await expect(row.locator('[data-field="warning"]')).to_have_text("4,200 kg")
    await expect(row.locator('[data-field="alarm"]')).to_have_text("5,500 kg")
    rules = await room.api("viewer", "/api/v1/alarm-rules")
    s1 = next(r for r in rules if r["id"] == "s1_rate")
    assert (s1["warning"], s1["alarm"], s1["name"]) == (4200.0, 5500.0, "S1 每分钟排放")
    assert (s1["target"]["source"], s1["target"]["field"]) == ("S1", "co2_kg")

    # A new rule without levels: refused with the server's reason; then deleted ones go.
    await page.locator("#rule-new").click()
    await page.locator("#rule-json").fill(
        '{"id": "u1_today", "target": {"unit": "U1", "field": "co2_today_t"}}')
    await page.locator("#rule-comment").fill("新规则")
    await page.locator("#rule-save").click()
    await expect(page.locator("#rule-error")).to_contain_text("give 'warning', 'alarm' or both")
    await page.locator("#rule-warning").fill("80")
    await page.locator("#rule-save").click()
    await expect(page.locator('#rules-table tr[data-rule="u1_today"] [data-field="warning"]')
                 ).to_have_text("80 t")
    u1 = page.locator('#rules-table tr[data-rule="u1_kg"]')
    await u1.locator('button[data-action="delete"]').click()
    await page.locator('#rules-table tr.form-row input[name="comment"]').fill("不再需要")
    await page.locator('#rules-table tr.form-row button[type="submit"]').click()
    await expect(u1).to_have_count(0)
    ids = [r["id"] for r in await room.api("viewer", "/api/v1/alarm-rules")]
    assert ids == ["s1_rate", "u1_today"]
    assert page.errors == []  # type: ignore[attr-defined]


async def _check_audit_table(page: Page, entries: list[dict[str, Any]]) -> None:
    rows = page.locator("#audit-table tbody tr")
    await expect(rows).to_have_count(len(entries))
    got = await rows.evaluate_all("""(rs) => rs.map((r) => [Number(r.dataset.seq),
        r.querySelector('[data-field=t]').textContent,
        r.querySelector('[data-field=user]').textContent, r.dataset.action,
        r.querySelector('[data-field=target]').textContent])""")
    want = [[e["seq"], datetime.fromisoformat(e["t"]).astimezone(PLANT_TZ)
             .strftime("%Y-%m-%d %H:%M:%S"), e["user"], e["action"], e["target"]]
            for e in reversed(entries)]
    assert got == want


async def test_audit_table_shows_what_the_api_answers(browser: Browser,  # noqa: F811
                                                      room: Room) -> None:
    room.audit.append("system", "config_changed", "site:test", {"sha256": "ab12"})
    page = await _admin_view(browser, room, "admin", "demo-admin")
    await expect(page.locator("#users-table tbody tr")).to_have_count(4)
    await page.locator("#user-add-name").fill("wang")
    await page.locator("#user-add-password").fill("wang-pass-1")
    await page.locator("#user-add").click()
    await expect(page.locator('#users-table tr[data-user="wang"]')).to_have_count(1)

    await page.locator("#audit-load").click()
    # The API asked for the range the page shows (last day to an hour ahead, plant time).
    lo, hi = [datetime.fromisoformat(await page.locator(box).input_value())
              .replace(tzinfo=PLANT_TZ).isoformat()
              for box in ("#audit-from", "#audit-to")]
    q = f"from={quote(lo)}&to={quote(hi)}"
    entries = await room.api("engineer", f"/api/v1/audit?{q}")
    entries = [e for e in entries if e["user"] != "engineer"]  # our API login came after
    assert [(e["user"], e["action"]) for e in entries] == [
        ("system", "config_changed"), ("admin", "login"), ("admin", "user_add")]
    await _check_audit_table(page, entries)
    await expect(page.locator('#audit-table tr[data-action="user_add"] [data-field="detail"]')
                 ).to_have_text("role: viewer")
    await expect(page.locator('#audit-table tr[data-action="user_add"] [data-field="action"]')
                 ).to_have_text("添加用户user added")
    await expect(page.locator("#audit-chain")).to_have_attribute("data-chain", "linked")
    await expect(page.locator("#audit-chain")).to_contain_text("首尾相接")

    # Filters: by user, then by action.
    await page.locator("#audit-user").select_option("admin")
    await _check_audit_table(page, [e for e in entries if e["user"] == "admin"])
    await page.locator("#audit-action").select_option("user_add")
    await _check_audit_table(page, [e for e in entries if e["action"] == "user_add"])
    await page.locator("#audit-user").select_option("")
    await page.locator("#audit-action").select_option("")
    # A range from the page's from/to fields, read as plant local time.
    first = datetime.fromisoformat(entries[0]["t"]).astimezone(PLANT_TZ)
    await page.locator("#audit-from").fill((first - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    await page.locator("#audit-to").fill(first.strftime("%Y-%m-%dT%H:%M"))
    await page.locator("#audit-load").click()
    await expect(page.locator("#audit-table tbody tr")).to_have_count(0)
    await expect(page.locator("#audit-status")).to_contain_text("该时段无记录")
    assert page.errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (768, 1024)])
async def test_admin_view_fits_and_is_saved(browser: Browser, room: Room,  # noqa: F811
                                            width: int, height: int) -> None:
    page = await _admin_view(browser, room, "admin", "demo-admin", width, height)
    await expect(page.locator("#users-table tbody tr")).to_have_count(4)
    await expect(page.locator("#rules-table tbody tr")).to_have_count(2)
    await page.locator('#users-table tr[data-user="operator"] button[data-action="role"]').click()
    await page.locator('#rules-table tr[data-rule="s1_rate"] button[data-action="edit"]').click()
    await page.locator("#audit-load").click()
    await expect(page.locator("#audit-table tbody tr")).to_have_count(1)  # the login
    await expect(page.locator('#rules-table tr[data-rule="u1_kg"] [data-field="target"]')
                 ).to_have_text("1号机组 本分钟排放Unit 1 CO₂ per minute")
    await page.evaluate("window.scrollTo(0, 0)")  # opening the rule form scrolled to it
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"admin-{width}x{height}.png"), full_page=True)
    scroll, client = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"admin view at {width} px scrolls sideways: {scroll} > {client}"


class ProductRoom(ControlRoom):
    """The control room of a plant whose unit makes a product (t/h): its intensity rules
    are in t CO2/t, one against a benchmark, one with absolute levels."""

    def __init__(self, port: int, tmp_path: Path) -> None:
        d = plant_dict(web_port=port)
        d["units"][0]["output"] = {"rate_t_h": {"value": 150.0}}
        d["alarms"] = {"rules": [
            {"id": "u1_bench", "kind": "intensity", "scope": {"unit": "U1"}, "window": "day",
             "benchmark_t_t": 1.052, "warning_pct": 100.0, "alarm_pct": 110.0},
            {"id": "u1_abs", "kind": "intensity", "scope": {"unit": "U1"}, "window": "hour",
             "warning": 1.1, "alarm": 1.2}], "channels": []}
        super().__init__(port, tmp_path, parse_config(d, "test_hmi_admin"))


async def test_a_product_units_intensity_rules_show_t_per_t(
        browser: Browser, port: int, tmp_path: Path) -> None:  # noqa: F811
    async with ProductRoom(port, tmp_path) as room:
        page = await _page(browser)
        await page.goto(room.url + "#/admin")
        await log_in(page, "engineer", "demo-engineer")
        bench = page.locator('#rules-table tr[data-rule="u1_bench"]')
        await expect(bench.locator('[data-field="warning"]')).to_contain_text("% × 1.052 t/t")
        absolute = page.locator('#rules-table tr[data-rule="u1_abs"]')
        await expect(absolute.locator('[data-field="alarm"]')).to_contain_text("t/t")
        await expect(absolute.locator('[data-field="alarm"]')).not_to_contain_text("MWh")
        assert page.errors == []  # type: ignore[attr-defined]
