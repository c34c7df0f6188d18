"""AlarmEngine / AlarmSink: the vectorised bank against the scalar rules, operator actions,
suppression, shelving, periods, device events, the notifier seam, restore after a restart
and rule changes at run time."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from alarms.config import with_alarm_rules
from alarms.context import MinuteContext
from alarms.engine import AlarmEngine, AlarmSink
from alarms.state import (
    ACKED,
    NORMAL,
    OUT_OF_SERVICE,
    RTN_UNACK,
    SHELVED,
    SUPPRESSED,
    UNACK,
    AuditRecord,
)
from compute.clock import PlantClock
from model.errors import AlarmActionError, ConfigError
from model.flags import DataFlag
from model.records import (
    AlarmEvent,
    AllowancePosition,
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    SiteMinute,
    SourceColumns,
    SourceMinute,
    TagColumns,
    TagMinute,
    UnitMinute,
    UnitPeriod,
)
from server.config import PlantConfig, parse_config
from tests.alarms.reference import ScalarRule, scalar_rules
from tests.alarms.test_rules import hour, record
from tests.fixtures.plant import plant_dict

T0 = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
F = DataFlag


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def two_unit_plant(rules: list[dict[str, Any]],
                   channels: Sequence[dict[str, Any]] = ()) -> PlantConfig:
    """The fixture plant plus a unit U2 with stack S2 measured by constants."""
    d = plant_dict()
    u2 = copy.deepcopy(d["units"][0])
    u2.update(id="U2", name="Unit 2", output={"power_mw": {"value": 300.0}})
    u2["sources"][0]["id"] = "S2"
    u2["sources"][0]["inputs"] = {k: {"value": 1.0} for k in (
        "velocity_m_s", "co2_pct", "temp_c", "moisture_pct")}
    d["units"].append(u2)
    d.update(allowance={"annual_t": 1_000_000.0, "carbon_price_cny_t": 80.0},
             reconciliation={"limit_pct": 5.0})
    d["alarms"] = {"rules": rules, "channels": list(channels)}
    return parse_config(d, "test_engine")


# --- the bank gives what the scalar rules give --------------------------------------------


def random_rules(rng: random.Random, n: int) -> list[dict[str, Any]]:
    targets = [{"source": "S1", "field": "co2_dry_pct"}, {"unit": "U2", "field": "output_mwh"},
               {"tag": "s1_co2", "field": "mean"}, {"site": True, "field": "co2_kg"},
               {"source": "S2", "field": "co2_kg"}]
    rules: list[dict[str, Any]] = []
    for i in range(n):
        lv = {"on_delay_min": rng.choice([0, 0, 1, 3]), "off_delay_min": rng.choice([0, 0, 2]),
              "deadband": rng.choice([0.0, 0.5])}
        kind = ["threshold", "rate_of_change", "stale", "comm_loss", "intensity",
                "allowance_position", "capture_rate", "reconciliation_diff"][i % 8]
        r: dict[str, Any] = {"id": f"r{i}", "kind": kind}
        if kind == "threshold":
            w, a = sorted([rng.uniform(0, 12), rng.uniform(0, 12)])
            low = rng.random() < 0.5
            r.update(lv, target=rng.choice(targets), direction="low" if low else "high",
                     warning=a if low else w, alarm=w if low else a)
        elif kind == "rate_of_change":
            r.update(lv, target=rng.choice(targets), over_min=rng.choice([1, 2, 5]),
                     direction=rng.choice(["rise", "fall", "both"]), warning=0.5, alarm=1.5)
        elif kind == "stale":
            r.update(target=rng.choice(targets), warning_min=2, alarm_min=4)
        elif kind == "comm_loss":
            r.update(device="cems1", on_delay_min=lv["on_delay_min"])
        elif kind == "intensity":
            r.update(lv, scope=rng.choice([{"source": "S1"}, {"unit": "U2"}, {"site": True}]),
                     window=rng.choice(["minute", "hour", "day", "month_to_date"]),
                     warning=0.8, alarm=1.0, min_output_mwh=rng.choice([0.0, 5.0]))
        elif kind == "allowance_position":
            r.update(lv, measure=rng.choice(["used_pct", "prorated_pct", "forecast_pct",
                                             "forecast_shortfall_t", "shortfall_cost_cny"]),
                     warning=rng.uniform(1, 50), alarm=100)
        elif kind == "capture_rate":
            r.update(source=rng.choice(["S1", "S2"]), window_h=rng.choice([3, 6]), min_hours=2,
                     warning=90, alarm=60)
        else:
            r.update(unit=rng.choice(["U1", "U2"]), warning=3, alarm=5)
        rules.append(r)
    return rules


def random_minute(t: datetime, rng: random.Random) -> MinuteResult:
    def flag() -> DataFlag:
        return rng.choice([F.N] * 8 + [F.D, F.F])

    sources = []
    for sid, uid in (("S1", "U1"), ("S2", "U2")):
        f = flag()
        co2 = rng.uniform(0, 12) if rng.random() > 0.05 else math.nan
        sources.append(SourceMinute(sid, uid, t, 1.0, 1.0, co2, 1.0, 1000.0,
                                    rng.uniform(0, 20_000), f is F.N, f))
    units = []
    for uid in ("U1", "U2"):
        f = flag()
        units.append(UnitMinute(uid, t, rng.uniform(0, 12), rng.uniform(0, 12_000), 0.0,
                                f is F.N, f))
    tags = (TagMinute("s1_co2", t, rng.uniform(0, 12), 0, 0, rng.choice([0, 5]), flag()),)
    site = SiteMinute(t, rng.uniform(0, 20_000), 0, rng.uniform(0, 900_000), 1e6, 0, 0)
    if rng.random() < 0.05:  # a source missing from the minute
        sources = sources[:1]
    return MinuteResult(t, tuple(sources), tuple(units), site, tags)


def as_columns(res: MinuteResult) -> MinuteResult:
    """The same minute as the minute cycle hands it over: sources and tags as columns."""
    src = res.sources

    def col(name: str) -> npt.NDArray[np.float64]:
        return np.array([getattr(s, name) for s in src], np.float64)

    cols = SourceColumns(
        sources=tuple(s.source for s in src), units=tuple(s.unit for s in src),
        flow_act_m3_h=col("flow_act_m3_h"), flow_std_dry_m3_h=col("flow_std_dry_m3_h"),
        co2_dry_pct=col("co2_dry_pct"), co2_mg_m3=col("co2_mg_m3"),
        co2_rate_kg_h=col("co2_rate_kg_h"), co2_kg=col("co2_kg"),
        flag=np.array([int(s.flag) for s in src], np.uint8),
        substitution=np.zeros(len(src), np.int64), rules=("",), co2_hour_t=col("co2_hour_t"),
        co2_today_t=col("co2_today_t"), co2_ytd_t=col("co2_ytd_t"))
    tags = TagColumns(
        tags=tuple(g.tag for g in res.tags), mean=np.array([g.mean for g in res.tags]),
        min=np.array([g.min for g in res.tags]), max=np.array([g.max for g in res.tags]),
        count=np.array([g.count for g in res.tags], np.int64),
        flag=np.array([int(g.flag) for g in res.tags], np.uint8))
    return MinuteResult(res.t, units=res.units, site=res.site, source_columns=cols,
                        tag_columns=tags)


def key(e: AlarmEvent) -> tuple[Any, ...]:
    v = round(e.value, 6) if math.isfinite(e.value) else None
    return (e.rule, e.t, e.state, e.previous, e.ack_state, e.cause, v, e.message,
            e.message_zh)


def test_bank_matches_scalar_rules() -> None:
    """Random values, flags, stops, gaps, a month end, device faults, hours and days: the
    engine (numpy) and the scalar rules (plain Python) give the same events."""
    rng = random.Random(3)
    cfg = two_unit_plant(random_rules(rng, 96))
    engine = AlarmEngine(cfg)
    columnar = AlarmEngine(cfg)  # fed the same minutes as columns, as the runtime does
    scalar = scalar_rules(cfg)
    clock = PlantClock(60.0, "Asia/Shanghai")
    start = datetime(2024, 3, 31, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai, an hour to April
    trailing = math.nan
    seen: Counter[tuple[str, str]] = Counter()

    def both(events: list[AlarmEvent], method: str, *args: Any) -> list[AlarmEvent]:
        assert list(map(key, getattr(columnar, method)(*args))) == list(map(key, events))
        out = []
        for r in scalar:
            fn = getattr(r, method, None)
            if fn is not None:
                e = fn(*args)
                out.extend([e] if isinstance(e, AlarmEvent) else [])
        assert sorted(map(key, events)) == sorted(map(key, out)), method
        return events

    for k in range(720):
        t = start + timedelta(minutes=k if k < 400 else k + 7)  # a 7-minute gap
        res = random_minute(t, rng)
        ev = engine.on_minute(res)
        assert list(map(key, columnar.on_minute(as_columns(res)))) == list(map(key, ev))
        ctx = MinuteContext(res, clock, cfg.allowance, trailing)
        want = [e for r in scalar for e in r.step(ctx)]
        assert sorted(map(key, ev)) == sorted(map(key, want)), f"minute {k}"
        seen.update((e.kind, e.cause) for e in ev)
        if rng.random() < 0.03:
            dev = DeviceEvent("cems1", "bus", t + timedelta(seconds=20), rng.random() < 0.5,
                              "timeout")
            seen.update((e.kind, e.cause) for e in both(engine.on_device_event(dev),
                                                        "on_device_event", dev))
        if k % 60 == 59:
            srcs = tuple(PeriodResult(s, t, 0, 0, 0, 0, 0, rng.random() < 0.7,
                                      rng.choice([F.N, F.N, F.D, F.F]), 45) for s in ("S1", "S2"))
            trailing = rng.uniform(1000, 90_000)
            pos = AllowancePosition(1e6, 0, 0, 0, trailing, 0, 0, 0, 0, 0, 0, 0)
            rec = PeriodRecords("hour", t - timedelta(minutes=59), t + timedelta(minutes=1),
                                srcs, (), (), pos)
            seen.update((e.kind, e.cause) for e in both(engine.on_period(rec), "on_period", rec))
        if k % 120 == 119:
            for u in ("U1", "U2"):
                diff = rng.uniform(-8, 8)
                seen.update((e.kind, e.cause) for e in both(
                    engine.on_reconciliation(u, t, diff), "on_reconciliation", u, t, diff))
    # Every kind changed condition, and suppression came and went.
    assert {k for k, c in seen if c == "condition"} == {
        "threshold", "rate_of_change", "stale", "comm_loss", "intensity",
        "allowance_position", "capture_rate", "reconciliation_diff"}
    assert seen[("threshold", "suppress")] > 0 and seen[("threshold", "unsuppress")] > 0


# --- the sink: notifications, operator actions, modes -------------------------------------


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[AlarmEvent, tuple[str, ...]]] = []
        self.forgotten: list[str] = []
        self.started = self.stopped = False

    def notify(self, event: AlarmEvent, channels: Sequence[str]) -> None:
        self.sent.append((event, tuple(channels)))

    def forget(self, rule: str) -> None:
        self.forgotten.append(rule)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def states(self) -> list[tuple[str, str]]:
        return [(e.state, e.ack_state) for e, _ in self.sent]


MAIL = {"id": "mail", "kind": "email", "host": "127.0.0.1", "port": 25,
        "sender": "a@example.com", "to": ["b@example.com"]}
S1_RATE = {"id": "s1_rate", "name": "S1 rate", "target": {"source": "S1", "field": "co2_kg"},
           "warning": 4000.0, "alarm": 5000.0, "notify": ["mail"]}


def sink(*rules: dict[str, Any]) -> tuple[AlarmSink, FakeNotifier, list[AlarmEvent]]:
    cfg = two_unit_plant(list(rules) or [S1_RATE], channels=[MAIL])
    notifier = FakeNotifier()
    s = AlarmSink(cfg, notifier=notifier)
    journal: list[AlarmEvent] = []
    s.subscribe(journal.append)
    return s, notifier, journal


async def test_ack_is_journaled_not_announced() -> None:
    s, notifier, journal = sink()
    await s.start()
    assert notifier.started
    await s.on_minute(record(at(0), s1_kg=5200.0))
    assert not s.is_acknowledged("s1_rate")  # the notifier may repeat and escalate
    assert notifier.states() == [("alarm", UNACK)]
    assert notifier.sent[0][1] == ("mail",)
    audit = s.acknowledge("s1_rate", "alice", "load ramp, expected", at(1))
    assert audit == AuditRecord(at(1), "alice", "acknowledge", "s1_rate",
                                "load ramp, expected")
    assert [(e.cause, e.ack_state, e.user) for e in journal] == [
        ("condition", UNACK, ""), ("acknowledge", ACKED, "alice")]
    assert len(notifier.sent) == 1  # the acknowledgement is not sent to the channels
    assert s.is_acknowledged("s1_rate")
    await s.on_minute(record(at(1), s1_kg=3000.0))
    assert notifier.states()[-1] == ("normal", NORMAL)
    assert s.active() == [] and s.alarm_list() == []
    with pytest.raises(AlarmActionError, match="needs a comment"):
        s.acknowledge("s1_rate", "alice", "")
    with pytest.raises(KeyError, match="no alarm rule 'nope'"):
        s.acknowledge("nope", "alice", "x")
    await s.stop()
    assert notifier.stopped


async def test_returned_unacknowledged_stays_listed() -> None:
    s, _, _ = sink()
    await s.on_minute(record(at(0), s1_kg=4500.0))
    await s.on_minute(record(at(1), s1_kg=100.0))
    assert s.active() == []
    (listed,) = s.alarm_list()
    assert (listed.state, listed.ack_state) == ("normal", RTN_UNACK)
    s.acknowledge("s1_rate", "bob", "seen")
    assert s.alarm_list() == []


async def test_shelved_alarm_expires_on_the_minute() -> None:
    s, notifier, journal = sink()
    await s.on_minute(record(at(0), s1_kg=5200.0))
    audit = s.shelve("s1_rate", "carol", "analyser drift, tech called", at(10), at(1))
    assert (audit.action, audit.until) == ("shelve", at(10))
    assert s.is_acknowledged("s1_rate")  # shelved: no repeats, no escalation
    for m in range(1, 10):  # alarm → warning → alarm while shelved: journaled only
        await s.on_minute(record(at(m), s1_kg=4500.0 if m % 2 else 5500.0))
    assert len(notifier.sent) == 1
    assert {e.ack_state for e in journal[2:]} == {SHELVED}
    assert [e.ack_state for e in s.alarm_list()] == [SHELVED]
    await s.on_minute(record(at(10), s1_kg=5500.0))
    expired = [e for e in journal if e.cause == "shelve_expired"]
    assert len(expired) == 1 and expired[0].t == at(10)
    # It rose again while shelved (m9: warning, unacknowledged): announced when the shelf
    # ended; then the same minute's value (5500 ≥ 5000) raised it to alarm.
    assert [(e.cause, e.state, e.ack_state) for e, _ in notifier.sent[1:]] == [
        ("shelve_expired", "warning", UNACK), ("condition", "alarm", UNACK)]


async def test_unit_stop_suppresses_its_rules() -> None:
    site_rule = {"id": "site_kg", "target": {"site": True, "field": "co2_kg"},
                 "direction": "low", "alarm": 1000.0}
    s, notifier, journal = sink(S1_RATE, site_rule)
    await s.on_minute(record(at(0), s1_kg=3000.0))
    # U1 stops (flag F): its rule is suppressed; the site rule is not.
    await s.on_minute(record(at(1), s1_kg=5500.0, u1_flag=F.F, u1_kg=0.0))
    moves = [(e.rule, e.cause, e.state, e.ack_state) for e in journal]
    assert moves == [("s1_rate", "suppress", "normal", SUPPRESSED),
                     ("s1_rate", "condition", "alarm", SUPPRESSED),
                     ("site_kg", "condition", "alarm", UNACK)]
    assert [e.rule for e, _ in notifier.sent] == ["site_kg"]
    # Running again, S1 back to normal: the condition clears while still suppressed, then
    # the suppression ends, leaving nothing behind and announcing nothing.
    await s.on_minute(record(at(2), s1_kg=3000.0))
    assert [(e.rule, e.cause, e.ack_state) for e in journal[3:]] == [
        ("s1_rate", "condition", SUPPRESSED), ("site_kg", "condition", RTN_UNACK),
        ("s1_rate", "unsuppress", NORMAL)]
    assert [e.rule for e, _ in notifier.sent] == ["site_kg", "site_kg"]
    # Stopped again, and still in alarm when it restarts: announced at the restart.
    await s.on_minute(record(at(3), s1_kg=5500.0, u1_flag=F.F))
    await s.on_minute(record(at(4), s1_kg=5500.0))
    assert [(e.cause, e.ack_state) for e in journal[-3:]] == [
        ("suppress", SUPPRESSED), ("condition", SUPPRESSED), ("unsuppress", UNACK)]
    assert notifier.sent[-1][0].cause == "unsuppress"
    # Suppression can be switched off per rule.
    s2, _, j2 = sink({**S1_RATE, "suppress_when_stopped": False})
    await s2.on_minute(record(at(0), s1_kg=5500.0, u1_flag=F.F))
    assert [(e.cause, e.ack_state) for e in j2] == [("condition", UNACK)]


async def test_out_of_service_and_back() -> None:
    s, notifier, journal = sink()
    await s.on_minute(record(at(0), s1_kg=5500.0))
    s.remove_from_service("s1_rate", "eng", "CEMS maintenance", at(0.5))
    n = len(journal)
    for m in range(1, 4):
        await s.on_minute(record(at(m), s1_kg=100.0 if m % 2 else 5500.0))
    assert len(journal) == n  # not journaled while out of service
    assert [e.ack_state for e in s.alarm_list()] == [OUT_OF_SERVICE]
    s.return_to_service("s1_rate", "eng", "calibrated", at(3.5))
    assert journal[-1].ack_state == NORMAL
    # The bank's level was reset too: the next minute raises the alarm afresh.
    await s.on_minute(record(at(4), s1_kg=5500.0))
    assert (journal[-1].previous, journal[-1].state, journal[-1].ack_state) == (
        "normal", "alarm", UNACK)
    assert notifier.states()[-1] == ("alarm", UNACK)


async def test_device_event_raises_comm_loss_at_once() -> None:
    s, notifier, _ = sink({"id": "rtu", "kind": "comm_loss", "device": "cems1",
                           "notify": ["mail"]})
    s.on_device_event(DeviceEvent("cems1", "127.0.0.1:5020", at(0.2), True,
                                  "no reply from unit 1"))
    (ev, channels), = notifier.sent
    assert (ev.state, ev.t, ev.area, channels) == ("alarm", at(0.2), "U1", ("mail",))
    assert ev.message == "device cems1 communication lost: no reply from unit 1 [rule rtu]"
    await s.on_minute(record(at(1)))  # still in fault: no change
    s.on_device_event(DeviceEvent("cems1", "127.0.0.1:5020", at(1.5), False, "ok"))
    assert notifier.states()[-1] == ("normal", RTN_UNACK)


async def test_periods_drive_capture_reconciliation_and_forecast() -> None:
    s, notifier, journal = sink(
        {"id": "cap", "kind": "capture_rate", "source": "S1", "window_h": 3, "min_hours": 2,
         "alarm": 75.0},
        {"id": "rec", "kind": "reconciliation_diff", "unit": "U2", "alarm": 5.0},
        {"id": "fc", "kind": "allowance_position", "measure": "forecast_pct", "alarm": 100.0})
    # Capture: V then I → 1/2 = 50 % ≤ 75: alarm at the end of hour 1.
    await s.on_period(hour(0, "V"))
    await s.on_period(hour(1, "I"))
    assert [(e.rule, e.state, e.value, e.t) for e in journal] == [
        ("cap", "alarm", 50.0, hour(1, "I").t_end)]
    # A day with U2 6 % off the factor method.
    day = PeriodRecords("day", T0, at(1440), (), (), (
        UnitPeriod("U1", T0, 100.0, math.nan, 50.0, 2.0, True, F.N),
        UnitPeriod("U2", T0, 106.0, 100.0, 50.0, 2.1, True, F.N, 6.0, True)))
    await s.on_period(day)
    assert (journal[-1].rule, journal[-1].state, journal[-1].value) == ("rec", "alarm", 6.0)
    # The forecast needs the trailing 30 days from an hour's allowance position:
    # ytd 500 000 + 60 000/30 · (days left ≈ 244.7) ≈ 989 000 t < 1 000 000: normal …
    assert not any(e.rule == "fc" for e in journal)
    pos = AllowancePosition(1e6, 0, 0, 0, 60_000.0, 0, 0, 0, 0, 0, 0, 0)
    await s.on_period(PeriodRecords("hour", at(60), at(120), (), (), (), pos))
    await s.on_minute(record(at(121), ytd_t=500_000.0))
    assert not any(e.rule == "fc" for e in journal)
    # … and 520 000 t year to date makes it ≈ 1 009 000 t: ≥ 100 %, alarm.
    await s.on_minute(record(at(122), ytd_t=520_000.0))
    assert (journal[-1].rule, journal[-1].state) == ("fc", "alarm")
    assert journal[-1].value == pytest.approx(100.9, abs=0.1)
    # The notifier gets every announced event, with the rule's own channels (none here):
    # its routes may add channels by severity and area.
    assert [(e.rule, ch) for e, ch in notifier.sent] == [("cap", ()), ("rec", ()), ("fc", ())]


def test_engine_is_usable_without_the_sink() -> None:
    cfg = two_unit_plant([S1_RATE], channels=[MAIL])
    engine = AlarmEngine(cfg)
    ev = engine.on_minute(record(at(0), s1_kg=4100.0))
    assert [(e.rule, e.state, e.ack_state, e.kind, e.area) for e in ev] == [
        ("s1_rate", "warning", UNACK, "threshold", "U1")]
    assert engine.active() == ev
    audit, _ = engine.acknowledge("s1_rate", "op", "ok", at(1))
    assert audit.action == "acknowledge"
    assert engine.alarm("s1_rate").ack_state == ACKED
    assert isinstance(engine.specs[0].config.id, str)
    assert [type(r) for r in scalar_rules(cfg)] == [type(scalar_rules(cfg)[0])]
    assert issubclass(type(scalar_rules(cfg)[0]), ScalarRule)


# --- restore after a restart --------------------------------------------------------------

NS = {"suppress_when_stopped": False}
S1_KG = {"source": "S1", "field": "co2_kg"}
RESTORE_RULES: list[dict[str, Any]] = [
    {"id": "unack", "target": S1_KG, "warning": 4000.0, "alarm": 5000.0, **NS},
    {"id": "acked", "target": S1_KG, "warning": 4000.0, "alarm": 5000.0, "deadband": 300.0,
     **NS},
    {"id": "rtn", "target": {"source": "S1", "field": "co2_dry_pct"}, "alarm": 13.0, **NS},
    {"id": "shelf_acked", "target": S1_KG, "alarm": 5000.0, **NS},
    {"id": "shelf_unack", "target": S1_KG, "warning": 4000.0, **NS},
    {"id": "oos", "target": {"unit": "U1", "field": "co2_kg"}, "alarm": 9000.0, **NS},
    {"id": "supp", "target": S1_KG, "alarm": 5000.0},  # suppressed while U1 is stopped
    {"id": "delayed", "target": S1_KG, "alarm": 5000.0, "on_delay_min": 2,
     "off_delay_min": 2, **NS},
    {"id": "stale", "kind": "stale", "target": {"tag": "s1_co2", "field": "mean"},
     "warning_min": 2, "alarm_min": 3, **NS},
    {"id": "quiet", "target": S1_KG, "alarm": 50_000.0, **NS},
]


def moves(events: Sequence[AlarmEvent]) -> list[tuple[str, str, str, str, str]]:
    return [(e.rule, e.cause, e.previous, e.state, e.ack_state) for e in events]


async def test_restored_engine_goes_on_like_the_original(
        caplog: pytest.LogCaptureFixture) -> None:
    a, a_notifier, a_journal = sink(*RESTORE_RULES)
    await a.on_minute(record(at(0), s1_kg=5600.0, s1_co2=14.0, u1_kg=9500.0, s1_flag=F.D))
    a.acknowledge("acked", "op", "seen", at(0.5))
    a.acknowledge("shelf_acked", "op", "seen", at(0.5))
    a.shelve("shelf_acked", "op", "analyser check", at(7), at(0.5))
    a.shelve("shelf_unack", "op", "analyser check", at(8.5), at(0.5))
    a.remove_from_service("oos", "eng", "maintenance", at(0.5))
    await a.on_minute(record(at(1), s1_kg=5600.0, s1_co2=12.0, s1_flag=F.D))
    await a.on_minute(record(at(2), s1_kg=5600.0, s1_flag=F.D, u1_flag=F.F))
    await a.on_minute(record(at(3), s1_kg=5600.0, s1_flag=F.D, u1_flag=F.F))
    a.acknowledge("delayed", "op", "seen", at(3.5))
    assert {e.rule: e.ack_state for e in a.alarm_list()} == {
        "unack": UNACK, "acked": ACKED, "rtn": RTN_UNACK, "shelf_acked": SHELVED,
        "shelf_unack": SHELVED, "oos": OUT_OF_SERVICE, "supp": SUPPRESSED,
        "delayed": ACKED, "stale": UNACK}

    # The historian's last event of each rule, in any order, plus one of a deleted rule.
    last = list({e.rule: e for e in a_journal}.values())[::-1]
    gone = AlarmEvent("deleted_rule", at(1), "alarm", "normal", 1.0, 1.0, "site co2_kg",
                      "x", "x", ack_state=UNACK)
    unreadable = dataclasses.replace(gone, rule="quiet", state="critical")
    b, b_notifier, b_journal = sink(*RESTORE_RULES)
    caplog.set_level(logging.INFO, logger="alarms.engine")
    b.restore([*last, gone, unreadable])
    assert b_journal == [] and b_notifier.sent == []  # restore emits and notifies nothing
    assert [r.getMessage() for r in caplog.records if r.name == "alarms.engine"] == [
        "alarm states not restored for 1 rule(s) no longer configured: deleted_rule",
        "alarm rule quiet: its last event (critical, active-unacknowledged) cannot be "
        "restored; it starts normal"]
    assert b.alarm_list() == a.alarm_list()
    ids = [r["id"] for r in RESTORE_RULES]
    assert [b.is_acknowledged(r) for r in ids] == [a.is_acknowledged(r) for r in ids] == [
        False, True, False, True, True, True, True, True, False, True]

    n_a, n_sent = len(a_journal), len(a_notifier.sent)
    expected = {
        # A fall without deadband, the deadband holding "acked", the off-delay running,
        # the stale tag still stale (4 minutes), conditions under a shelf and suppression.
        4: [("unack", "condition", "alarm", "warning", UNACK),
            ("shelf_acked", "condition", "alarm", "normal", SHELVED),
            ("supp", "condition", "alarm", "normal", SUPPRESSED)],
        5: [("stale", "condition", "alarm", "normal", RTN_UNACK),
            ("supp", "unsuppress", "normal", "normal", RTN_UNACK)],
        6: [("acked", "condition", "alarm", "warning", ACKED),
            ("delayed", "condition", "alarm", "normal", NORMAL)],
        7: [("shelf_acked", "shelve_expired", "normal", "normal", NORMAL),
            ("unack", "condition", "warning", "alarm", UNACK),
            ("acked", "condition", "warning", "alarm", UNACK),
            ("shelf_acked", "condition", "normal", "alarm", UNACK),
            ("supp", "condition", "normal", "alarm", UNACK)],
        8: [],
        9: [("shelf_unack", "shelve_expired", "warning", "warning", UNACK),
            ("delayed", "condition", "normal", "alarm", UNACK)],
        10: [("oos", "return_to_service", "alarm", "normal", NORMAL)],
        11: [("oos", "condition", "normal", "alarm", UNACK)],
    }
    stopped = {4}
    kg = {4: 4800.0, 5: 4800.0, 6: 4600.0}
    for m, want in expected.items():
        for s in (a, b):
            if m == 10:
                s.return_to_service("oos", "eng", "calibrated", at(9.5))
            else:
                await s.on_minute(record(at(m), s1_kg=kg.get(m, 5600.0),
                                         s1_flag=F.D if m == 4 else F.N,
                                         u1_flag=F.F if m in stopped else F.N,
                                         u1_kg=9500.0 if m == 11 else 8000.0))
        got = a_journal[n_a:]
        assert moves(got) == want, f"minute {m}"
        assert list(map(key, b_journal)) == list(map(key, got)), f"minute {m}"
        n_a += len(got)
        del b_journal[:]
    assert [key(e) for e, _ in b_notifier.sent] == [key(e) for e, _ in a_notifier.sent[n_sent:]]
    assert b.alarm_list() == a.alarm_list()
    assert [b.is_acknowledged(r) for r in ids] == [a.is_acknowledged(r) for r in ids]


# --- rule changes at run time ---------------------------------------------------------------


async def test_change_rules_keeps_states_and_applies_new_levels() -> None:
    s, notifier, journal = sink(
        S1_RATE,
        {"id": "gone", "name": "Old rule", "target": S1_KG, "alarm": 5000.0},
        {"id": "quiet", "target": S1_KG, "alarm": 50_000.0},
        {"id": "kept_shelf", "target": S1_KG, "warning": 4000.0})
    changes: list[tuple[list[dict[str, Any]], str, str, datetime]] = []
    s.on_rules_changed(lambda *args: changes.append(args))
    await s.on_minute(record(at(0), s1_kg=5500.0))
    s.acknowledge("s1_rate", "op", "seen", at(0.5))
    s.shelve("kept_shelf", "op", "analyser check", at(20), at(0.5))
    before = s.rules_config()
    assert [r["id"] for r in before] == ["s1_rate", "gone", "quiet", "kept_shelf"]
    assert before[0] == {
        "id": "s1_rate", "name": "S1 rate", "notify": ["mail"], "suppress_when_stopped": True,
        "warning": 4000.0, "alarm": 5000.0, "deadband": 0.0, "on_delay_min": 0,
        "off_delay_min": 0, "kind": "threshold",
        "target": {"source": "S1", "unit": None, "tag": None, "site": False,
                   "field": "co2_kg"},
        "direction": "high"}

    # Refused: no comment; a bad level; a field the record does not have. Nothing changes.
    rules = [{**before[0], "alarm": 6000.0, "name": "S1 rate v2"}, before[3],
             {"id": "new", "target": S1_KG, "warning": 3000.0}]
    with pytest.raises(AlarmActionError, match=r"^change alarm rules: needs a comment$"):
        s.change_rules(rules, "eng", "  ", at(1))
    with pytest.raises(ConfigError) as err:
        s.change_rules([{**rules[0], "warning": "high"}], "eng", "limit review", at(1))
    assert [p for p, _ in err.value.problems] == ["alarms.rules[0].warning"]
    assert str(err.value).startswith("alarm rules change: alarms.rules[0].warning: ")
    with pytest.raises(ConfigError) as err:
        s.change_rules([rules[0], {**rules[2], "target": {"source": "S1", "field": "co2"}}],
                       "eng", "limit review", at(1))
    assert [p for p, _ in err.value.problems] == ["alarms.rules[1].target.field"]
    assert "unknown source field 'co2'" in str(err.value)
    assert s.rules_config() == before and changes == [] and len(journal) == 5

    new = s.change_rules(rules, " eng ", "limit review", at(1))
    assert [r["id"] for r in new] == ["s1_rate", "kept_shelf", "new"]
    assert new[0]["alarm"] == 6000.0 and new[0]["name"] == "S1 rate v2"
    assert new == s.rules_config()
    assert changes == [(new, "eng", "limit review", at(1))]
    # The removed rule in alarm ends with one journaled event; the normal one leaves none.
    removed = journal[5:]
    assert moves(removed) == [("gone", "removed", "alarm", "normal", NORMAL)]
    assert (removed[0].previous_ack_state, removed[0].user, removed[0].comment) == (
        UNACK, "eng", "limit review")
    assert removed[0].message == "rule removed by eng: limit review [rule gone: Old rule]"
    assert len(notifier.sent) == 3  # minute 0's three rises; the removal is not sent
    assert notifier.forgotten == ["gone", "quiet"]
    assert s.is_acknowledged("gone")
    assert {e.rule: e.ack_state for e in s.alarm_list()} == {
        "s1_rate": ACKED, "kept_shelf": SHELVED}
    assert s.is_acknowledged("s1_rate") and s.is_acknowledged("kept_shelf")
    assert s.engine.alarm("new").ack_state == NORMAL

    # The new alarm level applies at once: 5500 < 6000 is back to warning, still
    # acknowledged; the new rule starts normal and rises.
    await s.on_minute(record(at(2), s1_kg=5500.0))
    assert moves(journal[6:]) == [("s1_rate", "condition", "alarm", "warning", ACKED),
                                  ("new", "condition", "normal", "warning", UNACK)]
    assert journal[6].message == ("S1 co2_kg = 5500 < alarm level 6000, back to warning "
                                  "[rule s1_rate: S1 rate v2]")
    assert [e.rule for e, _ in notifier.sent[3:]] == ["s1_rate", "new"]
    await s.on_minute(record(at(3), s1_kg=3500.0))
    assert moves(journal[8:]) == [("s1_rate", "condition", "warning", "normal", NORMAL),
                                  ("kept_shelf", "condition", "warning", "normal", SHELVED)]
    assert {e.rule: e.ack_state for e in s.alarm_list()} == {"kept_shelf": SHELVED,
                                                             "new": UNACK}


async def test_changed_definition_keeps_alarm_state_and_level() -> None:
    s, _, journal = sink(S1_RATE)
    await s.on_minute(record(at(0), s1_kg=5500.0))
    s.acknowledge("s1_rate", "op", "seen", at(0.5))
    # Now on U1's CO2 (8000 kg): still ≥ 5000, so no new alarm, still acknowledged …
    rule = {**s.rules_config()[0], "target": {"unit": "U1", "field": "co2_kg"}}
    s.change_rules([rule], "eng", "watch the unit", at(1))
    await s.on_minute(record(at(2), s1_kg=100.0, u1_kg=8000.0))
    assert journal[2:] == []
    assert s.alarm_list()[0].ack_state == ACKED
    # … and the next event names the new target.
    await s.on_minute(record(at(3), s1_kg=100.0, u1_kg=100.0))
    assert moves(journal[2:]) == [("s1_rate", "condition", "alarm", "normal", NORMAL)]
    assert journal[2].target == "unit U1 co2_kg"


async def test_delays_and_suppression_across_a_change() -> None:
    delayed = {"target": S1_KG, "alarm": 5000.0, "on_delay_min": 2, **NS}
    s, _, journal = sink({"id": "limits_only", **delayed}, {"id": "retargeted", **delayed},
                         {"id": "supp", "target": S1_KG, "alarm": 5000.0})
    await s.on_minute(record(at(0), s1_kg=5500.0, u1_flag=F.F))  # on-delays start; U1 stops
    assert moves(journal) == [("supp", "suppress", "normal", "normal", SUPPRESSED),
                              ("supp", "condition", "normal", "alarm", SUPPRESSED)]
    rules = s.rules_config()
    rules[0]["alarm"] = 5200.0  # same definition: its on-delay goes on
    rules[1]["target"] = {"unit": "U1", "field": "co2_kg"}  # new definition: starts afresh
    s.change_rules(rules, "eng", "review", at(0.5))
    for m in (1, 2, 3):
        await s.on_minute(record(at(m), s1_kg=5500.0, u1_kg=8000.0))
    assert [(e.rule, e.cause, e.ack_state, e.t) for e in journal[2:]] == [
        ("supp", "unsuppress", UNACK, at(1)),  # U1 runs again, still in alarm: announced
        ("limits_only", "condition", UNACK, at(2)),
        ("retargeted", "condition", UNACK, at(3))]


def test_change_rules_keeps_every_kind_of_evaluation_state() -> None:
    """Shuffled, some removed, some added: the kept rules go on exactly as in an engine
    whose rules never changed (levels, delays, histories, windows, hours, faults)."""
    rng = random.Random(1)  # kept rules of every kind, window and rate-of-change span
    rules = random_rules(rng, 96)
    cfg = two_unit_plant(rules)
    same, changed = AlarmEngine(cfg), AlarmEngine(cfg)
    added = [{**r, "id": f"new{i}"} for i, r in enumerate(random_rules(random.Random(6), 8))]
    keep = [r for i, r in enumerate(rules) if i % 9 != 4]
    rng.shuffle(keep)
    new_cfg = with_alarm_rules(cfg, [*keep, *added], "test")
    kept_ids = {r["id"] for r in keep}
    start = datetime(2024, 3, 31, 15, 0, tzinfo=UTC)
    feed = random.Random(8)
    compared, at_change = 0, 0
    for k in range(600):
        t = start + timedelta(minutes=k)
        # Change once past minute 300 while kept rules are suppressed (a unit stopped).
        if not at_change and k >= 300 and any(
                a.suppressed for a in same.alarms if a.info.rule in kept_ids):
            at_change = k
            removed = changed.change_rules(new_cfg, "eng", "review", t)
            assert {e.rule for e in removed} <= {r["id"] for r in rules} - kept_ids
            assert all(e.cause == "removed" and e.ack_state == NORMAL for e in removed)
        res = random_minute(t, feed)
        calls: list[tuple[str, tuple[Any, ...]]] = [("on_minute", (res,))]
        if feed.random() < 0.03:
            calls.append(("on_device_event", (DeviceEvent(
                "cems1", "bus", t + timedelta(seconds=20), feed.random() < 0.5, "timeout"),)))
        if k % 60 == 59:
            srcs = tuple(PeriodResult(s, t, 0, 0, 0, 0, 0, feed.random() < 0.7,
                                      feed.choice([F.N, F.N, F.D, F.F]), 45)
                         for s in ("S1", "S2"))
            pos = AllowancePosition(1e6, 0, 0, 0, feed.uniform(1000, 90_000), 0, 0, 0, 0, 0,
                                    0, 0)
            calls.append(("on_period", (PeriodRecords(
                "hour", t - timedelta(minutes=59), t + timedelta(minutes=1), srcs, (), (),
                pos),)))
        if k % 120 == 119:
            calls += [("on_reconciliation", (u, t, feed.uniform(-8, 8))) for u in ("U1", "U2")]
        for method, args in calls:
            a = getattr(same, method)(*args)
            b = getattr(changed, method)(*args)
            if not at_change:
                assert list(map(key, a)) == list(map(key, b))
                continue
            a = [e for e in a if e.rule in kept_ids]
            b_kept = [e for e in b if e.rule in kept_ids]
            assert sorted(map(key, a)) == sorted(map(key, b_kept)), f"minute {k} {method}"
            compared += len(a)
    assert at_change and compared > 100
    assert [s.id for s in changed.specs] == [r["id"] for r in [*keep, *added]]
    assert {e.rule for e in changed.alarm_list()} <= kept_ids | {r["id"] for r in added}
