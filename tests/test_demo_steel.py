"""The shipped steel demo (config/demo-steel.yaml): check-config accepts it, and it runs.

The runtime test starts it as shipped, with its ports and RS-485 pty moved, its minute
shortened to 0.5 s (an hour is 30 s) and the Modbus polls quickened; it reads the hours of
the blast furnace and the lime kiln over HTTP and checks them against the simulated rates
by hand, then recalculates the exported samples and finds the stored hours bit for bit.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from asyncua.client.client import Client

from compute.clock import PlantClock
from server.config import load_config, parse_plant
from server.historian import Historian
from server.recalc import recalculate, recalculate_periods
from server.runtime import Runtime
from tests.fixtures.demo import demo_dict

REPO = Path(__file__).resolve().parent.parent
STEEL = REPO / "config" / "demo-steel.yaml"
CARBONSCADA = str(Path(sys.executable).parent / "carbonscada")

# The simulators' constant rates (config/demo-steel.yaml), t/h unless named:
# BF: coke 40 · 0.85 tC/t (version demo-coke-2026-11) = 34 tC, PCI 17.25 · 0.78 = 13.455 tC,
# limestone 2 · 0.12 = 0.24 tC → 47.695 tC in; hot metal 115 · 0.045 = 5.175 tC, BFG
# 230 · 0.175 = 40.25 tC → 45.425 tC out. An hour: (47.695 − 45.425) · 44/12 = 2.27 · 44/12
# = 8.323 333 … t CO2, over 115 t of hot metal 0.072 376 811 … t CO2/t.
BF_HOUR_T = 2.27 * 44 / 12
# LK: lime 25 t · (0.90 · 44/56.08 + 0.02 · 44/40.30) = 25 · (0.706 134 094 … + 0.021 836 228 …)
# = 18.199 258 060 976 t; natural gas 0.375 · 389.31 · 0.0153 · 0.99 · 44/12 =
# 8.108 208 033 75 t → 26.307 466 094 726 t an hour, 1.052 298 643 789 t CO2/t lime.
LK_HOUR_T = 25 * (0.90 * 44 / 56.08 + 0.02 * 44 / 40.30) + 0.375 * 389.31 * 0.0153 * 0.99 * 44 / 12
# The gas's CH4: 0.375 · 389.31 GJ = 0.145 991 25 TJ · 1 kg/TJ = 1.459 912 5e-4 t, N2O at
# 0.1 kg/TJ 1.459 912 5e-5 t; CO2e under SAR (21, 310): + 0.003 065 816 25 + 0.004 525 728 75
# = 26.315 057 639 726 t an hour.
LK_HOUR_CO2E_T = LK_HOUR_T + 1.4599125e-4 * 21 + 1.4599125e-5 * 310
# So each closed hour adds 0.007 591 545 t of other gases to the kiln's CO2eToday.
LK_HOUR_OTHER_T = 0.007591545


def hand(value: float) -> Any:
    """Equality to a hand-worked figure, to 1e-9 relative."""
    return pytest.approx(value, rel=1e-9, abs=0)


def steel_dict(tmp_path: Path) -> dict[str, Any]:
    """config/demo-steel.yaml on free ports, with its pty, historian, PKI and backups under
    `tmp_path`, half-second minutes and quick Modbus polls."""
    data = demo_dict(tmp_path, STEEL)
    for dev in data["devices"]:
        if dev["protocol"] == "modbus_tcp":
            dev["poll_interval_s"] = 0.05
    data["factor_table"] = str(REPO / "config" / "factors-steel.yaml")
    data["clock"] = {"minute_seconds": 0.5, "min_samples_per_minute": 3}
    return data


def test_check_config_accepts_the_steel_demo() -> None:
    r = subprocess.run([CARBONSCADA, "check-config", str(STEEL)], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "site demo_steel" in r.stdout and "3 units, 1 sources" in r.stdout


def test_the_steel_demo_accounts_each_process_by_its_method() -> None:
    cfg = load_config(STEEL)
    assert [(u.id, u.accounting_basis, u.output.unit) for u in cfg.units] == [
        ("BF", "factor", "t"), ("LK", "factor", "t"), ("PP", "cems", "MWh")]
    kinds = {s.id: s.kind for _, s in cfg.streams()}
    assert kinds == {"BF_coke": "carbon_input", "BF_pci": "carbon_input",
                     "BF_limestone": "carbon_input", "BF_hot_metal": "carbon_output",
                     "BF_gas": "carbon_output", "LK_lime": "lime", "LK_gas": "gaseous_fuel",
                     "PP_grid_import": "electricity", "PP_grid_export": "electricity_export"}
    protocols = {d.id: d.protocol for d in cfg.devices}
    assert protocols["meter_tie"] == "dlt645" and protocols["cems_pp"] == "modbus_tcp"


async def _hours(http: aiohttp.ClientSession, base: str, kind: str, ident: str,
                 begin: datetime) -> list[dict[str, Any]]:
    async with http.get(f"{base}/{kind}/{ident}/hours", params={
            "from": (begin - timedelta(hours=1)).isoformat(),
            "to": (begin + timedelta(hours=1)).isoformat()}) as r:
        assert r.status == 200, await r.text()
        rows: list[dict[str, Any]] = await r.json()
        return rows


async def _process_values(endpoint: str) -> dict[str, tuple[float, int]]:
    """(value, StatusCode) of each process's hour variables and of the kiln's CO2Today and
    CO2eToday over OPC UA, anonymously."""
    port = endpoint.rsplit(":", 1)[1]
    out: dict[str, tuple[float, int]] = {}
    async with Client(f"opc.tcp://127.0.0.1:{port}") as client:
        ns = await client.get_namespace_index("urn:carbonscada:demo_steel")
        for proc in ("ironmaking", "lime", "power"):
            for name in ("CO2LastHour", "CO2eLastHour", "ShareLastHour"):
                node = client.get_node(f"ns={ns};s=Processes.{proc}.{name}")
                dv = await node.read_data_value(raise_on_bad_status=False)
                assert dv.Value is not None and dv.StatusCode is not None
                out[f"{proc}.{name}"] = (dv.Value.Value, dv.StatusCode.value)
        for name in ("CO2Today", "CO2eToday"):
            dv = await client.get_node(f"ns={ns};s=LK.{name}").read_data_value(
                raise_on_bad_status=False)
            assert dv.Value is not None and dv.StatusCode is not None
            out[f"LK.{name}"] = (dv.Value.Value, dv.StatusCode.value)
    return out


async def test_the_steel_demo_runs_and_recalculates_bit_for_bit(tmp_path: Path) -> None:
    data = steel_dict(tmp_path)
    loaded = parse_plant(data, "demo-steel.yaml (ports moved)", REPO / "config")
    runtime = Runtime(loaded)
    begin = datetime.now(UTC) - timedelta(seconds=60)
    base = f"http://127.0.0.1:{data['web']['port']}/api/v1"
    await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(100):  # a valid hour needs a whole 30-s hour
                while True:
                    bf = await _hours(http, base, "units", "BF", begin)
                    lk = await _hours(http, base, "units", "LK", begin)
                    if any(h["valid"] for h in bf) and any(h["valid"] for h in lk):
                        break
                    await asyncio.sleep(0.5)
            pp = await _hours(http, base, "units", "PP", begin)
            lime = await _hours(http, base, "streams", "LK_lime", begin)
            async with http.get(f"{base}/units") as r:
                assert r.status == 200, await r.text()
                live = {u["id"]: u for u in (await r.json())}
            async with http.get(f"{base}/allowance") as r:
                assert r.status == 200, await r.text()
                position = await r.json()
            # The boundaries of the hour both factor units were valid in, over HTTP.
            t_valid = next(h["t"] for h in bf if h["valid"]
                           and any(k["valid"] and k["t"] == h["t"] for k in lk))
            async with http.get(f"{base}/boundaries",
                                params={"level": "hour", "t": t_valid}) as r:
                assert r.status == 200, await r.text()
                rolled = await r.json()
            processes = await _process_values(data["opcua"]["endpoint"])
    finally:
        await runtime.stop()
    end = datetime.now(UTC) + timedelta(seconds=5)
    # Every hour with a value, the partial first one too (a constant's mean is itself):
    for h in bf:
        if h["co2_t"] is not None:
            assert (h["basis"], h["co2_t"], h["co2_factor_t"]) == (
                "factor", hand(BF_HOUR_T), hand(BF_HOUR_T))
            assert (h["output_t"], h["output_mwh"]) == (hand(115.0), None)
            assert h["co2_cems_t"] is None  # no CEMS on a blast furnace
    assert next(h["intensity_t_t"] for h in bf if h["valid"]) == hand(BF_HOUR_T / 115)
    for h in lk:
        if h["co2_t"] is not None:
            assert (h["co2_t"], h["output_t"]) == (hand(LK_HOUR_T), hand(25.0))
            assert (h["co2e_t"], h["gwp_set"]) == (hand(LK_HOUR_CO2E_T), "SAR")
    assert next(h["intensity_t_t"] for h in lk if h["valid"]) == hand(LK_HOUR_T / 25)
    assert lime and lime[0]["factor_version"] == "demo-lime-2020-01"
    # A factor unit has no minute CO2 (it comes with the hour); the year to date has it.
    assert live["BF"]["co2_kg"] is None and live["PP"]["co2_kg"] is not None
    # Its closed hours count in its running totals (compute/hour_co2.py): CO2Today is n
    # hours of 26.307 … t, n the kiln's hours read above of the live minute's plant day (a
    # plant day is 12 min here: n may be 0), give or take one that closed between two
    # reads; CO2eToday adds the other gases of the day's hours, 0.007 591 545 t each: n of
    # them, or n + 1 when an hour closed after the minute (OPC UA writes CO2eToday again
    # when an hour closes, CO2Today comes with the next minute). Over HTTP and OPC UA.
    today = PlantClock(0.5, "Asia/Shanghai").day_start(datetime.fromisoformat(live["LK"]["t"]))
    n_today = sum(h["co2_t"] is not None and datetime.fromisoformat(h["t"]) >= today
                  for h in lk)
    for co2_t, co2e_t in ((live["LK"]["co2_today_t"], live["LK"]["co2e_today_t"]),
                          (processes["LK.CO2Today"][0], processes["LK.CO2eToday"][0])):
        n = round(co2_t / LK_HOUR_T)
        assert max(n_today - 1, 0) <= n <= n_today + 1, (n, n_today)
        assert co2_t == hand(n * LK_HOUR_T)
        m = round((co2e_t - co2_t) / LK_HOUR_OTHER_T)
        assert m in (n, n + 1) and co2e_t == hand(co2_t + m * LK_HOUR_OTHER_T), (m, n)
    # The year to date has every hour of the run (the historian is new): those read above.
    n_year = round(live["LK"]["co2_ytd_t"] / LK_HOUR_T)
    n_hours = sum(h["co2_t"] is not None for h in lk)
    assert n_year >= 1 and n_hours - 1 <= n_year <= n_hours + 1, (n_year, n_hours)
    assert live["LK"]["co2_ytd_t"] == hand(n_year * LK_HOUR_T)
    assert live["BF"]["co2_ytd_t"] == hand(round(live["BF"]["co2_ytd_t"] / BF_HOUR_T)
                                           * BF_HOUR_T) and live["BF"]["co2_ytd_t"] > 0
    assert position["ytd_t"] >= BF_HOUR_T + LK_HOUR_T
    # Per process over HTTP: ironmaking is the blast furnace alone, lime the kiln alone.
    by_id = {p["id"]: p for p in rolled["site"]["children"]}
    assert list(by_id) == ["ironmaking", "lime", "power"]
    assert (by_id["ironmaking"]["co2_t"], by_id["ironmaking"]["co2e_t"]) == (
        hand(BF_HOUR_T), hand(BF_HOUR_T))  # carbon balance: CO2 only, CO2e = CO2
    assert (by_id["lime"]["co2_t"], by_id["lime"]["co2e_t"]) == (
        hand(LK_HOUR_T), hand(LK_HOUR_CO2E_T))
    site_t = rolled["site"]["co2_t"]
    assert site_t == hand(BF_HOUR_T + LK_HOUR_T + by_id["power"]["co2_t"])
    assert by_id["lime"]["share_of_site_pct"] == hand(100 * LK_HOUR_T / site_t)
    # And over OPC UA: the processes' last complete hour (every full hour of a constant
    # rate has the same value), Good, with a share of the site between 0 and 100 %.
    assert processes["ironmaking.CO2LastHour"] == (hand(BF_HOUR_T), 0)
    assert processes["ironmaking.CO2eLastHour"] == (hand(BF_HOUR_T), 0)
    assert processes["lime.CO2LastHour"] == (hand(LK_HOUR_T), 0)
    assert processes["lime.CO2eLastHour"] == (hand(LK_HOUR_CO2E_T), 0)
    assert 0 < processes["power.ShareLastHour"][0] < 100
    assert processes["power.CO2LastHour"][0] > 0
    # The power plant is accounted by its stack CEMS
    assert pp and all(h["basis"] == "cems" and h["co2_t"] == h["co2_cems_t"] for h in pp)

    # Recalculated from the exported samples: the stored hours, bit for bit.
    plant = tmp_path / "demo-steel.yaml"
    plant.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    samples = tmp_path / "samples.csv"
    export = subprocess.run([CARBONSCADA, "export-samples", "-c", str(plant), "--from",
                             begin.isoformat(), "--to", end.isoformat(), "--out", str(samples)],
                            capture_output=True, text=True, timeout=180, check=False)
    assert export.returncode == 0, export.stderr
    historian = Historian(str(tmp_path / "historian.sqlite"))
    await historian.start()
    try:
        stored = await historian.periods("hour", begin, end)
    finally:
        await historian.stop()
    plan = loaded.plan()
    again = {p.t: p for p in recalculate_periods(plan, recalculate(plan, samples))
             if p.level == "hour"}
    assert stored
    for rec in stored:
        want = again[rec.t]
        assert repr(sorted(rec.units, key=lambda u: u.unit)) == repr(
            sorted(want.units, key=lambda u: u.unit))
        assert repr(sorted(rec.streams, key=lambda s: s.stream)) == repr(
            sorted(want.streams, key=lambda s: s.stream))
        assert repr(rec.allowance) == repr(want.allowance)
        assert rec.allowance is not None and math.isfinite(rec.allowance.ytd_t)
