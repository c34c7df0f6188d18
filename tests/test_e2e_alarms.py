"""End to end: alarms through the real `carbonscada run` process, across restarts.

The test plant's stack emits 196.96 t/h (calc_vectors.md) against an alarm level of
150 t/h, so rule S1_rate is in alarm from the first minute. An operator acknowledges it
through the web API, an engineer changes its levels, and the process is restarted
between the steps: states and the changed rule survive, nothing is announced twice,
and the audit log holds every action in an unbroken chain.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.audit import AuditLog
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from tests.fixtures.smtp import SmtpServer
from tests.test_e2e import CARBONSCADA, MINUTE_S, Plant, start_plant

pytestmark = pytest.mark.e2e

PASSWORDS = {"olga": "operator-pass-1", "erik": "engineer-pass-1"}


def alarm_config(tmp: Path, smtp: SmtpServer) -> dict[str, Any]:
    cfg = plant_dict(free_port(), opcua_port=free_port(), web_port=free_port(),
                     var_dir=str(tmp / "var"), minute_seconds=MINUTE_S)
    cfg["site"]["timezone"] = "UTC"
    cfg["alarms"] = {
        "rules": [{"id": "S1_rate", "target": {"source": "S1", "field": "co2_rate_t_h"},
                   "warning": 100.0, "alarm": 150.0, "notify": ["ops"]}],
        "channels": [{"id": "ops", "kind": "email", "host": smtp.host, "port": smtp.port,
                      "sender": "carbonscada@plant.example", "to": ["ops@plant.example"]}],
    }
    return cfg


def cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if password is not None:
        env["CARBONSCADA_PASSWORD"] = password
    return subprocess.run([CARBONSCADA, *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)


@asynccontextmanager
async def running(cfg: dict[str, Any], tmp: Path) -> AsyncIterator[Plant]:
    plant = await start_plant(cfg, tmp)
    try:
        await plant.wait_for_line(r"first minute", timeout=60)
        yield plant
    finally:
        assert await plant.stop() == 0
        assert "Traceback" not in "".join(plant.lines)


@asynccontextmanager
async def session(cfg: dict[str, Any], user: str) -> AsyncIterator[tuple[aiohttp.ClientSession,
                                                                          str, str]]:
    base = f"http://127.0.0.1:{cfg['web']['port']}/api/v1"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{base}/login",
                             json={"user": user, "password": PASSWORDS[user]}) as r:
            assert r.status == 200, await r.text()
            csrf = (await r.json())["csrf_token"]
        yield http, base, csrf


async def alarm_of(http: aiohttp.ClientSession, base: str, rule: str) -> dict[str, Any] | None:
    async with http.get(f"{base}/alarms") as r:
        assert r.status == 200
        return next((a for a in await r.json() if a["rule"] == rule), None)


async def test_alarm_states_and_rule_changes_survive_restarts(
        tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = alarm_config(tmp_path, smtp_server)
    cfg_path = tmp_path / "plant.yaml"
    async with running(cfg, tmp_path):
        (mail,) = await smtp_server.wait_for(1, timeout=20)
        assert "S1" in mail["Subject"] and "ALARM" in mail["Subject"]
    for user, role in (("olga", "operator"), ("erik", "engineer")):
        done = cli("user", "add", user, "--role", role, "-c", str(cfg_path),
                   password=PASSWORDS[user])
        assert done.returncode == 0, done.stderr

    # 1. The restart restores the unacknowledged alarm: listed at once, not announced again.
    async with running(cfg, tmp_path), session(cfg, "olga") as (http, base, csrf):
        alarm = await alarm_of(http, base, "S1_rate")
        assert alarm is not None
        assert (alarm["state"], alarm["ack_state"]) == ("alarm", "active-unacknowledged")
        async with http.post(f"{base}/alarms/S1_rate/acknowledge", json={"comment": "seen"},
                             headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 200, await r.text()
        alarm = await alarm_of(http, base, "S1_rate")
        assert alarm is not None and alarm["ack_state"] == "active-acknowledged"
        await asyncio.sleep(3 * MINUTE_S)
    assert len(smtp_server.messages) == 1

    # 2. The acknowledgement survives; the engineer lifts the levels above 196.96 t/h.
    async with running(cfg, tmp_path), session(cfg, "erik") as (http, base, csrf):
        alarm = await alarm_of(http, base, "S1_rate")
        assert alarm is not None
        assert (alarm["state"], alarm["ack_state"], alarm["user"]) == (
            "alarm", "active-acknowledged", "olga")
        async with http.put(f"{base}/alarm-rules/S1_rate", headers={"X-CSRF-Token": csrf},
                            json={"comment": "new permit levels", "rule": {
                                **cfg["alarms"]["rules"][0], "warning": 250.0,
                                "alarm": 300.0}}) as r:
            assert r.status == 200, await r.text()
        for _ in range(50):  # the next minute returns it to normal, which is announced
            if await alarm_of(http, base, "S1_rate") is None:
                break
            await asyncio.sleep(0.2)
        assert await alarm_of(http, base, "S1_rate") is None
        (_, back) = await smtp_server.wait_for(2, timeout=10)
        assert "NORMAL" in back["Subject"]

    # 3. The changed rule applies after a restart: nothing rises again.
    async with running(cfg, tmp_path), session(cfg, "erik") as (http, base, _csrf):
        async with http.get(f"{base}/alarm-rules") as r:
            rules = await r.json()
        assert [(x["id"], x["warning"], x["alarm"]) for x in rules] == [
            ("S1_rate", 250.0, 300.0)]
        await asyncio.sleep(3 * MINUTE_S)
        assert await alarm_of(http, base, "S1_rate") is None
    assert len(smtp_server.messages) == 2

    # 4. Editing the file's rules overrides the API's change at the next start.
    cfg["alarms"]["rules"][0]["alarm"] = 180.0
    async with running(cfg, tmp_path) as plant, session(cfg, "erik") as (http, base, _csrf):
        await plant.wait_for_line(r"file's alarm rules changed after erik changed them", 5)
        async with http.get(f"{base}/alarm-rules") as r:
            assert [x["alarm"] for x in await r.json()] == [180.0]
        (*_, again) = await smtp_server.wait_for(3, timeout=20)
        assert "ALARM" in again["Subject"]

    change = AuditLog(tmp_path / "var" / "historian.sqlite").latest("alarm_rules_changed")
    assert change is not None and change.user == "erik"
    (changed,) = change.detail["changed"]
    assert (changed["before"]["alarm"], changed["after"]["alarm"]) == (150.0, 300.0)
    assert (change.detail["added"], change.detail["removed"]) == ([], [])
    assert change.detail["comment"] == "new permit levels"

    done = cli("audit", "verify", "-c", str(cfg_path))
    assert done.returncode == 0 and " OK, " in done.stdout, done.stdout + done.stderr
    listing = cli("audit", "list", "-c", str(cfg_path))
    assert listing.returncode == 0, listing.stderr
    actions = [line for line in listing.stdout.splitlines()
               if any(a in line for a in ("acknowledge", "alarm_rules_changed", "login",
                                          "config_changed", "user_add"))]
    text = "\n".join(actions)
    for needle in ("olga", "erik", "acknowledge", "alarm_rules_changed", "config_changed"):
        assert needle in text, listing.stdout
    # Two configurations were started: the original and the edited file.
    assert sum("config_changed" in line for line in actions) == 2
