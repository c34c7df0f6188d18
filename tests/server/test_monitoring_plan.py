"""The monitoring plan (issue 18): rows generated from the configuration, the daily
conformity check on a real historian filled with known minutes, the `monitoring_plan`
report read back with openpyxl, the API on a real aiohttp server, and the system alarm
raised on a deviating day and cleared by a conforming one."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openpyxl import load_workbook

from alarms.engine import AlarmSink
from compute.clock import PlantClock
from compute.entries import LabFactor, Records
from model.errors import ConfigError, InvalidValueError
from model.flags import DataFlag
from model.records import AlarmEvent, PeriodRecords, PeriodResult
from server.config import PlantConfig, load_plant, parse_config, parse_plant
from server.conformity import (
    MONITORING_DEVICE,
    MONITORING_RULE_ID,
    ConformityMonitor,
    ConformityReader,
    day_bounds,
    with_conformity_alarm,
)
from server.historian import Historian, to_ms
from server.reports.engine import ReportMaker
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from web.app import WebSink
from web.monitoring_plan import PlanRow, capture, conformity, monitoring_plan

TZ = dt.timezone(dt.timedelta(hours=8))  # Asia/Shanghai has no DST: a fixed +08:00
DAY1, DAY2 = dt.date(2026, 12, 1), dt.date(2026, 12, 2)
FULL_TAGS = ("s1_velocity", "s1_temp", "s1_static", "s1_moisture", "u1_power")


def _rows(plan: tuple[PlanRow, ...]) -> dict[str, PlanRow]:
    return {r.parameter: r for r in plan}


def _dict(tmp_path: Path | None = None, **monitoring: Any) -> dict[str, Any]:
    d = plant_dict(var_dir=str(tmp_path / "var") if tmp_path else "var", web_port=free_port())
    d["monitoring"] = {"parameters": [{"parameter": "S1.co2_pct", "frequency_s": 60,
                                       "owner": "CEMS team", "min_capture_pct": 90}],
                       **monitoring}
    return d


# ------------------------------------------------------------------------- the plan


def test_plan_rows_of_the_test_plant() -> None:
    cfg = parse_config(plant_dict(), "test_monitoring_plan")
    rows = _rows(monitoring_plan(cfg, cfg.monitoring, _empty_factors(), dt.datetime.now(dt.UTC)))
    # Output, then the source's inputs in CemsInputs order (no streams on this plant).
    assert list(rows) == ["U1.power_mw", "S1.velocity_m_s", "S1.co2_pct", "S1.temp_c",
                          "S1.static_pa", "S1.baro_pa", "S1.moisture_pct"]
    co2 = rows["S1.co2_pct"]
    assert (co2.kind, co2.obtained, co2.tag, co2.device, co2.uom) == (
        "cems", "measured", "s1_co2", "cems1", "% (dry)")
    assert co2.how == "measured: tag s1_co2 on device cems1 (modbus_tcp 127.0.0.1:5020 unit 1)"
    # Without a `monitoring:` section: the device's poll interval, the site as owner.
    assert (co2.frequency_s, co2.frequency) == (0.1, "every 0.1 s (device poll)")
    assert co2.owner == "测试电厂"
    assert co2.instrument is None and co2.accuracy_pct is None
    assert co2.missing_data_rule.startswith("none: an invalid hour stays without a value")
    baro = rows["S1.baro_pa"]
    assert (baro.obtained, baro.how, baro.tag, baro.frequency_s) == (
        "constant", "constant 101325 Pa", None, None)


def _empty_factors() -> Any:
    from compute.factors import FactorTable
    return FactorTable(())


def test_plan_rows_of_the_demo_plant() -> None:
    plant = load_plant("config/demo-plant.yaml")
    cfg = plant.config
    at = dt.datetime(2026, 12, 7, tzinfo=TZ)
    rows = _rows(monitoring_plan(cfg, cfg.monitoring, plant.factors, at))
    co2 = rows["S1.co2_pct"]
    assert co2.accuracy_pct == 1.0
    assert co2.instrument is not None and co2.instrument.serial == "GA-U1-771204"
    # Calibrated 2026-10-20, every 180 d: Nov 1 is +12, Dec 1 +42, Jan 1 +73, Feb 1 +104,
    # Mar 1 +132, Apr 1 +163, Apr 18 +180.
    assert co2.calibration_due == dt.date(2027, 4, 18)
    assert co2.missing_data_rule == (
        "mrr_mean_2sigma: an invalid hour takes the mean + 2σ of the valid hours of the "
        "720 h before (at least 24 of them)")
    assert rows["S2.co2_pct"].uom == "% (wet)" and rows["S2.co2_pct"].accuracy_pct == 1.5
    assert rows["S2.baro_pa"].tag == "u1_stack_baro"  # shared with S1, its own row
    assert rows["U1.power_mw"].instrument is None  # the DCS power tags are unregistered
    ncv = rows["U1_coal_a.ncv_gj_t"]
    assert (ncv.kind, ncv.obtained, ncv.factor_version, ncv.factor_value, ncv.uom) == (
        "factor", "factor_table", "demo-coal-2026-11", 17.0, "GJ/t")
    assert ncv.how.startswith("factor table demo-coal-2026-11 (demo plant as-fired coal")
    gas = rows["U1_startup_gas.quantity"]
    assert (gas.tag, gas.device, gas.frequency_s, gas.uom) == (
        "startup_gas_volume", "gas_startup", 5.0, "10⁴m³ (counter × 0.0001)")
    assert gas.accuracy_pct == 1.0
    # Every stream has its quantity and the three factors of ncv_cc_of.
    assert sum(r.kind == "factor" for r in rows.values()) == 9 * 3
    assert sum(r.kind == "quantity" for r in rows.values()) == 9


def test_monitoring_section_overrides_and_its_errors() -> None:
    cfg = parse_config(_dict(owner="环保部"), "test_monitoring_plan")
    rows = _rows(monitoring_plan(cfg, cfg.monitoring, _empty_factors(), dt.datetime.now(dt.UTC)))
    co2 = rows["S1.co2_pct"]
    assert (co2.frequency_s, co2.frequency, co2.owner, co2.min_capture_pct) == (
        60, "every 1 min (planned)", "CEMS team", 90)
    assert rows["S1.temp_c"].owner == "环保部"  # the section's default owner
    bad: list[tuple[dict[str, Any], str]] = [
        ({"parameter": "S9.co2_pct"}, "monitoring.parameters[0].parameter: no parameter "
                                      "'S9.co2_pct' in the plan"),
        ({"parameter": "S1.baro_pa", "frequency_s": 60},
         "monitoring.parameters[0].frequency_s: only for a measured parameter; S1.baro_pa "
         "is a constant"),
        ({"parameter": "S1.temp_c", "lab_frequency": "monthly"},
         "monitoring.parameters[0].lab_frequency: only for a factor; S1.temp_c is measured"),
    ]
    for param, message in bad:
        d = _dict()
        d["monitoring"]["parameters"] = [param]
        with pytest.raises(ConfigError) as err:
            parse_config(d, "plant.yaml")
        assert message in str(err.value)
    d = _dict()
    d["monitoring"]["parameters"].append({"parameter": "S1.co2_pct"})
    with pytest.raises(ConfigError, match=r"parameters\[1\].parameter: 'S1.co2_pct' is "
                                          r"planned twice"):
        parse_config(d, "plant.yaml")


# ------------------------------------------------------------------- capture, verdicts


def test_capture_rate_by_hand() -> None:
    # A 1-minute plan over an hour, 45 minutes with a reading: 45 / 60 = 75 %.
    assert capture({1: 45}, 60, 60.0, 60.0) == (45.0, 60.0, 75.0)
    # 0.5-s minutes polled every 0.1 s: e = 5 readings planned a minute. 30 minutes of 5,
    # 10 of 3 and 5 of 7 (counted as 5: faster polling makes up for nothing), 15 empty:
    # received 150 + 30 + 25 = 205 of 60 · 5 = 300 → 68.333… %.
    received, expected, pct = capture({5: 30, 3: 10, 7: 5, 0: 15}, 60, 0.5, 0.1)
    assert (received, expected) == (205.0, 300.0)
    assert pct == pytest.approx(205 / 3, rel=1e-9)
    # A 5-min plan polled every second: never above 100 %.
    assert capture({60: 60}, 60, 60.0, 300.0)[2] == 100.0


def test_instrument_overdue_and_lab_factor_age() -> None:
    d = plant_dict()
    # s1_co2 calibrated 2026-06-01 every 180 d: Jul 1 is +30, Aug 1 +61, Sep 1 +92,
    # Oct 1 +122, Nov 1 +153, Nov 28 +180: due 2026-11-28, overdue from the 29th.
    d["devices"][0]["tags"][4]["instrument"] = {
        "serial": "GA-1", "accuracy_pct": 1.0, "calibrated_on": "2026-06-01",
        "calibration_interval_days": 180}
    cfg = parse_config(d, "test_monitoring_plan")
    clock = PlantClock(60.0, "Asia/Shanghai")

    def check(day: dt.date, plant: PlantConfig, factors: Any) -> dict[str, Any]:
        start, end = day_bounds(clock, day)
        plan = monitoring_plan(plant, plant.monitoring, factors, end - dt.timedelta(seconds=1))
        full = {t: {600: 1440} for t in (*FULL_TAGS, "s1_co2", "u1_feeder_a",
                                         "u1_feeder_b", "u1_feeder_c", "u1_feeder_d")}
        c = conformity(plant, plant.monitoring, plan, day, start, end, 60.0, full, None,
                       factors)
        return {r.parameter: r for r in c.rows}

    on_due = check(dt.date(2026, 11, 28), cfg, _empty_factors())["S1.co2_pct"]
    assert (on_due.instrument_state, on_due.verdict) == ("ok", "conforms")
    after = check(dt.date(2026, 11, 29), cfg, _empty_factors())["S1.co2_pct"]
    assert (after.instrument_state, after.verdict) == ("overdue", "deviates")
    assert after.reasons == ("instrument GA-1 calibration overdue (due 2026-11-28)",)

    # A lab entry of the demo coal in force from 2026-11-15 (monthly: 31 d + 7 d grace).
    plant = load_plant("config/demo-plant.yaml")
    lab = LabFactor("demo_coal", dt.datetime(2026, 11, 15, tzinfo=TZ),
                    {"ncv_gj_t": 17.5}, "lab report L-1", entry=3)
    factors = Records(lab_factors=(lab,)).factor_table(plant.factors)
    row = _rows(monitoring_plan(plant.config, plant.config.monitoring, factors,
                                dt.datetime(2026, 12, 1, tzinfo=TZ)))["U1_coal_a.ncv_gj_t"]
    assert (row.obtained, row.factor_version, row.factor_value, row.frequency) == (
        "lab", "demo_coal@lab3", 17.5, "monthly")
    assert row.how == "lab entry demo_coal@lab3 (lab report L-1)"
    # 2026-12-22 ends 12-23 00:00: 38 d after 11-15 00:00, the most allowed: conforms.
    ok = check(dt.date(2026, 12, 22), plant.config, factors)["U1_coal_a.ncv_gj_t"]
    assert (ok.verdict, ok.factor_version) == ("conforms", "demo_coal@lab3")
    late = check(dt.date(2026, 12, 23), plant.config, factors)["U1_coal_a.ncv_gj_t"]
    assert late.reasons == ("lab analysis monthly: version demo_coal@lab3 in force since "
                            "2026-11-15 is 39 d old (at most 38 d)",)


def test_day_bounds_on_a_sped_up_clock() -> None:
    # 0.5-s minutes: a plant day is 24 · 60 · 0.5 = 720 s of wall time.
    cfg = parse_config(plant_dict(minute_seconds=0.5), "test_monitoring_plan")
    reader = ConformityReader(cfg, cfg.monitoring, Historian("unused"), _empty_factors,
                              "unused")
    for day in (dt.date(2026, 1, 1), dt.date(2026, 12, 1), dt.date(2031, 7, 15)):
        start, end = day_bounds(reader.clock, day)
        assert (end - start).total_seconds() == pytest.approx(720.0, rel=1e-9)
        assert reader.day_starting(start) == day
        assert reader.clock.day_start(start) == start
    with pytest.raises(InvalidValueError, match="out of the clock's range"):
        day_bounds(reader.clock, dt.date(9999, 12, 31))


# --------------------------------------------------------- historian, report, API, alarm


async def _fill(h: Historian, day: dt.date, co2_minutes_per_hour: int, n_sub: int) -> None:
    """A stored day: the CO2 tag read in the first `co2_minutes_per_hour` minutes of each
    hour (1 valid sample each), the other tags 600 samples every minute; S1's day record
    with `n_sub` substituted hours."""
    start, end = day_bounds(PlantClock(60.0, "Asia/Shanghai"), day)
    rows: list[tuple[str, int, float | None, float | None, float | None, int, str]] = []
    for m in range(1440):
        t_ms = to_ms(start + dt.timedelta(minutes=m))
        rows += [(tag, t_ms, 1.0, 1.0, 1.0, 600, "N") for tag in FULL_TAGS]
        got = m % 60 < co2_minutes_per_hour
        rows.append(("s1_co2", t_ms, 12.0 if got else None, None, None, int(got),
                     "N" if got else "B"))
    db = sqlite3.connect(h.path)
    with db:
        db.executemany("INSERT INTO tag_minute VALUES (?,?,?,?,?,?,?)", rows)
    db.close()
    src = PeriodResult("S1", start, 12.0, 1.0e6, 1.0e5, 2400.0, 2200.0, True, DataFlag.N,
                       24 - n_sub, substituted=n_sub > 0,
                       substitution_rule="mrr_mean_2sigma" if n_sub else "",
                       n_substituted=n_sub)
    await h.on_period(PeriodRecords("day", start, end, (src,), (), ()))


async def test_conformity_report_api_and_alarm(tmp_path: Path) -> None:
    d = _dict(tmp_path)
    d["opcua"]["enabled"] = False
    cfg = parse_config(d, "test_monitoring_plan")
    assert with_conformity_alarm(cfg, cfg.monitoring).alarms.rules == []  # off by default
    assert MONITORING_DEVICE not in cfg.system_device_ids()
    d["monitoring"]["alarm"] = True
    cfg = parse_config(d, "test_monitoring_plan")
    h = Historian(cfg.historian.path)
    await h.start()
    try:
        await _fill(h, DAY1, 45, 2)
        reader = ConformityReader(cfg, cfg.monitoring, h, _empty_factors, cfg.historian.path)
        c1 = await reader.day(DAY1)
        assert c1 is not None and not c1.conforms
        by = {r.parameter: r for r in c1.rows}
        co2 = by["S1.co2_pct"]
        # 45 of every 60 minutes, a 1-minute plan: 24 · 45 = 1080 of 1440 readings, 75 %.
        assert (co2.received_n, co2.expected_n, co2.capture_pct) == (1080.0, 1440.0, 75.0)
        assert co2.reasons == (
            "capture 75.0 % below the planned 90 % (1080 of 1440 readings, every 1 min)",
            "source S1: 2 h substituted (mrr_mean_2sigma)")
        vel = by["S1.velocity_m_s"]  # 600 a minute at 0.1-s polls: all planned readings
        assert (vel.capture_pct, vel.substituted_hours_h) == (100.0, 2)
        assert vel.reasons == ("source S1: 2 h substituted (mrr_mean_2sigma)",)
        assert by["S1.baro_pa"].verdict == "conforms"  # a constant
        assert by["U1.power_mw"].verdict == "conforms"
        assert await reader.day(DAY2) is None  # not stored (not closed)

        # The alarm: a real alarm sink with the added rule; day 1 raises it, day 2 clears.
        alarm_cfg = with_conformity_alarm(cfg, cfg.monitoring)
        assert [r.id for r in alarm_cfg.alarms.rules] == [MONITORING_RULE_ID]
        assert MONITORING_DEVICE in cfg.system_device_ids()
        alarms = AlarmSink(alarm_cfg)
        seen: list[AlarmEvent] = []
        alarms.subscribe(seen.append)
        await alarms.start()
        monitor = ConformityMonitor(reader, lambda: h.last_period("day"),
                                    alarms.on_device_event)
        try:
            assert await monitor.check() is not None
            assert await monitor.check() is None  # the same day: checked once
            await asyncio.sleep(0)
            assert [(e.rule, e.state) for e in alarms.alarm_list()] == [
                (MONITORING_RULE_ID, "alarm")]
            # Deviating: the five measured inputs of S1 (its substituted hours; the CO2 its
            # capture too); conforming: the constant pressure and the unit's output.
            assert "2026-12-01 deviates in 5 of 7 parameters" in alarms.alarm_list()[0].message
            await _fill(h, DAY2, 60, 0)
            c2 = await monitor.check()
            assert c2 is not None and c2.conforms and c2.day == DAY2
            await asyncio.sleep(0)
            states = [e.state for e in seen if e.rule == MONITORING_RULE_ID
                      and e.cause == "condition"]
            assert states == ["alarm", "normal"]
        finally:
            await alarms.stop()

        # The report: the plan and both days' checks, read back with openpyxl.
        maker = ReportMaker(cfg, h, _empty_factors)
        start, _ = day_bounds(reader.clock, DAY1)
        _, end = day_bounds(reader.clock, DAY2)
        rep = await maker.make("monitoring_plan", start, end, "xlsx")
        wb = load_workbook(io.BytesIO(rep.body))
        plan_ws = wb["监测计划 monitoring_plan"]
        head = [c.value for c in plan_ws[2]]
        plan_rows = {r[0]: dict(zip(head, r, strict=True))
                     for r in plan_ws.iter_rows(min_row=3, values_only=True)}
        assert plan_rows["S1.co2_pct"]["Planned interval (s)"] == 60
        assert plan_rows["S1.co2_pct"]["Owner"] == "CEMS team"
        assert plan_rows["S1.baro_pa"]["How it is obtained"] == "constant 101325 Pa"
        ws = wb["监测计划执行检查 conformity"]
        head = [c.value for c in ws[2]]
        checks = {(r[0], r[1]): dict(zip(head, r, strict=True))
                  for r in ws.iter_rows(min_row=3, values_only=True)}
        day1 = checks[("2026-12-01", "S1.co2_pct")]
        assert (day1["Capture rate (%)"], day1["Verdict"]) == (75, "偏离 deviates")
        assert checks[("2026-12-02", "S1.co2_pct")]["Verdict"] == "符合 conforms"
        assert len(checks) == 2 * 7
        # The daily report carries the conformity sheet when the maker has the checks.
        maker.conformity = reader
        daily = await maker.report("daily", start, end)
        assert len(daily.table("conformity").rows) == 2 * 7

        # The API on a real aiohttp server.
        sink = WebSink(cfg, monitoring_plan=reader)
        await sink.start()
        base = f"http://127.0.0.1:{sink.port}/api/v1/monitoring-plan"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(base) as r:
                    assert r.status == 200
                    params = {p["parameter"]: p for p in (await r.json())["parameters"]}
                assert params["S1.co2_pct"]["frequency_s"] == 60
                assert params["S1.baro_pa"]["obtained"] == "constant"
                async with http.get(f"{base}/conformity?day=2026-12-01") as r:
                    assert r.status == 200
                    body = await r.json()
                assert (body["day"], body["conforms"], body["deviations"]) == (
                    "2026-12-01", False, 5)
                got = {p["parameter"]: p for p in body["parameters"]}
                assert got["S1.co2_pct"]["capture_pct"] == 75.0
                for query, status, message in (
                        ("?day=2026-13-01", 400, "query parameter 'day': day must be a "
                                                 "plant-local date YYYY-MM-DD, not "
                                                 "'2026-13-01'"),
                        ("", 400, "query parameter 'day' is required"),
                        ("?day=2026-12-05", 404, "no closed day 2026-12-05 is stored")):
                    async with http.get(f"{base}/conformity{query}") as r:
                        assert r.status == status
                        assert message in (await r.json())["error"]
        finally:
            await sink.stop()
    finally:
        await h.stop()


async def test_the_running_server_serves_the_plan(tmp_path: Path) -> None:
    d = _dict(tmp_path, alarm=True)
    d["devices"][0]["port"] = free_port()
    d["clock"]["minute_seconds"] = 0.5
    d["opcua"]["enabled"] = False
    runtime = Runtime(parse_plant(d, "test_monitoring_plan"))
    # The check's rule is added to the rules in force, not to the file's.
    assert MONITORING_RULE_ID not in [r.id for r in runtime.config.alarms.rules]
    await runtime.start()
    try:
        assert runtime.conformity_monitor is not None
        assert runtime._alarms is not None
        assert MONITORING_RULE_ID in [r["id"] for r in runtime._alarms.rules_config()]
        base = f"http://127.0.0.1:{d['web']['port']}/api/v1/monitoring-plan"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as r:
                assert r.status == 200
                rows = (await r.json())["parameters"]
            assert [p["parameter"] for p in rows][:3] == [
                "U1.power_mw", "S1.velocity_m_s", "S1.co2_pct"]
            async with http.get(f"{base}/conformity?day=2026-12-01") as r:
                assert r.status == 404  # a fresh historian has no closed day
    finally:
        await runtime.stop()
