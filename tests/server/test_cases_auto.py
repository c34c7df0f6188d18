"""Cases the server opens by itself (server/cases.py CaseSink, `cases.auto`, issue 18): from
PeriodRecords and AlarmEvents fed to the sink, on a real historian file; user `system`, the
cause prefilled, one case per subject; the configuration's errors naming the key; and the
sink wired into the runtime."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from compute.config import ClockConfig
from model.errors import ConfigError
from model.flags import DataFlag
from model.records import AlarmEvent, PeriodRecords, PeriodResult, StreamPeriod
from server.audit import AuditLog, verify
from server.cases import AutoCasesConfig, CaseSink
from server.config import parse_plant
from server.historian import Historian
from tests.fixtures.plant import plant_dict
from tests.server.test_cases import HOUR, NOW, FixedKeeper, substituted_hour

# The plant day of 2026-03-01 in Asia/Shanghai (UTC+8) starts at 2026-02-28 16:00 UTC.
DAY = datetime(2026, 2, 28, 16, tzinfo=UTC)
REF_HOUR = "source_hour:S1:2026-03-01T08:00:00+00:00"
REF_DAY = "source_day:S1:2026-02-28T16:00:00+00:00"


def hour(*sources: PeriodResult, streams: tuple[StreamPeriod, ...] = ()) -> PeriodRecords:
    return PeriodRecords("hour", HOUR, HOUR + timedelta(hours=1), sources, streams, ())


def valid_hour(source: str = "S1") -> PeriodResult:
    return PeriodResult(source, HOUR, 12.0, 300_000.0, 200_000.0, 200.0, 200.0, True,
                        DataFlag.N, 60)


def short_day() -> PeriodResult:
    """S1's day of 2026-03-01: 18 valid hours (< 20), flag D, 6 hours substituted."""
    return PeriodResult("S1", DAY, 12.0, 300_000.0, math.nan, 4800.0, 3600.0, False,
                        DataFlag.D, 18, n_substituted=6)


def stopped_hour() -> PeriodResult:
    """S2's hour with the unit stopped (F): invalid, but not abnormal data."""
    return PeriodResult("S2", HOUR, math.nan, math.nan, math.nan, math.nan, math.nan, False,
                        DataFlag.F, 0)


def stream_hour() -> StreamPeriod:
    """Coal feeder F1's hour: the meter failed (B), 10 valid minutes."""
    return StreamPeriod("F1", "U1", HOUR, HOUR + timedelta(hours=1), math.nan, "t", math.nan,
                        "", "ncv_cc_of", False, DataFlag.B, 10, note="no reading")


def alarm(rule: str, t: datetime, state: str = "alarm", previous: str = "normal",
          cause: str = "condition", kind: str = "threshold") -> AlarmEvent:
    return AlarmEvent(rule, t, state, previous, 5200.0, 5000.0, "source S1 co2_kg",
                      "S1 CO2 rate high", "S1 CO2 排放速率高", cause=cause, kind=kind)


class Site:
    """A keeper on a real historian file and a sink over it."""

    def __init__(self, path: Path, keeper: FixedKeeper, historian: Historian) -> None:
        self.path = path
        self.keeper = keeper
        self.historian = historian

    def sink(self, **auto: Any) -> CaseSink:
        return CaseSink(self.keeper, AutoCasesConfig(**auto), ClockConfig(), "Asia/Shanghai")


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    path = tmp_path / "h.sqlite"
    historian = Historian(path)
    await historian.start()
    keeper = FixedKeeper(path, historian, AuditLog(path))
    await keeper.load()
    try:
        yield Site(path, keeper, historian)
    finally:
        await historian.stop()


async def test_periods_open_cases_with_their_cause(site: Site) -> None:
    sink = site.sink(invalid_day=True, substituted_hour=True, due_days=7)
    await sink.on_period(hour(substituted_hour(), valid_hour("S3"), stopped_hour(),
                              streams=(stream_hour(),)))
    await sink.on_period(PeriodRecords("day", DAY, DAY + timedelta(days=1), (short_day(),),
                                       (), ()))
    got = site.keeper.cases()
    # invalid_hour is off: the substituted hour opens its case as substituted only; the
    # valid hour, the stopped hour (F is ignored) and the stream's invalid hour open none.
    # The day: 18 valid hours against the clock's 20; substituted_day is off.
    assert [(c["id"], c["title"], c["cause"], c["opened_by"], c["owner"]) for c in got] == [
        (1, "source S1 hour 2026-03-01 16:00 substituted",
         "hour substituted by mrr_mean_2sigma (co2_t 221.583)", "system", "system"),
        (2, "source S1 day 2026-03-01 invalid", "day invalid: 18 valid hours < 20, flag D",
         "system", "system")]
    assert got[0]["subject"] == {
        "kind": "period", "ref": REF_HOUR,
        "found": {"flag": "D", "valid": False, "substituted": True,
                  "substitution_rule": "mrr_mean_2sigma", "n_substituted": 0, "n_missing": 0,
                  "co2_t": 221.58251, "co2_measured_t": None}}
    assert got[1]["subject"]["ref"] == REF_DAY
    # due: opened (NOW, the keeper's clock) + 7 days
    assert [c["due"] for c in got] == [(NOW + timedelta(days=7)).isoformat()] * 2
    assert sink.opened == 2
    # every opening audited as the system's, the chain intact
    entries = AuditLog(site.path).entries()
    assert [(e.user, e.action, e.target) for e in entries] == [
        ("system", "case_open", "case:1"), ("system", "case_open", "case:2")]
    assert verify(site.path).ok


async def test_every_kind_of_period_case(site: Site) -> None:
    sink = site.sink(invalid_hour=True, invalid_day=True, substituted_hour=True,
                     substituted_day=True, ignore_flags=[], due_days=0.5, owner="shift_lead")
    await sink.on_period(hour(substituted_hour(), stopped_hour(), streams=(stream_hour(),)))
    await sink.on_period(PeriodRecords("day", DAY, DAY + timedelta(days=1), (short_day(),),
                                       (), ()))
    got = site.keeper.cases()
    assert [(c["title"], c["cause"]) for c in got] == [
        ("source S1 hour 2026-03-01 16:00 invalid",
         "hour invalid: 0 valid minutes < 45, flag D; "
         "hour substituted by mrr_mean_2sigma (co2_t 221.583)"),
        ("source S2 hour 2026-03-01 16:00 invalid",  # F no longer ignored
         "hour invalid: 0 valid minutes < 45, flag F"),
        ("stream F1 hour 2026-03-01 16:00 invalid",
         "hour invalid: 10 valid minutes or readings, flag B; no reading"),
        ("source S1 day 2026-03-01 invalid",
         "day invalid: 18 valid hours < 20, flag D; day with 6 substituted hours")]
    assert got[2]["subject"]["ref"] == "stream_hour:F1:2026-03-01T08:00:00+00:00"
    # owner from the configuration; 0.5 days = 12 h after NOW
    assert {(c["owner"], c["opened_by"], c["due"]) for c in got} == {
        ("shift_lead", "system", "2026-03-01T22:00:00+00:00")}


async def test_no_duplicate_when_a_period_is_revised(site: Site) -> None:
    k = site.keeper
    sink = site.sink(invalid_hour=True)
    await sink.on_period(hour(substituted_hour()))
    await sink.on_period(hour(substituted_hour()))  # recalculated after an entry
    assert [c["id"] for c in k.cases()] == [1]
    # closed, the period still has its case: recalculated again, none opens
    await k.record("operator", {"event": "action", "case": 1, "note": "substitute checked"})
    await k.record("engineer", {"event": "review", "case": 1, "finding": "accepted"})
    await k.record("engineer", {"event": "close", "case": 1, "note": "ok"})
    await sink.on_period(hour(substituted_hour()))
    assert [(c["id"], c["state"]) for c in k.cases()] == [(1, "closed")]
    # a case opened by hand on a period counts too (another source's hour here)
    await site.historian.on_period(hour(_on("S4")))
    body = {"event": "open", "subject": {"kind": "period",
                                         "ref": "source_hour:S4:2026-03-01T08:00:00Z"},
            "title": "S4 by hand", "due": "2026-03-05T00:00:00Z"}
    await k.record("operator", body)
    await sink.on_period(hour(_on("S4")))
    assert [(c["id"], c["title"]) for c in k.cases()] == [
        (1, "source S1 hour 2026-03-01 16:00 invalid"), (2, "S4 by hand")]
    assert sink.opened == 1
    # After a restart the stored cases still prevent duplicates.
    again = FixedKeeper(site.path, k.historian, k.audit)
    await again.load()
    sink2 = CaseSink(again, AutoCasesConfig(invalid_hour=True), ClockConfig(), "Asia/Shanghai")
    await sink2.on_period(hour(substituted_hour(), _on("S4")))
    assert sink2.opened == 0 and len(again.cases()) == 2


def _on(source: str) -> PeriodResult:
    """`substituted_hour()` of another source."""
    r = substituted_hour()
    return PeriodResult(source, r.t, r.co2_dry_pct, r.flow_std_dry_m3_h, r.co2_rate_kg_h,
                        r.co2_t, r.co2_measured_t, r.valid, r.flag, r.n_valid,
                        substituted=r.substituted, substitution_rule=r.substitution_rule)


async def test_alarms_open_one_case_while_it_is_open(site: Site) -> None:
    k = site.keeper
    sink = site.sink(alarms=["s1_rate", "capture_rate"])
    t0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    sink.on_alarm(alarm("s1_rate", t0, "warning"))
    sink.on_alarm(alarm("s1_rate", t0 + timedelta(minutes=1), "alarm", "warning"))  # worse
    sink.on_alarm(alarm("s1_rate", t0 + timedelta(minutes=2), "normal", "alarm"))  # cleared
    sink.on_alarm(alarm("s1_rate", t0 + timedelta(minutes=3), cause="acknowledge"))
    sink.on_alarm(alarm("s2_rate", t0))  # a rule not named
    sink.on_alarm(alarm("s1_rate", t0 + timedelta(minutes=5)))  # raised again, case open
    sink.on_alarm(alarm("s1_capture", t0, kind="capture_rate"))  # named by its kind
    await sink.stop()  # the cases of the alarms taken so far are opened
    got = k.cases()
    assert [(c["id"], c["subject"]["rule"], c["subject"]["t"], c["opened_by"]) for c in got] \
        == [(1, "s1_rate", "2026-03-01T08:30:00+00:00", "system"),
            (2, "s1_capture", "2026-03-01T08:30:00+00:00", "system")]
    assert got[0]["title"] == "alarm s1_rate: S1 CO2 rate high"
    assert got[0]["cause"] == ("alarm s1_rate warning: source S1 co2_kg 5200 (limit 5000); "
                               "S1 CO2 rate high")
    assert got[0]["subject"]["found"] == {"state": "warning", "value": 5200.0, "limit": 5000.0,
                                          "target": "source S1 co2_kg",
                                          "message": "S1 CO2 rate high"}
    # once its case is closed, the rule raised again opens a new one
    await k.record("operator", {"event": "action", "case": 1, "note": "analyser re-spanned"})
    await k.record("engineer", {"event": "review", "case": 1, "finding": "accepted"})
    await k.record("engineer", {"event": "close", "case": 1, "note": "ok"})
    sink.on_alarm(alarm("s1_rate", t0 + timedelta(hours=2)))
    await sink.stop()
    assert [(c["id"], c["subject"]["rule"], c["subject"]["t"]) for c in k.cases("open")] == [
        (2, "s1_capture", "2026-03-01T08:30:00+00:00"),
        (3, "s1_rate", "2026-03-01T10:30:00+00:00")]


async def test_many_alarms_at_once_open_one_case(site: Site) -> None:
    """The duplicate check and the open are one step under the keeper's lock: twenty raises
    of one rule, taken before any case was written, still open one case."""
    sink = site.sink(alarms=["s1_rate"])
    t0 = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    for i in range(20):
        sink.on_alarm(alarm("s1_rate", t0 + timedelta(seconds=i)))
    await sink.stop()
    assert [c["id"] for c in site.keeper.cases()] == [1]


def test_config_errors_name_the_key() -> None:
    def error(cases: Any, rules: list[dict[str, Any]] | None = None) -> str:
        d = plant_dict()
        d["cases"] = cases
        if rules is not None:
            d["alarms"] = {"rules": rules}
        with pytest.raises(ConfigError) as err:
            parse_plant(d, "plant.yaml")
        return str(err.value)

    text = error({"auto": {"alarms": ["threshold", "s1_rate", "nope"]}})
    assert "plant.yaml" in text and "cases.auto.alarms[1]: 's1_rate' is neither an alarm " \
        "rule id nor a rule kind" in text and "cases.auto.alarms[2]: 'nope'" in text
    assert "alarms[0]" not in text  # a kind is fine
    assert "cases.auto.invalid_days" in error({"auto": {"invalid_days": True}})
    assert "cases.auto.due_days" in error({"auto": {"due_days": 0}})
    assert "cases.auto.ignore_flags[0]" in error({"auto": {"ignore_flags": ["X"]}})
    assert "cases.auto.owner" in error({"auto": {"owner": "two words"}})
    # a rule of the file named by its id is fine
    d = plant_dict()
    d["alarms"] = {"rules": [{"id": "s1_rate", "target": {"source": "S1", "field": "co2_kg"},
                              "alarm": 1.0}]}
    d["cases"] = {"auto": {"alarms": ["s1_rate"], "invalid_day": True}}
    auto = parse_plant(d, "plant.yaml").config.cases.auto
    assert auto.enabled and auto.alarms == ("s1_rate",) and auto.due_days == 7.0
    assert not parse_plant(plant_dict(), "plant.yaml").config.cases.auto.enabled


async def test_the_runtime_opens_cases(tmp_path: Path) -> None:
    """Wired into server/runtime.py: a period published to the sinks opens its case (no
    hour is waited for: the period is handed to the sinks as a closed hour would be)."""
    from server import runtime as rt
    from tests.conftest import free_port

    d = plant_dict(free_port(), opcua_port=free_port(), web_port=free_port(),
                   var_dir=str(tmp_path / "var"))
    d["opcua"]["enabled"] = False
    d["cases"] = {"auto": {"substituted_hour": True}}
    runtime = rt.Runtime(parse_plant(d, "test"))
    await runtime.start()
    try:
        assert any(isinstance(q.sink, CaseSink) for q in runtime._sinks)
        runtime._publish_period(hour(substituted_hour()))
        for q in runtime._sinks:
            await q.drain()
        assert [(c["title"], c["opened_by"]) for c in runtime.cases.cases("open")] == [
            ("source S1 hour 2026-03-01 16:00 substituted", "system")]
    finally:
        await runtime.stop()


async def test_a_case_names_its_period_as_the_sped_up_clock_shows_it(site: Site) -> None:
    """On a 0.5-s minute clock the cause names the plant's scaled time, not the wall's."""
    from compute.clock import PlantClock

    sink = CaseSink(site.keeper, AutoCasesConfig(substituted_hour=True),
                    ClockConfig(minute_seconds=0.5), "Asia/Shanghai")
    rec = hour(substituted_hour())
    await sink.on_period(rec)
    (case,) = site.keeper.cases()
    shown = PlantClock(0.5, "Asia/Shanghai").scaled_local(rec.t).strftime("%Y-%m-%d %H:%M")
    wall = rec.t.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    assert shown != wall  # the two readings differ, so the title tells them apart
    assert case["title"] == f"source S1 hour {shown} substituted"
