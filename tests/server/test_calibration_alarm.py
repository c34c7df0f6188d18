"""The instrument register's overdue-calibration alarm (issue 15), built as the backups'
system alarm: one alarm per instrument, raised once (not every check), notified through a
real webhook channel, listed by the web API, and cleared when the server restarts with a
configuration carrying the new calibration date."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from model.errors import ConfigError
from server.calibration import CalibrationMonitor, calibration_rule_id, with_calibration_alarm
from server.config import parse_config, parse_plant
from server.runtime import Runtime
from tests.alarms.test_channels import Receiver, receivers
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

TZ = ZoneInfo("Asia/Shanghai")
RULE = calibration_rule_id("s1_co2")


def _instrument(calibrated: dt.date, interval_d: int = 90) -> dict[str, Any]:
    return {"serial": "GA-771204", "accuracy_pct": 1.0, "calibrated_on": calibrated.isoformat(),
            "calibration_interval_days": interval_d}


def _plant(tmp_path: Path, co2_calibrated: dt.date, hook_url: str = "") -> dict[str, Any]:
    d = plant_dict(free_port(), web_port=free_port(), var_dir=str(tmp_path / "var"),
                   minute_seconds=0.5)
    d["clock"]["min_samples_per_minute"] = 1
    d["opcua"]["enabled"] = False
    tags = {t["id"]: t for t in d["devices"][0]["tags"]}
    tags["s1_co2"]["instrument"] = _instrument(co2_calibrated)
    today = dt.datetime.now(TZ).date()
    tags["s1_velocity"]["instrument"] = _instrument(today)  # calibrated today: fine
    if hook_url:
        d["alarms"] = {"channels": [{"id": "instruments", "kind": "webhook", "url": hook_url,
                                     "timeout_s": 5}],
                       "routes": [{"channels": ["instruments"]}]}
    return d


async def until(what: str, cond: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        assert time.monotonic() < deadline, f"not in {timeout_s} s: {what}"
        await asyncio.sleep(0.05)


def test_monitor_turns_overdue_at_plant_local_midnight_once() -> None:
    d = plant_dict()
    # Calibrated 2026-01-10 every 30 days: due 2026-02-09 (plant-local), overdue from
    # 2026-02-10 00:00 +08:00 = 2026-02-09 16:00 UTC.
    d["devices"][0]["tags"][4]["instrument"] = _instrument(dt.date(2026, 1, 10), 30)
    cfg = parse_config(d, "test_calibration_alarm")
    mon = CalibrationMonitor(cfg, cfg.instruments, None)
    before = dt.datetime(2026, 2, 9, 15, 59, 59, tzinfo=dt.UTC)
    first = mon.check(before)  # at start: the state of every instrument, once
    assert [(e.device, e.fault) for e in first] == [("calibration:s1_co2", False)]
    assert first[0].message == "calibration valid: s1_co2 (device cems1, serial GA-771204), " \
                               "due 2026-02-09"
    assert mon.check(before) == []  # the same state: nothing sent
    midnight = dt.datetime(2026, 2, 9, 16, 0, tzinfo=dt.UTC)
    late, = mon.check(midnight)
    assert late.fault and late.t == midnight
    assert late.message == ("calibration overdue: s1_co2 (device cems1, serial GA-771204), "
                            "calibrated 2026-01-10, due 2026-02-09 (every 30 d)")
    assert mon.check(midnight + dt.timedelta(days=3)) == []  # raised once, not every check
    # Next check: just after the next plant-local midnight (20:00 → 4 h + 1 s, 01:00 →
    # 23 h + 1 s), or sooner with a shorter check_interval_h.
    assert mon._sleep_s(dt.datetime(2026, 2, 9, 12, 0, tzinfo=dt.UTC)) == 4 * 3600 + 1
    assert mon._sleep_s(dt.datetime(2026, 2, 9, 17, 0, tzinfo=dt.UTC)) == 23 * 3600 + 1
    six = CalibrationMonitor(cfg, cfg.instruments.model_copy(update={"check_interval_h": 6}),
                             None)
    assert six._sleep_s(dt.datetime(2026, 2, 9, 17, 0, tzinfo=dt.UTC)) == 6 * 3600


def test_one_rule_per_instrument_and_a_plant_rule_wins() -> None:
    d = plant_dict()
    d["devices"][0]["tags"][4]["instrument"] = _instrument(dt.date(2026, 1, 10))
    d["devices"][0]["tags"][0]["instrument"] = _instrument(dt.date(2026, 1, 10))
    cfg = parse_config(d, "test_calibration_alarm")
    added = with_calibration_alarm(cfg, cfg.instruments).alarms.rules
    assert [(r.id, getattr(r, "device", None)) for r in added] == [
        ("calibration_s1_velocity", "calibration:s1_velocity"),
        ("calibration_s1_co2", "calibration:s1_co2")]
    assert cfg.alarms.rules == []  # not the file's rules
    # A plant's own rule for the device (its delays, its notify) replaces the added one.
    d["alarms"] = {"rules": [{"id": "co2_cal", "kind": "comm_loss",
                              "device": "calibration:s1_co2", "on_delay_min": 5}]}
    cfg = parse_config(d, "test_calibration_alarm")
    assert [r.id for r in with_calibration_alarm(cfg, cfg.instruments).alarms.rules] == [
        "co2_cal", "calibration_s1_velocity"]
    # Without an instrument block the device is unknown to the rules.
    d["alarms"]["rules"][0]["device"] = "calibration:s1_temp"
    with pytest.raises(ConfigError, match="unknown device 'calibration:s1_temp'"):
        parse_config(d, "test_calibration_alarm")
    d["alarms"]["rules"] = []
    d["instruments"] = {"alarm": False}
    cfg = parse_config(d, "test_calibration_alarm")
    assert with_calibration_alarm(cfg, cfg.instruments).alarms.rules == []


def _posts(hook: Receiver) -> list[tuple[str, str]]:
    out = []
    for got in hook.got:
        body = json.loads(got.body)
        if body["rule"] == RULE:
            out.append((body["state"], body["message"]))
    return out


async def test_overdue_alarm_listed_notified_once_and_cleared_by_a_new_date(
        tmp_path: Path) -> None:
    today = dt.datetime.now(TZ).date()
    async with receivers() as make:
        hook = await make()
        # Calibrated 100 days ago, every 90 days: 10 days overdue.
        d = _plant(tmp_path, today - dt.timedelta(days=100), f"{hook.url}/hook")
        runtime = Runtime(parse_plant(d, "test_calibration_alarm"))
        assert RULE not in [r.id for r in runtime.config.alarms.rules]  # not the file's
        base = f"http://127.0.0.1:{d['web']['port']}"

        async def listed(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
            async with http.get(f"{base}/api/v1/alarms") as r:
                assert r.status == 200
                body: list[dict[str, Any]] = await r.json()
                return [a for a in body if a["rule"].startswith("calibration_")]

        await runtime.start()
        try:
            async with aiohttp.ClientSession() as http:
                async def active() -> bool:
                    return any(a["state"] == "alarm" for a in await listed(http))
                await until("calibration alarm listed", active)
                alarm, = await listed(http)  # s1_velocity's is not: calibrated today
                assert (alarm["rule"], alarm["kind"]) == (RULE, "comm_loss")
                due = (today - dt.timedelta(days=10)).isoformat()
                assert (f"calibration overdue: s1_co2 (device cems1, serial GA-771204), "
                        f"calibrated {(today - dt.timedelta(days=100)).isoformat()}, due {due} "
                        "(every 90 d)") in alarm["message"]

                async def notified() -> bool:
                    return len(_posts(hook)) >= 1
                await until("webhook notified", notified)
                assert runtime.calibration is not None
                for _ in range(3):  # later checks (daily in service) send nothing more
                    runtime.calibration.check()
                await asyncio.sleep(0.5)
                assert [s for s, _ in _posts(hook)] == ["alarm"]
                assert "calibration overdue: s1_co2" in _posts(hook)[0][1]
                async with http.get(f"{base}/api/v1/instruments") as r:
                    states = {i["tag"]: i["state"] for i in (await r.json())["instruments"]}
                assert (states["s1_co2"], states["s1_velocity"]) == ("overdue", "ok")
        finally:
            await runtime.stop()

        # Recalibrated today; the configuration carries the new date; the server restarts
        # (the alarm comes back from the journal, the start-up check clears it).
        d["devices"][0]["tags"][4]["instrument"]["calibrated_on"] = today.isoformat()
        runtime = Runtime(parse_plant(d, "test_calibration_alarm"))
        await runtime.start()
        try:
            async with aiohttp.ClientSession() as http:
                async def cleared() -> bool:
                    rows = await listed(http)
                    return bool(rows) and all(a["state"] == "normal" for a in rows)
                await until("calibration alarm cleared", cleared)

                async def recovery_notified() -> bool:
                    return [s for s, _ in _posts(hook)] == ["alarm", "normal"]
                await until("webhook told of the recovery", recovery_notified)
                # The rule's name and what the register says, not "communication restored".
                assert _posts(hook)[1][1] == ("cleared [rule calibration_s1_co2: Calibration "
                                              "overdue / 校准逾期: s1_co2]")
        finally:
            await runtime.stop()
