"""Automatic zero and span checks on the running server (server/qacapture.py): the
analyser's calibration status tag and its reading, served by the Modbus simulator, give a
failed span check that the record keeper records by itself; the hours after it are invalid
(D) and substituted until a passed automatic check closes the interval.

Hours of 27 s (0.45 s minutes, about the fastest the sped-up plant clock takes), an hour
valid from 10 valid minutes: the fixture plant with its constant worked-example inputs
(minute mass 3282.70 kg, an hour 196.962 t) and a calibration status register. Timeline:
the failed check a few seconds into an hour Hc (still valid from its first minutes), Hc+1
wholly out of control, the passed check at the start of Hc+2, minutes measured after it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.config import SimConfig
from model.flags import DataFlag
from model.records import PeriodRecords, SampleBlock, TagTable
from server.config import parse_config, parse_plant
from server.qacapture import QaCapture
from server.records import RecordsError
from server.runtime import Runtime
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

MINUTE_S = 0.45
HOUR_S = 60 * MINUTE_S
HOUR_T = 196.962  # the worked example's 3282.70 kg a minute · 60
CAL_S = 1.5  # how long each calibration holds the status on


def plant(tmp: Path) -> dict[str, Any]:
    d = plant_dict(free_port(), var_dir=str(tmp / "var"), minute_seconds=MINUTE_S)
    d["clock"]["min_samples_per_minute"] = 3
    d["clock"]["min_valid_minutes_per_hour"] = 10
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    dev = d["devices"][0]
    dev["poll_interval_s"] = 0.02
    dev["tags"].append({"id": "s1_cal", "register": 30, "sim": {"value": 0.0}})
    src = d["units"][0]["sources"][0]
    src["substitution"] = {"rule": "max_previous_n", "n_hours": 1, "lookback_h": 24}
    # The analyser reads the span gas on its measurement tag while s1_cal is non-zero.
    src["qa"] = {"calibration_tag": "s1_cal", "auto": [{
        "parameter": "co2", "check": "span", "reading_tag": "s1_co2", "reference_value": 15.0,
        "full_scale": 25.0, "unit": "%", "average_s": 0.5, "min_samples": 3}]}
    return d


def set_sim(rt: Runtime, values: dict[str, float]) -> None:
    """What the simulator serves from its next register update on (0.5 s at most)."""
    for sim in rt.simulators:
        for maps in sim._endpoints.values():  # type: ignore[attr-defined]
            for m in maps:
                for tag, sv in m._values:
                    if tag.id in values:
                        sv.sim = SimConfig(value=values[tag.id])


async def stored_hours(rt: Runtime) -> list[PeriodRecords]:
    far = timedelta(days=30)
    now = datetime.now(UTC)
    return await rt.historian.periods("hour", now - far, now + far)


async def wait_for(what: str, cond: Any, timeout_s: float) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = await cond()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)


async def calibrate(rt: Runtime, span_reading: float) -> None:
    set_sim(rt, {"s1_cal": 1.0, "s1_co2": span_reading})
    await asyncio.sleep(CAL_S)
    set_sim(rt, {"s1_cal": 0.0, "s1_co2": 12.0})


async def test_failed_then_passed_automatic_span_check(tmp_path: Path) -> None:
    rt = Runtime(parse_plant(plant(tmp_path), "test"))
    await rt.start()
    clock = rt.clock
    try:
        bounds = await wait_for("a first minute", rt.historian.minute_bounds, 20.0)
        # The failed check starts once 12 minutes (5.4 s) of an hour were measured, and
        # ends (CAL_S, +0.5 s register update) well before that hour ends.
        first = bounds[0]
        start = first + timedelta(seconds=5.6)
        if clock.next_hour(first) - start < timedelta(seconds=CAL_S + 3.0):
            start = clock.next_hour(first) + timedelta(seconds=5.6)
        await asyncio.sleep(max((start - datetime.now(UTC)).total_seconds(), 0.0))

        # --- the analyser's span check reads 18.0 on 15.0 % gas: (18 − 15) / 25 · 100 =
        # 12 % F.S., beyond the 10 % out-of-control index
        await calibrate(rt, 18.0)

        async def checks(n: int) -> list[dict[str, Any]] | None:
            got = rt.records.entries("qa_check")
            return got if len(got) >= n else None
        (fail,) = await wait_for("the failed check recorded", lambda: checks(1), 5.0)
        assert fail["user"] == "system" and fail["target"] == "S1"
        assert fail["fields"]["measured_value"] == 18.0  # a float32 register: 18 exactly
        assert fail["result"]["drift_pct_fs"] == pytest.approx(12.0, abs=1e-9)
        assert fail["result"]["status"] == "out_of_control"
        assert fail["document"].startswith("auto: s1_cal ")
        t_fail = datetime.fromisoformat(fail["t"])
        assert rt.records.out_of_control()["S1"] == [{"start": t_fail.isoformat(), "end": None}]
        # the check is made at the falling edge: the calibration held about CAL_S (the
        # simulator updates its registers every 0.5 s)
        t0 = datetime.fromisoformat(fail["document"].split(" ")[2].split("–")[0])
        assert 0.9 <= (t_fail - t0).total_seconds() <= CAL_S + 0.7
        hc = clock.hour_start(t_fail)

        # --- the passed check (15.2: 0.8 % F.S.) once Hc+1 is over: Hc+1 wholly between
        hc2 = clock.next_hour(clock.next_hour(hc))
        await asyncio.sleep((hc2 - datetime.now(UTC)).total_seconds() + 0.2)
        await calibrate(rt, 15.2)
        _, passed = await wait_for("the passed check recorded", lambda: checks(2), 5.0)
        assert passed["fields"]["measured_value"] == pytest.approx(15.2, abs=1e-5)
        assert passed["result"]["drift_pct_fs"] == pytest.approx(0.8, abs=1e-4)
        assert passed["result"]["status"] == "pass"
        t_pass = datetime.fromisoformat(passed["t"])
        assert rt.records.out_of_control()["S1"] == [
            {"start": t_fail.isoformat(), "end": t_pass.isoformat()}]

        # --- Hc: valid from its minutes before the check; Hc+1: invalid D, substituted by
        # the last valid hour (max_previous_n of 1: Hc, the same concentration and flow)
        async def hours_to(t: datetime) -> dict[datetime, Any] | None:
            hours = {h.t: h.sources[0] for h in await stored_hours(rt)}
            return hours if t in hours else None
        hours = await wait_for("Hc+1 stored", lambda: hours_to(clock.next_hour(hc)), 5.0)
        before, bad = hours[hc], hours[clock.next_hour(hc)]
        assert (before.valid, before.flag, before.substituted) == (True, DataFlag.N, False)
        assert before.co2_t == pytest.approx(HOUR_T, abs=3e-4)
        assert (bad.valid, bad.flag, bad.n_valid) == (False, DataFlag.D, 0)
        assert bad.substituted and bad.substitution_rule == "max_previous_n"
        assert bad.co2_t == pytest.approx(HOUR_T, abs=3e-4)

        # --- minutes: D from the failed check on, C while calibrating, N after the pass
        async def minutes_after_pass() -> list[dict[str, Any]] | None:
            rows = await rt.historian.source_minutes("S1", t_pass, t_pass + timedelta(
                seconds=10 * MINUTE_S))
            return rows if len(rows) >= 5 else None
        rows = await wait_for("minutes after the passed check", minutes_after_pass, 10.0)
        assert [r["flag"] for r in rows[1:]] == [DataFlag.N] * (len(rows) - 1)
        inside = await rt.historian.source_minutes(
            "S1", clock.next_minute(t_fail), t_pass - timedelta(seconds=3))
        flags = {r["flag"] for r in inside}
        assert DataFlag.D in flags and flags <= {DataFlag.D, DataFlag.C}, flags
    finally:
        await rt.stop()


# ------------------------------------------------------- the sink, without a server


def block(table: TagTable, t: float, cal: float, co2: float, flag: int = 0) -> SampleBlock:
    rows = table.rows(["s1_cal", "s1_co2"])
    return SampleBlock.of_poll(table, t, rows, np.array([cal, co2]),
                               np.array([flag, flag], np.uint8))


async def test_the_sink_enters_checks_and_logs_refusals_and_faults(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(plant(tmp_path), "test")
    table = TagTable(tuple(cfg.tag_ids()))
    bodies: list[dict[str, Any]] = []
    answers: list[Exception | None] = [None, RecordsError("qa_check: 2026 is locked"),
                                       OSError("disk full"), OSError("disk full")]

    async def enter(user: str, body: dict[str, Any]) -> dict[str, Any]:
        assert user == "system"
        bodies.append(body)
        exc = answers[len(bodies) - 1]
        if exc is not None:
            raise exc
        return {"entry": {"result": {"drift_pct_fs": 12.0, "status": "out_of_control"}}}

    sink = QaCapture(cfg, enter)
    t0 = 1_765_000_000.0
    caplog.set_level(logging.INFO, "server.qacapture")
    for k in range(4):  # four calibrations of 1 s (0.1 s polls), 10 s apart
        base = t0 + 10 * k
        await sink.on_samples(block(table, base - 0.1, 0.0, 12.0))
        for i in range(10):
            await sink.on_samples(block(table, base + 0.1 * i, 1.0, 18.0 + k))
        # a failed poll (flag B) reads 0 on both: not the end of the calibration
        await sink.on_samples(block(table, base + 0.95, 0.0, 0.0, int(DataFlag.B)))
        await sink.on_samples(block(table, base + 1.0, 0.0, 12.0))
    await sink.stop()
    # edges at base + 1.0; the last 0.5 s of the phase: 5 polls at 18 + k
    assert [(b["t"], b["measured_value"]) for b in bodies] == [
        (datetime.fromtimestamp(t0 + 10 * k + 1.0, UTC).isoformat(), 18.0 + k)
        for k in range(4)]
    assert bodies[0]["reason"] == ("automatic span check: mean of 5 readings of s1_co2 over "
                                   "the last 0.5 s of the phase")
    assert len(sink.recorded) == 1 and sink.refused == ["qa_check: 2026 is locked"]
    text = caplog.text
    assert "recorded: measured 18 against 15 %, drift 12.00 % F.S., out_of_control" in text
    assert "refused: qa_check: 2026 is locked" in text
    assert text.count("OSError: disk full") == 1  # the same fault is logged once
