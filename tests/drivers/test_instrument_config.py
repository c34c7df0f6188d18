"""The `instrument:` block of a tag (the instrument register): what it takes, and what a
wrong one says — the file, the key path, and the device and tag by name."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from model.errors import ConfigError
from server.config import load_config, parse_config
from tests.fixtures.plant import plant_dict

REPO = Path(__file__).resolve().parents[2]

CO2 = 4  # index of s1_co2 in the fixture's cems1 tags


def _with(**inst: Any) -> dict[str, Any]:
    d = plant_dict()
    d["devices"][0]["tags"][CO2]["instrument"] = {
        "serial": "GA-771204", "accuracy_pct": 1.0, "calibrated_on": "2026-10-20",
        "calibration_interval_days": 180, **inst}
    return d


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "plant.yaml")
    assert str(exc.value).startswith("plant.yaml: devices[0].tags[4].instrument")
    return exc.value.problems


def test_a_full_block_is_read() -> None:
    cfg = parse_config(_with(model="NDIR extractive", verified_by="Provincial Institute",
                             certificate="JD-2026-10-1185"), "plant.yaml")
    inst = cfg.devices[0].tags[CO2].instrument
    assert inst is not None
    assert (inst.serial, inst.model, inst.accuracy_pct) == ("GA-771204", "NDIR extractive", 1.0)
    assert inst.calibrated_on == dt.date(2026, 10, 20)
    assert inst.calibration_interval_days == 180
    assert (inst.verified_by, inst.certificate) == ("Provincial Institute", "JD-2026-10-1185")
    assert cfg.devices[0].tags[0].instrument is None  # optional


def test_accuracy_must_be_positive_and_named() -> None:
    assert problems_of(_with(accuracy_pct=-1)) == [(
        "devices[0].tags[4].instrument.accuracy_pct",
        "instrument of tag 's1_co2' (device 'cems1'): accuracy_pct is % of reading, more "
        "than 0 and at most 20, not -1")]
    assert problems_of(_with(accuracy_pct=0))[0][1].endswith("not 0")
    assert problems_of(_with(accuracy_pct=50))[0][1].endswith("at most 20, not 50")


def test_interval_must_be_positive_and_named() -> None:
    assert problems_of(_with(calibration_interval_days=0)) == [(
        "devices[0].tags[4].instrument.calibration_interval_days",
        "instrument of tag 's1_co2' (device 'cems1'): calibration_interval_days must be "
        "more than 0, not 0")]


def test_both_wrong_both_said() -> None:
    paths = [p for p, _ in problems_of(_with(accuracy_pct=-2, calibration_interval_days=-5))]
    assert paths == ["devices[0].tags[4].instrument.accuracy_pct",
                     "devices[0].tags[4].instrument.calibration_interval_days"]


def test_bad_date_missing_serial_and_unknown_key() -> None:
    assert problems_of(_with(calibrated_on="2026-13-01")) == [(
        "devices[0].tags[4].instrument.calibrated_on",
        "Input should be a valid date or datetime, month value is outside expected range "
        "of 1-12")]
    d = _with()
    del d["devices"][0]["tags"][CO2]["instrument"]["serial"]
    assert problems_of(d) == [("devices[0].tags[4].instrument.serial",
                               "required key is missing")]
    assert problems_of(_with(accuracy_class="1")) == [(
        "devices[0].tags[4].instrument.accuracy_class", "unknown key")]


def test_demo_plant_registers_its_cems_flow_and_meters() -> None:
    cfg = load_config(REPO / "config" / "demo-plant.yaml")
    tags = {t.id: t for d in cfg.devices for t in d.tags}
    for tag in ("u1_stack_co2", "u2_stack_co2_wet", "u1_stack_velocity", "u2_stack_velocity",
                "u1_feeder_a", "u2_feeder_d", "u1_meter_energy", "station_service_energy",
                "startup_gas_volume"):
        inst = tags[tag].instrument
        assert inst is not None, tag
        assert 0 < inst.accuracy_pct <= 2.0 and inst.calibration_interval_days >= 180
    assert tags["u1_gen_power"].instrument is None  # left unregistered on purpose
