"""Entries on the running server (server/records.py): a correction and a lab entry change
the stored hours, keep the originals, are audited, move the allowance by the right amount,
and `recalc --entries` reproduces every stored hour; locks refuse changes.

Hours of 30 s (0.5 s minutes), the fixture plant with a coal feeder and a power meter, as
test_recalc.py's restart test.
"""

from __future__ import annotations

import asyncio
import csv
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from model.flags import DataFlag
from model.records import PeriodRecords, RevisedPeriod
from server.audit import AuditLog
from server.config import parse_plant
from server.historian import Historian
from server.records import LockedError, RecordsError
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from tests.fixtures.victoria import VictoriaMetrics
from tests.server.test_influx import series

REPO = Path(__file__).resolve().parents[2]
CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
MINUTE_S = 0.5
HOUR_S = 60 * MINUTE_S


def plant(tmp: Path) -> dict[str, Any]:
    d = plant_dict(free_port(), var_dir=str(tmp / "var"), minute_seconds=MINUTE_S)
    d["clock"]["min_samples_per_minute"] = 3
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    dev = d["devices"][0]
    dev["poll_interval_s"] = 0.04
    for tag in dev["tags"]:  # noisy, load-following values: nothing trivial
        v = tag["sim"]["value"]
        tag["sim"] = {"min": v * 0.9, "max": v * 1.1, "noise": abs(v) * 0.01}
    dev["tags"].append({"id": "u1_coal", "register": 30, "unit": "t/h",
                        "sim": {"min": 90.0, "max": 110.0, "noise": 1.0}})
    d["factor_table"] = str(REPO / "config" / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["allowance"] = {"annual_t": 1_000_000.0, "carbon_price_cny_t": 80.0}
    d["units"][0]["sources"][0]["substitution"] = {"rule": "mrr_mean_2sigma", "lookback_h": 3}
    d["units"][0]["streams"] = [{"id": "U1_coal", "kind": "solid_fuel", "factors": "demo_coal",
                                 "rate_per_h": {"tag": "u1_coal"}}]
    return d


async def stored_hours(rt: Runtime) -> list[PeriodRecords]:
    far = timedelta(days=30)
    now = datetime.now(UTC)
    return await rt.historian.periods("hour", now - far, now + far)


async def wait_hours(rt: Runtime, n: int, timeout_s: float) -> list[PeriodRecords]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        hours = await stored_hours(rt)
        if len(hours) >= n or asyncio.get_running_loop().time() > deadline:
            return hours
        await asyncio.sleep(0.2)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CARBONSCADA, *args], capture_output=True, text=True, timeout=180,
                          check=False)


# Four plant hours of 30 s, then export-samples, entries and recalc as processes: 112 s
# alone, past the 120-s default on a loaded two-worker run (the guard is for hangs).
@pytest.mark.timeout(300)
async def test_a_correction_and_a_lab_entry_on_the_running_server(
        tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    d = plant(tmp_path)
    d["influx"] = {"url": victoria_metrics.url, "outbox_path": str(tmp_path / "outbox.sqlite"),
                   "flush_interval_s": 0.2, "raw_samples": False}
    loaded = parse_plant(d, "test")
    begin = datetime.now(UTC) - timedelta(seconds=30)
    rt = Runtime(loaded)
    await rt.start()
    try:
        hours = await wait_hours(rt, 3, 130.0)
        assert len(hours) >= 3, "the server closed fewer than 3 hours in 130 s"
        target = hours[1]  # a whole hour (the first may be partial)
        s1 = target.sources[0]
        assert s1.valid and s1.flag is DataFlag.N
        later_before = {h.t: h.allowance for h in hours if h.t > target.t}

        # --- a correction of the hour's CO2: +10 t
        fix = await rt.records.enter("engineer", {
            "kind": "correction", "target": "source:S1", "level": "hour",
            "t": target.t.isoformat(), "values": {"co2_t": s1.co2_t + 10.0},
            "reason": "analyser drift found at the monthly check"})
        assert fix["hours"] >= 2 and fix["rows_revised"] >= 1
        after = {h.t: h for h in await stored_hours(rt)}
        now_s1 = after[target.t].sources[0]
        assert now_s1.co2_t == s1.co2_t + 10.0
        assert (now_s1.valid, now_s1.flag) == (True, DataFlag.S)
        assert now_s1.co2_measured_t == s1.co2_measured_t  # the measurement stays
        # every later hour's year to date moved by exactly the 10 t
        for t, a in later_before.items():
            b = after[t].allowance
            assert a is not None and b is not None
            assert b.ytd_t - a.ytd_t == pytest.approx(10.0, abs=1e-6), t
        # the original row is kept, naming the entry
        history = await rt.records.history("source_hour", "S1", target.t)
        (orig,) = history["versions"]
        assert orig["row"]["co2_t"] == s1.co2_t and orig["row"]["flag"] == "N"
        assert orig["replaced_by"]["id"] == fix["entry"]["id"]
        assert orig["replaced_by"]["reason"] == "analyser drift found at the monthly check"
        assert history["current"]["co2_t"] == s1.co2_t + 10.0

        # --- a correction of one stored minute: CO2 set to 20 %
        m_t = hours[-1].t  # the first minute of the last closed hour
        src_before = await rt.historian.current_row("source_minute", "S1", m_t)
        unit_before = await rt.historian.current_row("unit_minute", "U1", m_t)
        assert src_before is not None and unit_before is not None
        await rt.records.enter("engineer", {
            "kind": "correction", "target": "source:S1", "level": "minute",
            "t": m_t.isoformat(), "values": {"co2_dry_pct": 20.0},
            "reason": "span gas left on the probe"})
        src_after = await rt.historian.current_row("source_minute", "S1", m_t)
        unit_after = await rt.historian.current_row("unit_minute", "U1", m_t)
        assert src_after is not None and unit_after is not None
        # G = C/100 · ρ · Q kg/h over the minute (ρ = 1.964 kg/m³; a minute of 0.5 s here)
        rate = 20.0 / 100.0 * 1.964 * src_before["flow_std_dry_m3_h"]
        assert src_after["co2_rate_kg_h"] == pytest.approx(rate, rel=1e-12)
        assert src_after["co2_kg"] == pytest.approx(rate * MINUTE_S / 3600.0, rel=1e-12)
        assert (src_after["flag"], src_after["valid"]) == ("S", 1)
        # the unit's only source: the unit minute's mass is the source's, flag S
        assert unit_after["co2_kg"] == src_after["co2_kg"]
        assert (unit_after["flag"], unit_after["valid"]) == ("S", 1)
        # InfluxDB has the corrected minute in the series of flag S, the first one marked
        m_ms = int(m_t.timestamp() * 1000)
        src = {("site", loaded.config.site.id), ("unit", "U1"), ("source", "S1")}
        for _ in range(50):
            got = series(victoria_metrics, '{__name__=~"co2_source_(co2_kg|superseded)"}')
            if ("co2_source_co2_kg", frozenset({*src, ("flag", "S")})) in got:
                break
            await asyncio.sleep(0.2)
        # (VictoriaMetrics keeps 12 significant digits)
        now_s = dict(got[("co2_source_co2_kg", frozenset({*src, ("flag", "S")}))])
        assert now_s[m_ms] == pytest.approx(src_after["co2_kg"], rel=1e-11)
        first = frozenset({*src, ("flag", src_before["flag"])})
        assert dict(got[("co2_source_co2_kg", first)])[m_ms] == pytest.approx(
            src_before["co2_kg"], rel=1e-11)
        assert dict(got[("co2_source_superseded", first)])[m_ms] == 1.0
        # the running year to date (CO2YearToDate) moved with it: it equals the stored
        # minutes' sum again once the next minute was added
        clock = rt.clock
        for _ in range(50):
            await asyncio.sleep(MINUTE_S / 2)
            now = datetime.now(UTC)
            sums = await rt.historian.period_sums("source_minute", "co2_kg", (
                clock.hour_start(now), clock.day_start(now), clock.year_start(now)))
            running = rt.cycle.totals.get("S1.co2_kg").year
            if running == pytest.approx(sums["S1"][2], rel=1e-9):
                break
        else:
            raise AssertionError(f"running year {running} kg, stored minutes {sums['S1'][2]}")

        # --- a lab entry: the coal's NCV of this month, in force from the first hour
        lab = await rt.records.enter("engineer", {
            "kind": "factor", "factors": "demo_coal", "effective_from": hours[0].t.isoformat(),
            "values": {"ncv_gj_t": 18.5, "cc_tc_gj": 0.0290}, "units": {"ncv_gj_t": "GJ/t"},
            "document": "LAB-2026-12-001"})
        version = lab["entry"]["factor_version"]
        for hour in (await stored_hours(rt))[:3]:
            coal = hour.streams[0]
            assert coal.factor_version == version
            # quantity · 18.5 GJ/t · 0.0290 tC/GJ · 0.99 (OF of the version before) · 44/12
            assert coal.co2_t == pytest.approx(
                coal.quantity * 18.5 * 0.0290 * 0.99 * 44.0 / 12.0, rel=1e-12)

        # --- refused entries name what is wrong
        with pytest.raises(RecordsError, match="not the start of a plant hour"):
            await rt.records.enter("engineer", {
                "kind": "correction", "target": "source:S1", "level": "hour",
                "t": (target.t + timedelta(seconds=1)).isoformat(), "values": {"co2_t": 1.0},
                "reason": "x"})
        with pytest.raises(RecordsError, match="source 'S9' is not configured"):
            await rt.records.enter("engineer", {
                "kind": "correction", "target": "source:S9", "level": "hour",
                "t": target.t.isoformat(), "values": {"co2_t": 1.0}, "reason": "x"})
        with pytest.raises(RecordsError, match="reason"):
            await rt.records.enter("engineer", {
                "kind": "correction", "target": "source:S1", "level": "hour",
                "t": target.t.isoformat(), "values": {"co2_t": 1.0}})
        with pytest.raises(RecordsError, match="unit 'U1' has its output in MWh: set "
                                               "output_mwh, not output_t"):
            await rt.records.enter("engineer", {
                "kind": "correction", "target": "unit:U1", "level": "hour",
                "t": target.t.isoformat(), "values": {"output_t": 1.0}, "reason": "x"})
        with pytest.raises(RecordsError, match="quantity is in t, not 'kg'"):
            await rt.records.enter("engineer", {
                "kind": "quantity", "target": "stream:U1_coal", "level": "hour",
                "t": target.t.isoformat(), "value": 1.0, "unit": "kg", "document": "W-1"})

        # --- a lock refuses corrections until it is unlocked
        lock = await rt.records.enter("admin", {
            "kind": "lock", "start": hours[0].t.isoformat(),
            "end": (target.t + timedelta(seconds=HOUR_S)).isoformat(), "reason": "reported"})
        with pytest.raises(LockedError, match="is locked"):
            await rt.records.enter("engineer", {
                "kind": "correction", "target": "source:S1", "level": "hour",
                "t": target.t.isoformat(), "values": {"co2_t": 1.0}, "reason": "again"})
        assert [x["id"] for x in rt.records.locks()] == [lock["entry"]["id"]]
        assert rt.records.locked_ranges() == [(hours[0].t, target.t + timedelta(
            seconds=HOUR_S))]
        await rt.records.enter("admin", {"kind": "unlock", "lock": lock["entry"]["id"],
                                         "reason": "resubmission asked by the regulator"})
        assert rt.records.locks() == []

        # --- QA checks entered afterwards re-flag the stored minutes
        def span_check(t: datetime, measured: float) -> dict[str, Any]:
            return {"kind": "qa_check", "source": "S1", "t": t.isoformat(), "check": "span",
                    "parameter": "co2", "reference_value": 10.0, "measured_value": measured,
                    "full_scale": 20.0, "unit": "%"}

        async def flags(start: datetime, end: datetime) -> tuple[set[str], set[str]]:
            """The flags of the stored minutes, but the one corrected by hand above (S)."""
            src = await rt.historian.minute_rows("source_minute", ["S1"], start, end)
            unit = await rt.historian.minute_rows("unit_minute", ["U1"], start, end)
            assert src and unit, (start, end)
            return ({r["flag"] for (_, t), r in src.items() if t != m_t},
                    {r["flag"] for (_, t), r in unit.items() if t != m_t})

        async def hand_set() -> tuple[str, str]:
            src = await rt.historian.current_row("source_minute", "S1", m_t)
            unit = await rt.historian.current_row("unit_minute", "U1", m_t)
            assert src is not None and unit is not None
            return src["flag"], unit["flag"]

        t_fail = hours[1].t + timedelta(seconds=5)  # 10 plant minutes into the hour
        t_pass = hours[2].t + timedelta(seconds=5)
        # (13.0 − 10.0) / 20 = 15 % F.S. > 10 %: out of control from t_fail on
        await rt.records.enter("engineer", span_check(t_fail, 13.0))
        before_fail = await flags(hours[1].t, t_fail)
        assert "D" not in before_fail[0] | before_fail[1]
        assert await flags(t_fail, hours[-1].t_end) == ({"D"}, {"D"})
        assert await hand_set() == ("S", "S")  # a minute set by hand keeps S
        # (10.2 − 10.0) / 20 = 1 % F.S.: passed, in control again from t_pass
        await rt.records.enter("engineer", span_check(t_pass, 10.2))
        assert await flags(t_fail, t_pass) == ({"D"}, {"D"})
        after_pass = await flags(t_pass, hours[-1].t_end)
        assert "D" not in after_pass[0] | after_pass[1], after_pass
        assert await hand_set() == ("S", "S")

        # the running sums of valid minutes (today's intensity) follow the flags
        for _ in range(50):
            await asyncio.sleep(MINUTE_S / 2)
            now = datetime.now(UTC)
            valid = await rt.historian.period_sums("unit_minute", "co2_kg", (
                clock.hour_start(now), clock.day_start(now), clock.year_start(now)),
                valid_only=True)
            running = rt.cycle.totals.get("U1.co2_valid_kg").year
            if running == pytest.approx(valid["U1"][2], rel=1e-9):
                break
        else:
            raise AssertionError(f"running valid {running} kg, stored {valid['U1'][2]}")

        n_before = len(await stored_hours(rt))
        await wait_hours(rt, n_before + 1, 35.0)  # the live hours go on after the entries
    finally:
        await rt.stop()
    end = datetime.now(UTC) + timedelta(seconds=5)

    # The audit log has every entry, and its chain verifies.
    log = AuditLog(loaded.config.historian.path)
    actions = [e.action for e in log.entries()]
    assert {"entry_correction", "entry_factor", "entry_lock", "entry_unlock"} <= set(actions)

    # recalc with the exported entries reproduces every stored hour, bit for bit.
    cfg_file = tmp_path / "plant.yaml"
    cfg_file.write_text(yaml.safe_dump(d, allow_unicode=True), encoding="utf-8")
    samples, entries, out = tmp_path / "s.csv", tmp_path / "e.csv", tmp_path / "h.csv"
    r = cli("export-samples", "-c", str(cfg_file), "--from", begin.isoformat(), "--to",
            end.isoformat(), "--out", str(samples))
    assert r.returncode == 0, r.stderr
    r = cli("entries", "-c", str(cfg_file), "--out", str(entries))
    assert r.returncode == 0, r.stderr
    r = cli("recalc", "-c", str(cfg_file), "--samples", str(samples), "--entries",
            str(entries), "--out", str(out), "--level", "hour")
    assert r.returncode == 0, r.stderr
    rows = {row["period_start"]: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    h = Historian(loaded.config.historian.path)
    await h.start()
    try:
        stored = await h.periods("hour", begin, end)
    finally:
        await h.stop()
    assert len(stored) >= 3
    for rec in stored:
        (s,) = rec.sources
        row = rows[s.t.isoformat(timespec="microseconds").replace("+00:00", "Z")]
        for f in ("co2_t", "co2_measured_t", "co2_dry_pct", "flow_std_dry_m3_h"):
            value = getattr(s, f)
            assert row[f] == ("" if math.isnan(value) else repr(value)), (s.t, f)
        assert (row["valid"], row["flag"]) == (str(int(s.valid)), s.flag.name)
    assert any(row["flag"] == "S" for row in rows.values())


class _Taken:
    """A period sink that keeps what it is given (the interface, nothing else)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.periods: list[tuple[str, datetime]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def on_samples(self, block: Any) -> None:
        pass

    async def on_minute(self, result: Any) -> None:
        pass

    async def on_period(self, records: PeriodRecords) -> None:
        self.periods.append((records.level, records.t))


class _TakenRevised(_Taken):
    """A sink that tells recalculated periods apart (as the HJ 212 uplink does)."""

    async def on_revised_period(self, revised: RevisedPeriod) -> None:
        self.periods.append(("revised " + revised.records.level, revised.records.t))


async def test_recalculated_periods_reach_the_alarm_rules_only_as_the_latest(
        tmp_path: Path) -> None:
    # A correction recalculates many hours; the alarm rules must see only the latest hour
    # and day again (the capture-rate window would count an old hour twice, and an alarm
    # would be raised and notified about a past already seen), every other sink all.
    from server.sinks import QueuedSink
    rt = Runtime(parse_plant(plant(tmp_path), "test"))
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    hours = [PeriodRecords("hour", t0 + timedelta(hours=i), t0 + timedelta(hours=i + 1),
                           (), (), ()) for i in range(30)]
    day = PeriodRecords("day", t0, t0 + timedelta(days=1), (), (), ())
    closed = [*hours[:24], day, *hours[24:]]
    other, alarms, uplink = _Taken("opcua"), _Taken("alarms"), _TakenRevised("hj212")
    rt._sinks = [QueuedSink(other), QueuedSink(alarms), QueuedSink(uplink)]
    rt._alarms = alarms  # type: ignore[assignment]
    for s in rt._sinks:
        await s.start()
    rt._publish_revised(closed)
    for s in rt._sinks:
        await s.stop()
    assert other.periods == [(r.level, r.t) for r in closed]
    assert alarms.periods == [("day", t0), ("hour", hours[-1].t)]
    assert uplink.periods == [("revised " + r.level, r.t) for r in closed]


class _Records(_TakenRevised):
    """A sink keeping the hours it is given: as closed live, and as recalculated."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.live: dict[datetime, PeriodRecords] = {}
        self.revised: dict[datetime, PeriodRecords] = {}

    async def on_period(self, records: PeriodRecords) -> None:
        if records.level == "hour":
            self.live[records.t] = records

    async def on_revised_period(self, revised: RevisedPeriod) -> None:
        if revised.records.level == "hour":
            self.revised[revised.records.t] = revised.records


@pytest.mark.long  # and this file's first test, 112 s: the file starts first
@pytest.mark.timeout(180)
async def test_an_entry_recalculates_with_the_minutes_still_queued_for_the_historian(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A loaded machine (a slow disk): the historian writes the minutes later than they are
    # calculated. An entry made just after an hour closed recalculated that hour from the
    # raw windows stored so far, without its last minutes, and sent the lacking hour to
    # every sink and into the live hours the day is made of. It now waits for the
    # historian to store what it was handed.
    from server import runtime as rt_mod
    taken = _Records("records")
    entry = rt_mod.SinkEntry("records", lambda c: True, lambda r, c, a: taken)
    monkeypatch.setattr(rt_mod, "SINKS", (*rt_mod.SINKS, entry))
    rt = Runtime(parse_plant(plant(tmp_path), "test"))
    gate = asyncio.Event()
    gate.set()
    store_minute = rt.historian.on_minute

    async def slow_minute(result: Any) -> None:
        await gate.wait()
        await store_minute(result)
    monkeypatch.setattr(rt.historian, "on_minute", slow_minute)
    await rt.start()
    try:
        hours = await wait_hours(rt, 1, 50.0)  # the first, maybe partial: to correct
        assert hours
        gate.clear()  # from now on the historian holds the minutes back
        held = rt.periods.open_hour
        async with asyncio.timeout(40):
            while rt.periods.open_hour == held:
                await asyncio.sleep(0.05)
        assert held is not None and held in taken.live  # closed live, minutes not stored
        asyncio.get_running_loop().call_later(1.0, gate.set)  # the disk catches up
        await rt.records.enter("engineer", {
            "kind": "correction", "target": "source:S1", "level": "hour",
            "t": hours[0].t.isoformat(), "values": {"co2_t": 1000.0},
            "reason": "analyser drift found at the monthly check"})
    finally:
        await rt.stop()
    live, again = taken.live[held].sources[0], taken.revised[held].sources[0]
    assert live.n_valid >= 45 and live.valid
    assert (again.n_valid, again.co2_t, again.valid) == (live.n_valid, live.co2_t, True)
