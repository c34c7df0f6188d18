"""HJ 212-2017 uplink (server/hj212/uplink.py) against the platform simulator over TCP.

End to end: the real `carbonscada run` process on the fixture plant (calc_vectors.md's
worked example: v 15 m/s, A 20 m², t 50 °C, Ps −500 Pa, Xsw 8 %, CO2 12.0 % dry; here
with ±10 % load-following noise) with 0.5-s minutes (30-s hours), uploading to a
PlatformSimulator: the minute and hour frames carry the historian's figures, an outage of
several plant minutes loses nothing and keeps the order, a history request is answered
with what was uploaded live, a withheld acknowledgement makes the uplink send again.
And in-process: the platform's commands, the outbox across a restart, its cap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from model.errors import ConfigError
from model.flags import DataFlag
from model.records import (
    MinuteResult,
    PeriodRecords,
    PeriodResult,
    RevisedPeriod,
    SiteMinute,
    SourceColumns,
    TagColumns,
)
from server.config import parse_plant
from server.historian import Historian
from server.hj212.codec import CN_DAY, CN_HOUR, CN_MINUTE, Packet, hj_time, parse_hj_time
from server.hj212.config import Hj212Config
from server.hj212.outbox import Outbox
from server.hj212.simulator import PlatformSimulator, cp_items
from server.hj212.uplink import Hj212Sink
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")
TZ = "Asia/Shanghai"
MN = "MN00000000000001"
PW = "123456"
MINUTE_S = 0.5
RHO = 1.964  # kg/m³, CO2 at the standard state (DESIGN.md)


def uploads(sim: PlatformSimulator, cn: str, live_qns: set[str] | None = None) -> list[Packet]:
    """The distinct uploads of CN `cn` in order of first arrival (resends counted once)."""
    seen: set[str] = set()
    out = []
    for p in sim.received:
        if p.cn == cn and p.qn not in seen and (live_qns is None or p.qn in live_qns):
            seen.add(p.qn)
            out.append(p)
    return out


def close_to(text: str, value: float, decimals: int) -> bool:
    return abs(float(text) - value) <= 0.5 * 10.0 ** -decimals + 1e-9 * abs(value)


# --- the real `carbonscada run` ---------------------------------------------------------------


def e2e_config(tmp: Path, platform_port: int) -> dict[str, Any]:
    d = plant_dict(free_port(), var_dir=str(tmp / "var"), minute_seconds=MINUTE_S)
    d["clock"]["min_samples_per_minute"] = 3
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    dev = d["devices"][0]
    dev["poll_interval_s"] = 0.04
    for tag in dev["tags"]:  # noisy, load-following values: nothing trivial
        v = tag["sim"]["value"]
        tag["sim"] = {"min": v * 0.9, "max": v * 1.1, "noise": abs(v) * 0.01}
    d["hj212"] = [{"id": "env", "host": "127.0.0.1", "port": platform_port, "mn": MN,
                   "pw": PW, "overtime_s": 0.5, "recount": 2, "rtd_interval_s": 1,
                   "reconnect_max_s": 0.5, "outbox_path": str(tmp / "var" / "hj212.sqlite")}]
    return d


class Run:
    """A `carbonscada run` process and its output."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.reader
        return self.proc.returncode or 0


async def start_run(config: dict[str, Any], tmp: Path) -> Run:
    path = tmp / "plant.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        CARBONSCADA, "run", "-c", str(path), cwd=tmp, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Run(proc)


def historian_minutes(db: Path) -> list[dict[str, Any]]:
    """S1's stored minutes with the temperature tag's statistics, oldest first."""
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute(
            "SELECT s.*, t.min AS t_min, t.mean AS t_mean, t.max AS t_max, t.flag AS t_flag "
            "FROM source_minute s LEFT JOIN tag_minute t ON t.tag = 's1_temp' AND "
            "t.t_ms = s.t_ms WHERE s.source = 'S1' ORDER BY s.t_ms")]
    return rows


def historian_hours(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(
            "SELECT * FROM source_hour WHERE source = 'S1' ORDER BY t_ms")]


def stamp(t_ms: int) -> str:
    return hj_time(datetime.fromtimestamp(t_ms / 1000, UTC), TZ)


def check_minute(p: Packet, row: dict[str, Any]) -> None:
    """A 2051 upload carries the stored minute's figures, in the map's units."""
    items = cp_items(p)
    assert items["DataTime"] == stamp(row["t_ms"])
    assert items["a05001-Flag"] == row["flag"]
    assert close_to(items["a05001-Avg"], row["co2_mg_m3"], 1)  # mg/m³, standard dry
    assert close_to(items["a05001-Cou"], row["co2_kg"], 1)  # kg a minute
    assert close_to(items["a00000-Avg"], row["flow_std_dry_m3_h"] / 3600, 3)  # m³/s
    assert close_to(items["a00000-Cou"], row["flow_std_dry_m3_h"] / 60, 3)  # m³ a minute
    assert "a05001-Min" not in items  # one calculated value a minute
    assert close_to(items["a01012-Min"], row["t_min"], 1)  # °C, the tag's statistics
    assert close_to(items["a01012-Avg"], row["t_mean"], 1)
    assert close_to(items["a01012-Max"], row["t_max"], 1)
    assert items["a01012-Flag"] == row["t_flag"]
    assert "a19001-Avg" not in items  # the fixture source has no O2 tag


@pytest.mark.e2e
@pytest.mark.timeout(150)
async def test_carbonscada_run_uploads_to_the_platform(tmp_path: Path) -> None:
    sim = PlatformSimulator(tz=TZ, pw=PW, mn=MN)
    await sim.start()
    run = await start_run(e2e_config(tmp_path, sim.port), tmp_path)
    db = tmp_path / "var" / "historian.sqlite"
    try:
        await sim.wait_for(lambda: len(uploads(sim, CN_MINUTE)) >= 4, 60)
        assert not sim.errors
        # Real-time data from the latest readings (1 s interval): the temperature's.
        await sim.wait_for(lambda: any(p.cn == "2011" for p in sim.received), 5)
        rtd = cp_items(next(p for p in sim.received if p.cn == "2011"))
        assert 40.0 <= float(rtd["a01012-Rtd"]) <= 60.0  # 50 °C ±10 %, noise σ 0.5 °C

        # An outage of 3 s: six plant minutes made while nothing listens.
        before = len(uploads(sim, CN_MINUTE))
        sim.refuse_connections = True
        t_down = time.monotonic()
        await asyncio.sleep(3.0)
        assert len(uploads(sim, CN_MINUTE)) <= before + 1
        sim.refuse_connections = False
        await sim.wait_for(lambda: sim.listening and sim.connected, 10)
        assert time.monotonic() - t_down < 6.0  # the backoff's cap is 0.5 s
        await sim.wait_for(lambda: len(uploads(sim, CN_MINUTE)) >= before + 8, 10)

        # A withheld acknowledgement: the same upload again after OverTime (0.5 s).
        n_frames = len(sim.frames)

        def sent_since() -> list[str]:
            return [p.qn for p in sim.frames[n_frames:] if p.cn in (CN_MINUTE, CN_HOUR)]
        sim.withhold_acks = True
        await sim.wait_for(lambda: len(set(sent_since())) < len(sent_since()), 5)
        sim.withhold_acks = False
        again = sent_since()
        assert len(again) >= 2 and again[0] == again[1]  # the first one, sent twice

        # A history request of minutes uploaded live: the same CP texts come back.
        live = uploads(sim, CN_MINUTE)
        first, last = live[2], live[-3]
        begin = parse_hj_time(cp_items(first)["DataTime"], TZ)
        end = parse_hj_time(cp_items(last)["DataTime"], TZ)
        answer = await sim.request_history(CN_MINUTE, begin, end)
        assert answer.qn_rtn == 1 and answer.exe_rtn == 1
        live_in_range = [p.cp for p in live if begin <= parse_hj_time(
            cp_items(p)["DataTime"], TZ) <= end]
        assert [p.cp for p in answer.data] == live_in_range
        assert len(answer.data) >= 6

        # An hour (30 s) closes: its 2061 carries the stored hour.
        await sim.wait_for(lambda: bool(uploads(sim, CN_HOUR)), 45)
        await sim.wait_for(lambda: len(uploads(sim, CN_MINUTE)) >= len(live) + 4, 10)
    finally:
        code = await run.stop()
        await sim.stop()
    assert code == 0, "".join(run.lines[-30:])
    log_text = "".join(run.lines)
    assert "unreachable (ConnectionError" in log_text  # the outage, logged
    assert "reachable again" in log_text and "sent again (1 of 2)" in log_text
    assert not sim.errors

    # Every stored minute from the first upload on was uploaded once, in order (the
    # last ones may wait in the outbox for the next start), with the historian's figures.
    history_qns = {p.qn for p in answer.data} | {answer.qn}
    live = [p for p in uploads(sim, CN_MINUTE) if p.qn not in history_qns]
    stored = historian_minutes(db)
    times = [cp_items(p)["DataTime"] for p in live]
    k = next(i for i, r in enumerate(stored) if stamp(r["t_ms"]) == times[0])
    assert [stamp(r["t_ms"]) for r in stored[k:k + len(live)]] == times
    assert len(stored) - k - len(live) <= 4  # made in the last second before the stop
    assert len(live) >= 14  # 4 before the outage, 6 made during it, 4 after
    for p, row in zip(live, stored[k:], strict=False):
        check_minute(p, row)
    qns = [p.qn for p in live]
    assert qns == sorted(qns)  # uploads in the order they were made
    # No minute is missing across the outage: 0.5 s apart all through.
    t_ms = [r["t_ms"] for r in stored[k:k + len(live)]]
    assert set(np.diff(t_ms).tolist()) == {500}

    hours = historian_hours(db)
    assert uploads(sim, CN_HOUR)
    for p in uploads(sim, CN_HOUR):
        items = cp_items(p)
        row = next(h for h in hours if stamp(h["t_ms"]) == items["DataTime"])
        assert items["a05001-Flag"] == row["flag"]
        if row["co2_t"] is None:  # an invalid hour without a substitute: no amount
            assert "a05001-Cou" not in items
        else:
            assert close_to(items["a05001-Cou"], row["co2_t"] * 1000, 1)  # kg
        if row["co2_dry_pct"] is not None:
            assert close_to(items["a05001-Avg"], row["co2_dry_pct"] * RHO * 1e4, 1)
            assert close_to(items["a00000-Avg"], row["flow_std_dry_m3_h"] / 3600, 3)
            assert close_to(items["a00000-Cou"], row["flow_std_dry_m3_h"], 3)  # m³, 1 h
            # The worked example's 12.0 % dry, ±10 %: 235 680 mg/m³.
            assert 0.88 * 235_680 < float(items["a05001-Avg"]) < 1.12 * 235_680


# --- in process: commands, restart, caps ---------------------------------------------------


def one_source_plant(tmp: Path, port: int, **hj: Any) -> Any:
    d = plant_dict(free_port(), var_dir=str(tmp / "var"), minute_seconds=60.0)
    d["hj212"] = [{"id": "env", "host": "127.0.0.1", "port": port, "mn": MN, "pw": PW,
                   "overtime_s": 0.3, "recount": 1, "rtd_interval_s": 0,
                   "reconnect_max_s": 0.2, "outbox_path": str(tmp / "box.sqlite"), **hj}]
    return parse_plant(d, "test.yaml").config


T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai


def minute(k: int, co2_kg: float = 3282.70) -> MinuteResult:
    """Minute k after T0: the worked example (G 196 962.2 kg/h; Q_sd 836 164.6 m³/h)."""
    t = T0 + timedelta(minutes=k)
    f = np.array
    cols = SourceColumns(
        ("S1",), ("U1",), f([1_080_000.0]), f([836_164.6]), f([12.0]), f([235_680.0]),
        f([196_962.2]), f([co2_kg]), f([0], np.uint8), f([0]), ("",), f([0.0]), f([0.0]),
        f([0.0]))
    tags = TagColumns(("s1_temp", "s1_velocity"), f([50.0, 15.0]), f([49.5, 14.8]),
                      f([50.5, 15.2]), f([20, 20]), f([0, int(DataFlag.D)], np.uint8))
    return MinuteResult(t, units=(), site=SiteMinute(t, co2_kg, 0, 0, 0, 0, 0),
                        source_columns=cols, tag_columns=tags)


async def historian(tmp: Path, n: int) -> Historian:
    """A real historian holding minutes 0..n-1 (CO2 3282.70 + k kg) and hour 0."""
    h = Historian(tmp / "historian.sqlite")
    await h.start()
    for k in range(n):
        await h.on_minute(minute(k, co2_kg=3282.70 + k))
    await h.on_period(hour(0))
    return h


def hour(k: int) -> PeriodRecords:
    t = T0 + timedelta(hours=k)
    src = PeriodResult("S1", t, 12.0, 836_164.6, 196_962.2, 196.9622, 196.9622, True,
                       DataFlag.N, 60)
    return PeriodRecords("hour", t, t + timedelta(hours=1), (src,), (), ())


async def test_minute_and_hour_frames_carry_the_worked_example(tmp_path: Path) -> None:
    sim = PlatformSimulator(tz=TZ, pw=PW, mn=MN)
    await sim.start()
    sink = Hj212Sink(one_source_plant(tmp_path, sim.port))
    await sink.start()
    try:
        await sink.on_minute(minute(0))
        await sink.on_period(hour(0))
        await sink.on_period(hour(0))  # again (the runtime's restart display): sent once
        await sim.wait_for(lambda: len(sim.received) >= 2, 5)
        m, h = sim.received[:2]
        assert (m.cn, m.st, m.mn, m.pw, m.flag) == ("2051", "31", MN, PW, 5)
        # 235 680 mg/m³ = 12.0 % · 1.964 kg/m³ · 1e4; 836 164.6 m³/h = 232.268 m³/s;
        # 13 936.08 m³ a minute; the velocity tag's flag D passes as it is.
        assert m.cp == ("DataTime=20260301080000;a05001-Avg=235680.0,a05001-Cou=3282.7,"
                        "a05001-Flag=N;a00000-Avg=232.268,a00000-Cou=13936.077,"
                        "a00000-Flag=N;a01011-Min=14.80,a01011-Avg=15.00,a01011-Max=15.20,"
                        "a01011-Flag=D;a01012-Min=49.5,a01012-Avg=50.0,a01012-Max=50.5,"
                        "a01012-Flag=N")
        assert h.cn == "2061"
        assert h.cp == ("DataTime=20260301080000;a05001-Avg=235680.0,a05001-Cou=196962.2,"
                        "a05001-Flag=N;a00000-Avg=232.268,a00000-Cou=836164.600,"
                        "a00000-Flag=N")
        await asyncio.sleep(0.5)
        assert [p.cn for p in sim.received] == ["2051", "2061"]
        assert not sim.errors
    finally:
        await sink.stop()
        await sim.stop()


async def test_an_hour_calculated_again_after_an_entry_is_sent_again(tmp_path: Path) -> None:
    # A correction sets hour 0's CO2 to 200 t by hand (flag S): the platform, which had
    # the hour as measured, gets it again with the corrected mass and flag; a plain
    # repeat of the same hour (the restart display) is still not sent twice.
    sim = PlatformSimulator(tz=TZ, pw=PW, mn=MN)
    await sim.start()
    sink = Hj212Sink(one_source_plant(tmp_path, sim.port))
    await sink.start()
    try:
        await sink.on_period(hour(0))
        await sim.wait_for(lambda: len(sim.received) >= 1, 5)
        first = hour(0)
        src = replace(first.sources[0], co2_t=200.0, co2_rate_kg_h=200_000.0,
                      flag=DataFlag.S)
        await sink.on_revised_period(RevisedPeriod(replace(first, sources=(src,))))
        await sink.on_period(hour(0))
        await sim.wait_for(lambda: len(sim.received) >= 2, 5)
        await asyncio.sleep(0.5)
        assert [p.cn for p in sim.received] == ["2061", "2061"]
        again = sim.received[1].cp
        assert "a05001-Cou=200000.0" in again and "a05001-Flag=S" in again, again
        assert not sim.errors
    finally:
        await sink.stop()
        await sim.stop()


async def test_a_stalled_uplink_raises_its_alarm_and_clears_it(tmp_path: Path) -> None:
    # The platform refuses connections: after alarm_after_s with an upload waiting, the
    # uplink reports a fault on device hj212_env (a comm_loss rule is added for it); once
    # the platform takes the upload again, it reports the recovery.
    from model.records import DeviceEvent
    from server.hj212.config import with_uplink_alarms

    events: list[DeviceEvent] = []
    sim = PlatformSimulator(tz=TZ, pw=PW, mn=MN)
    await sim.start()
    cfg = one_source_plant(tmp_path, sim.port, alarm_after_s=1.0)
    rule = [r for r in with_uplink_alarms(cfg, cfg.hj212).alarms.rules
            if r.id == "hj212_env_uplink"]
    assert len(rule) == 1 and rule[0].device == "hj212_env"
    assert "hj212_env" in cfg.system_device_ids()
    sim.refuse_connections = True
    sink = Hj212Sink(cfg, on_event=events.append)
    await sink.start()
    try:
        await asyncio.sleep(0.3)
        assert [e.fault for e in events] == [False]  # the first check reports: clear
        await sink.on_minute(minute(0))
        async with asyncio.timeout(10):
            while not any(e.fault for e in events):
                await asyncio.sleep(0.1)
        fault = next(e for e in events if e.fault)
        assert fault.device == "hj212_env" and "1 uploads wait" in fault.message
        sim.refuse_connections = False
        await sim.wait_for(lambda: len(sim.received) >= 1, 15)
        async with asyncio.timeout(15):
            while events[-1].fault:
                await asyncio.sleep(0.1)
        assert [e.fault for e in events] == [False, True, False]
    finally:
        await sink.stop()
        await sim.stop()


async def test_platform_commands_are_answered(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    sim = PlatformSimulator(tz=TZ, pw=PW, mn=MN)
    await sim.start()
    store = await historian(tmp_path, 3)
    sink = Hj212Sink(one_source_plant(tmp_path, sim.port), history=store)
    await sink.start()
    up = sink.platforms[0]
    try:
        await sim.wait_connected(5)
        got = await sim.get_time()
        assert abs((got - datetime.now(UTC)).total_seconds()) < 2
        assert await sim.get_min_interval() == 1
        assert (await sim.set_min_interval(5)).exe_rtn == 1
        assert up.min_interval == 5 and await sim.get_min_interval() == 5
        assert (await sim.set_rtd_interval(60)).exe_rtn == 1
        assert await sim.get_rtd_interval() == 60
        assert (await sim.set_rtd_interval(5)).exe_rtn == 2  # below HJ 212's 30 s
        assert (await sim.set_timeout(7, 4)).exe_rtn == 1
        assert (up.overtime_s, up.recount) == (7.0, 4)
        with caplog.at_level(logging.WARNING):
            refused = await sim.set_time(datetime.now(UTC) + timedelta(seconds=100))
        assert (refused.qn_rtn, refused.exe_rtn) == (1, 2)
        assert "kept by NTP" in caplog.text
        # History: MinInterval is 5 now: the 3 stored minutes are one 5-minute interval.
        res = await sim.request_history(CN_MINUTE, T0, T0 + timedelta(minutes=10))
        assert (res.qn_rtn, res.exe_rtn) == (1, 1)
        assert len(res.data) == 1
        items = cp_items(res.data[0])
        assert items["DataTime"] == "20260301080000"
        assert items["a05001-Cou"] == "9851.1"  # 3282.7 + 3283.7 + 3284.7
        assert items["a01011-Flag"] == "D"
        assert (await sim.set_min_interval(1)).exe_rtn == 1
        res = await sim.request_history(CN_MINUTE, T0, T0 + timedelta(minutes=10))
        assert [cp_items(p)["a05001-Cou"] for p in res.data] == ["3282.7", "3283.7", "3284.7"]
        res = await sim.request_history(CN_HOUR, T0, T0 + timedelta(hours=1))
        assert [cp_items(p)["a05001-Cou"] for p in res.data] == ["196962.2"]
        res = await sim.request_history(CN_DAY, T0, T0 + timedelta(days=1))
        assert (res.exe_rtn, res.data) == (100, [])  # no stored day
        wrong = await sim.command("9999")
        assert wrong.qn_rtn == 8
        n = len(sim.received)
        await sim.send(Packet(qn="20260301080000000", st="31", cn="1011", pw="654321", mn=MN,
                              flag=5, cp=""))
        await sim.wait_for(lambda: len(sim.received) > n, 5)
        await asyncio.sleep(0.2)
        assert [(p.cn, p.cp) for p in sim.received[n:]] == [("9011", "QnRtn=3")]  # wrong PW
        assert not sim.errors
    finally:
        await sink.stop()
        await sim.stop()
        await store.stop()


async def test_outbox_survives_a_restart_and_an_unacknowledged_upload_is_kept(
        tmp_path: Path) -> None:
    """The platform never acks: after ReCount resends the upload stays; a new start sends
    it first, then the rest in order."""
    sim = PlatformSimulator(tz=TZ, pw=PW, mn=MN, withhold_acks=True)
    await sim.start()
    cfg = one_source_plant(tmp_path, sim.port)
    sink = Hj212Sink(cfg)
    await sink.start()
    try:
        for k in range(3):
            await sink.on_minute(minute(k, co2_kg=1000.0 + k))
        # Sent once and resent once (recount 1), then the connection is dropped.
        await sim.wait_for(lambda: sim.connections_accepted >= 2, 5)
        first = [p for p in sim.frames if p.cn == CN_MINUTE]
        assert len({p.qn for p in first}) == 1 and len(first) >= 2
    finally:
        await sink.stop()
    box = Outbox(cfg.hj212[0].outbox_file())
    assert box.count == 3
    box.close()
    sim.withhold_acks = False
    n = len(sim.received)
    sink = Hj212Sink(cfg)
    await sink.start()
    try:
        await sim.wait_for(lambda: len({p.qn for p in sim.received[n:]}) >= 3, 5)
        cous = [cp_items(p)["a05001-Cou"] for p in uploads(sim, CN_MINUTE)]
        assert cous == ["1000.0", "1001.0", "1002.0"]
        await sim.wait_for(lambda: sink.platforms[0].stats["outbox_uploads"] == 0, 5)
    finally:
        await sink.stop()
        await sim.stop()


async def test_a_dead_platform_delays_neither_the_minute_nor_another(tmp_path: Path) -> None:
    """One platform's port has nothing listening; the other gets every minute at once."""
    sim = PlatformSimulator(tz=TZ, pw=PW)
    await sim.start()
    d = plant_dict(free_port(), var_dir=str(tmp_path / "var"))
    common = {"pw": PW, "overtime_s": 5, "rtd_interval_s": 0, "reconnect_max_s": 5}
    d["hj212"] = [
        {"id": "dead", "host": "10.255.255.1", "port": 9, "mn": "DEAD01",
         "connect_timeout_s": 30, "outbox_path": str(tmp_path / "dead.sqlite"), **common},
        {"id": "live", "host": "127.0.0.1", "port": sim.port, "mn": MN,
         "outbox_path": str(tmp_path / "live.sqlite"), **common}]
    sink = Hj212Sink(parse_plant(d, "test.yaml").config)
    await sink.start()
    try:
        began = time.perf_counter()
        for k in range(5):
            await sink.on_minute(minute(k))
        assert time.perf_counter() - began < 0.5  # no I/O in on_minute
        await sim.wait_for(lambda: len(uploads(sim, CN_MINUTE)) == 5, 5)
        assert {p.mn for p in sim.received} == {MN}
        await asyncio.sleep(0.3)
        assert sink.platforms[0].stats["outbox_uploads"] == 5  # kept for its platform
        assert sink.pending_batches() == 5
        assert sink.stats()["uploads_done_total"] == 5 and sink.stats()["connected"] == 1
    finally:
        await sink.stop()
        await sim.stop()


async def test_a_long_upload_is_split_and_acknowledged_whole(tmp_path: Path) -> None:
    """Twenty more codes: the 2051 is over 1024 bytes, sent as PNUM / PNO pieces with one QN,
    joined by the platform and acknowledged once; the outbox then forgets it."""
    extra = {f"a990{k:02d}": {"field": "temp_c", "unit": "degC", "decimals": 4}
             for k in range(20)}
    sim = PlatformSimulator(tz=TZ, pw=PW, mn=MN)
    await sim.start()
    sink = Hj212Sink(one_source_plant(tmp_path, sim.port, codes=extra))
    await sink.start()
    try:
        await sink.on_minute(minute(0))
        await sim.wait_for(lambda: sink.platforms[0].stats["uploads_done_total"] == 1, 5)
        pieces = [p for p in sim.frames if p.cn == CN_MINUTE]
        assert len(pieces) == 2 and {p.pnum for p in pieces} == {2}
        assert [p.pno for p in pieces] == [1, 2] and len({p.qn for p in pieces}) == 1
        assert all(p.flag == 5 | 2 for p in pieces)  # version, ack, split
        whole = cp_items(sim.received[0])
        assert whole["a99019-Avg"] == "50.0000" and whole["a99019-Min"] == "49.5000"
        assert sim.acks_sent == [pieces[0].qn]
        assert sink.platforms[0].stats["outbox_uploads"] == 0
    finally:
        await sink.stop()
        await sim.stop()


def test_outbox_cap_drops_the_oldest_and_says_what(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "box.sqlite"))
    box.append([(f"2026030108000{k}000", "2051", f"x={k}", 1000 * k) for k in range(5)])
    drops = box.enforce(3, 3600_000)
    assert [(d.reason, d.uploads, d.cns, d.first_data_ms, d.last_data_ms) for d in drops] == [
        ("count", 2, "2051×2", 0, 1000)]
    oldest = box.oldest()
    assert oldest is not None and oldest.cp == "x=2" and box.count == 3
    assert box.last_data_ms("2051") == 4000
    box.close()


def test_config_errors_name_the_key() -> None:
    d = plant_dict(free_port())
    d["hj212"] = [{"id": "a", "host": "h", "port": 1, "mn": "MN1", "pw": "123456",
                   "source": "S9"},
                  {"id": "b", "host": "h", "port": 1, "mn": "MN1", "pw": "123456",
                   "codes": {"a19001": {"field": "o2_dry_pct", "unit": "%"},
                             "co2": {"field": "co2_mg_m3", "unit": "x"}}}]
    with pytest.raises(ConfigError) as err:
        parse_plant(d, "p.yaml")
    assert "p.yaml: hj212[1].codes: not an HJ 212 pollutant code: 'co2'" in str(err.value)
    d["hj212"][1]["codes"].pop("co2")
    from server.runtime import preflight

    with pytest.raises(ConfigError) as err:
        preflight(parse_plant(d, "p.yaml").config)
    text = str(err.value)
    assert "hj212[0].source: unknown source 'S9'" in text
    assert "hj212[1].mn: 'MN1' is sent to h:1 by another hj212 entry" in text
    assert "hj212[1].codes.a19001.field: source 'S1' has no tag for 'o2_dry_pct'" in text
    assert Hj212Config(id="x", host="h", port=1, mn="M", pw="1").code_map()["a05001"].unit == (
        "mg/m3 (standard, dry)")
