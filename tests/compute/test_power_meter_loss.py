"""A lost output meter makes the intensity invalid, never false (issue 11).

A real plant in-process: the CEMS device and the generator-power device are Modbus TCP
simulators on their own loopback ports; the power meter's simulator is stopped for a few
minutes (its device stops answering) and started again. Before the fix, CO2 kept adding
to today's sums while output did not, so `intensity_today_t_mwh` climbed and the alarm
on it fired (0.81 → 2.43 t/MWh in 50 s on the demo plant).

Worked numbers (by hand, tests/fixtures/plant.py): CO2 3282.70 kg a minute
(calc_vectors.md) over 600 MW × 1/60 h = 10 MWh a minute → 0.32827 t/MWh, every minute
and so also today. Levels at 0.36 / 0.40 t/MWh. Had 3 valid minutes been followed by 3
minutes without output, the old today value would be 6 · 3.2827 / 30 = 0.65654: alarm.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from compute.clock import PlantClock
from drivers.modbus_sim import ModbusTcpSimulator
from model.flags import DataFlag
from model.records import MinuteResult, SampleBlock, UnitMinute
from server import runtime as rt
from server.config import parse_plant
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict

pytestmark = pytest.mark.reliability

MINUTE_S = 2.0
INTENSITY = 3282.70 / 1000 / 10.0  # t/MWh, see the module docstring


class Recorder:
    """A sink keeping every minute's unit record of U1."""

    name = "recorder"

    def __init__(self) -> None:
        self.units: list[UnitMinute] = []

    async def start(self) -> None:
        """Nothing to open."""

    async def on_samples(self, block: SampleBlock) -> None:
        """Ignore samples."""

    async def on_minute(self, result: MinuteResult) -> None:
        """Keep U1's record."""
        self.units.extend(u for u in result.units if u.unit == "U1")

    async def stop(self) -> None:
        """Nothing to close."""


def _plant(tmp_path: Path, cems_port: int, dcs_port: int) -> dict[str, Any]:
    d = plant_dict(cems_port, var_dir=str(tmp_path / "var"), minute_seconds=MINUTE_S)
    d["opcua"]["enabled"] = False
    d["web"]["enabled"] = False
    cems = d["devices"][0]
    power = next(t for t in cems["tags"] if t["id"] == "u1_power")
    cems["tags"].remove(power)
    # The generator output on its own device (the DCS), served by the test's simulator.
    d["devices"].append({"id": "dcs", "protocol": "modbus_tcp", "host": "127.0.0.1",
                         "port": dcs_port, "device_id": 1, "poll_interval_s": 0.1,
                         "timeout_s": 0.3, "simulate": False, "tags": [power]})
    d["alarms"] = {"rules": [
        {"id": "U1_intensity_today", "target": {"unit": "U1", "field": "intensity_today_t_mwh"},
         "direction": "high", "warning": 0.36, "alarm": 0.40},
        {"id": "U1_intensity_field", "target": {"unit": "U1", "field": "intensity_t_mwh"},
         "direction": "high", "warning": 0.36, "alarm": 0.40},
        *({"id": f"U1_intensity_{w}", "kind": "intensity", "scope": {"unit": "U1"},
           "window": w, "warning": 0.36, "alarm": 0.40}
          for w in ("minute", "hour", "day", "month_to_date")),
        {"id": "site_intensity_hour", "kind": "intensity", "scope": {"site": True},
         "window": "hour", "warning": 0.36, "alarm": 0.40},
        {"id": "S1_intensity_hour", "kind": "intensity", "scope": {"source": "S1"},
         "window": "hour", "warning": 0.36, "alarm": 0.40},
    ]}
    return d


async def _until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _good(u: UnitMinute) -> bool:
    return u.valid and u.output_flag is DataFlag.N


async def test_intensity_is_invalid_not_false_while_the_power_meter_is_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(rt, "SINKS", (*rt.SINKS, rt.SinkEntry(
        "recorder", lambda c: True, lambda r, c, a: rec)))
    d = _plant(tmp_path, free_port(), free_port())
    plant = parse_plant(d, "test")
    dcs_cfg = [dev for dev in plant.config.devices if dev.id == "dcs"]
    dcs = ModbusTcpSimulator(dcs_cfg, plant.config.site.timezone)  # type: ignore[arg-type]
    await dcs.start()
    runtime = rt.Runtime(plant)
    try:
        await runtime.start()
        # 3 valid minutes, then the power meter stops answering for ≥ 3 minutes, then back.
        await _until("3 valid minutes", lambda: sum(map(_good, rec.units)) >= 3, 40)
        await dcs.stop()
        n_before = len(rec.units)
        await _until("3 minutes without output", lambda: sum(
            u.output_flag is DataFlag.B for u in rec.units[n_before:]) >= 3, 40)
        await dcs.start()
        n_down = len(rec.units)
        await _until("2 valid minutes after recovery",
                     lambda: sum(map(_good, rec.units[n_down:])) >= 2, 40)
    finally:
        await runtime.stop()
        await dcs.stop()

    units = list(rec.units)
    down = [u for u in units if u.output_flag is not DataFlag.N]
    assert len(down) >= 3
    for u in down:  # invalid, flagged, never a number from the CO2 alone
        assert not u.valid and u.flag is DataFlag.B and u.output_flag is DataFlag.B
        assert math.isnan(u.intensity_t_mwh)
    good = [u for u in units if _good(u)]
    assert len(good) >= 5 and good[-1] is units[-1]  # valid again after recovery
    # 3282.70 kg is printed to 0.01 kg: 0.005 kg / 10 MWh = 5e-7 t/MWh.
    assert [u for u in good if u.intensity_t_mwh != pytest.approx(INTENSITY, abs=5e-7)] == []
    # Today's intensity never drifts: it is over the valid minutes only, before, during
    # and after the outage (CO2 today still counts every minute: it went on rising).
    # NaN only before the first valid minute of its plant day (no valid output today yet).
    clock = PlantClock(MINUTE_S, plant.config.site.timezone)
    first_good_of_day: dict[datetime, datetime] = {}
    for u in good:
        first_good_of_day.setdefault(clock.day_start(u.t), u.t)
    unknown = [u for u in units if math.isnan(u.intensity_today_t_mwh)
               and first_good_of_day.get(clock.day_start(u.t), u.t) < u.t]
    assert unknown == []
    today = [u.intensity_today_t_mwh for u in units if math.isfinite(u.intensity_today_t_mwh)]
    assert len(today) >= len(good)
    first = good[0].intensity_t_mwh
    assert [x for x in today if x != pytest.approx(first, rel=1e-12)] == []
    assert down[-1].co2_today_t > down[0].co2_today_t
    # No intensity rule left normal: not on the minute, today, hour, day, month, site, source.
    db = sqlite3.connect(tmp_path / "var" / "historian.sqlite")
    try:
        events = db.execute("SELECT rule, state FROM alarm_journal").fetchall()
        stored = db.execute("SELECT COUNT(*) FROM unit_minute WHERE valid = 0 AND"
                            " intensity_t_mwh IS NOT NULL").fetchone()[0]
    finally:
        db.close()
    assert [e for e in events if e[1] != "normal"] == []
    assert stored == 0
