"""AlarmEngine / AlarmSink: the vectorised bank against the scalar rules, operator actions,
suppression, shelving, periods, device events and the notifier seam."""

from __future__ import annotations

import copy
import math
import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alarms.engine import AlarmEngine, AlarmSink
from alarms.rules import MinuteContext, ScalarRule, scalar_rules
from alarms.state import (
    ACKED,
    NORMAL,
    OUT_OF_SERVICE,
    RTN_UNACK,
    SHELVED,
    SUPPRESSED,
    UNACK,
    AlarmActionError,
    AuditRecord,
)
from compute.clock import PlantClock
from server.config import PlantConfig, parse_config
from server.records import (
    AlarmEvent,
    AllowancePosition,
    DataFlag,
    DeviceEvent,
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    SiteMinute,
    SourceMinute,
    TagMinute,
    UnitMinute,
    UnitPeriod,
)
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
    scalar = scalar_rules(cfg)
    clock = PlantClock(60.0, "Asia/Shanghai")
    start = datetime(2024, 3, 31, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai, an hour to April
    trailing = math.nan
    seen: Counter[tuple[str, str]] = Counter()

    def both(events: list[AlarmEvent], method: str, *args: Any) -> list[AlarmEvent]:
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
        self.started = self.stopped = False

    def notify(self, event: AlarmEvent, channels: Sequence[str]) -> None:
        self.sent.append((event, tuple(channels)))

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


async def test_without_notifier_only_email_channels_are_sent() -> None:
    cfg = two_unit_plant([S1_RATE], channels=[MAIL])
    s = AlarmSink(cfg, retry_delays_s=())
    assert set(s.channels) == {"mail"}
    await s.on_minute(record(at(0), s1_kg=5500.0))
    assert len(s._sends) == 1  # the built-in email path took it
    await s.stop()


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
