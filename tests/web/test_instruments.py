"""GET /api/v1/instruments on a real web sink (aiohttp on 127.0.0.1) with a real plant
config: every tag with its instrument and calibration state, and each source's CO2
uncertainty from its instruments against a worked example done by hand."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from server.config import PlantConfig, load_config, parse_config
from tests.conftest import free_port
from tests.fixtures.plant import plant_dict
from web.app import WebSink

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")

# Accuracy class (% of reading) of each instrument of the fixture's stack S1.
ACCURACY = {"s1_co2": 1.5, "s1_velocity": 3.0, "s1_temp": 0.6, "s1_static": 0.9,
            "s1_moisture": 1.2}
INTERVAL_D = 90
# Days left to the due date, per tag: ok, ok, due today (still due_soon), due soon, overdue.
LEFT = {"s1_co2": 40, "s1_velocity": 15, "s1_temp": 0, "s1_static": 14, "s1_moisture": -3}


def _plant(today: dt.date, *, co2_basis: str = "dry",
           drop: tuple[str, ...] = ()) -> dict[str, Any]:
    d = plant_dict(web_port=free_port())
    for tag in d["devices"][0]["tags"]:
        if tag["id"] in ACCURACY and tag["id"] not in drop:
            calibrated = today - dt.timedelta(days=INTERVAL_D) + dt.timedelta(
                days=LEFT[tag["id"]])
            tag["instrument"] = {"serial": f"SN-{tag['id']}", "model": "test model",
                                 "accuracy_pct": ACCURACY[tag["id"]],
                                 "calibrated_on": calibrated.isoformat(),
                                 "calibration_interval_days": INTERVAL_D,
                                 "certificate": f"JD-{tag['id']}"}
    d["units"][0]["sources"][0]["inputs"]["co2_basis"] = co2_basis
    return d


async def _get(d: dict[str, Any] | PlantConfig) -> dict[str, Any]:
    sink = WebSink(d if isinstance(d, PlantConfig) else parse_config(d, "test_instruments"))
    await sink.start()
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{sink.port}/api/v1/instruments") as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            body: dict[str, Any] = await r.json()
            return body
    finally:
        await sink.stop()


def _today() -> dt.date:
    return dt.datetime.now(TZ).date()


async def test_register_lists_every_tag_with_due_date_and_state() -> None:
    today = _today()
    body = await _get(_plant(today))
    if body["date"] != today.isoformat():
        pytest.skip("the plant-local date changed during the test")
    assert body["timezone"] == "Asia/Shanghai" and body["due_soon_days"] == 14
    rows = {r["tag"]: r for r in body["instruments"]}
    assert list(rows) == ["s1_velocity", "s1_temp", "s1_static", "s1_moisture", "s1_co2",
                          "u1_power"]  # every tag, in configuration order
    co2 = rows["s1_co2"]
    assert co2["device"] == "cems1" and co2["unit"] == "%" and co2["used_by"] == ["S1"]
    assert (co2["serial"], co2["model"], co2["accuracy_pct"]) == ("SN-s1_co2", "test model",
                                                                  1.5)
    assert co2["calibrated_on"] == (today - dt.timedelta(days=50)).isoformat()
    assert co2["calibration_interval_days"] == 90 and co2["certificate"] == "JD-s1_co2"
    assert co2["calibration_due"] == (today + dt.timedelta(days=40)).isoformat()
    assert {t: (r["days_to_due"], r["state"]) for t, r in rows.items()} == {
        "s1_co2": (40, "ok"), "s1_velocity": (15, "ok"), "s1_temp": (0, "due_soon"),
        "s1_static": (14, "due_soon"), "s1_moisture": (-3, "overdue"),
        "u1_power": (None, "unregistered")}
    assert rows["u1_power"]["serial"] is None and rows["u1_power"]["used_by"] == ["U1"]
    assert body["counts"] == {"ok": 2, "due_soon": 2, "overdue": 1, "unregistered": 1}


async def test_due_soon_days_is_configurable() -> None:
    today = _today()
    d = _plant(today)
    d["instruments"] = {"due_soon_days": 20}
    body = await _get(d)
    states = {r["tag"]: r["state"] for r in body["instruments"]}
    assert states["s1_velocity"] == "due_soon" and states["s1_co2"] == "ok"


async def test_source_uncertainty_worked_example() -> None:
    body = await _get(_plant(_today()))
    s1, = body["sources"]
    assert (s1["source"], s1["unit"], s1["missing"]) == ("S1", "U1", [])
    # By hand: u = a/√3 for each instrument (a uniform bound), all sensitivities 1, the
    # barometric pressure a constant (101325 Pa, no instrument, adds nothing):
    #   u_c² = (1.5² + 3.0² + 0.6² + 0.9² + 1.2²)/3 = (2.25 + 9 + 0.36 + 0.81 + 1.44)/3
    #        = 13.86/3 = 4.62            → u_c = √4.62 = 2.1494185 %
    #   expanded (k = 2)                  → U = 4.2988370 %
    assert s1["co2_rel_uncertainty_pct"] == pytest.approx(2.1494185, abs=1e-6)
    assert s1["co2_rel_expanded_uncertainty_pct"] == pytest.approx(4.2988370, abs=1e-6)
    assert s1["coverage_factor"] == 2.0
    inputs = {i["input"]: i for i in s1["inputs"]}
    assert list(inputs) == ["co2_pct", "velocity_m_s", "temp_c", "static_pa", "baro_pa",
                            "moisture_pct"]
    assert inputs["co2_pct"]["tag"] == "s1_co2" and inputs["co2_pct"]["accuracy_pct"] == 1.5
    assert inputs["co2_pct"]["rel_std_uncertainty_pct"] == pytest.approx(0.8660254, abs=1e-6)
    assert inputs["baro_pa"] == {"input": "baro_pa", "tag": None, "constant": 101325.0,
                                 "accuracy_pct": None, "rel_std_uncertainty_pct": 0.0,
                                 "sensitivity": 1.0, "state": None}
    assert inputs["moisture_pct"]["state"] == "overdue"  # the state travels with the input


async def test_wet_co2_leaves_the_moisture_out() -> None:
    body = await _get(_plant(_today(), co2_basis="wet"))
    s1, = body["sources"]
    # CO2 read wet: C_w/(1−Xsw) · Q·(1−Xsw), the moisture cancels. By hand:
    #   u_c² = (2.25 + 9 + 0.36 + 0.81)/3 = 12.42/3 = 4.14 → u_c = √4.14 = 2.0346990 %
    assert s1["co2_rel_uncertainty_pct"] == pytest.approx(2.0346990, abs=1e-6)
    assert "moisture_pct" not in [i["input"] for i in s1["inputs"]]


async def test_an_unregistered_input_makes_it_unknown() -> None:
    body = await _get(_plant(_today(), drop=("s1_static",)))
    s1, = body["sources"]
    assert s1["co2_rel_uncertainty_pct"] is None
    assert s1["co2_rel_expanded_uncertainty_pct"] is None
    assert s1["missing"] == ["s1_static"]
    static = next(i for i in s1["inputs"] if i["input"] == "static_pa")
    assert static["state"] == "unregistered" and static["accuracy_pct"] is None


async def test_demo_plant_register() -> None:
    cfg = load_config(REPO / "config" / "demo-plant.yaml")
    web = cfg.web.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    body = await _get(cfg.model_copy(update={"web": web}))
    rows = {r["tag"]: r for r in body["instruments"]}
    assert len(rows) == sum(len(dev.tags) for dev in cfg.devices)
    assert rows["u1_gen_power"]["state"] == "unregistered"
    s1, s2 = body["sources"]
    # S1 (dry CO2): CO2 1.0, velocity 2.0, temperature 0.5, static 0.25, baro 0.1,
    # moisture 2.0 → u_c² = (1 + 4 + 0.25 + 0.0625 + 0.01 + 4)/3 = 9.3225/3 = 3.1075
    assert s1["co2_rel_uncertainty_pct"] == pytest.approx(math.sqrt(3.1075), abs=1e-9)
    # S2 (wet CO2, moisture out): CO2 1.5, velocity 2.0, temperature 0.5, static 0.25,
    # baro 0.1 (stack 1's barometer) → (2.25 + 4 + 0.25 + 0.0625 + 0.01)/3 = 6.5725/3
    assert s2["co2_rel_uncertainty_pct"] == pytest.approx(math.sqrt(6.5725 / 3), abs=1e-9)
