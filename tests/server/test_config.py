"""Configuration validation: every bad file names the file, the key path and the problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from alarms.config import with_alarm_rules
from model.errors import ConfigError
from server.config import load_config, load_plant, parse_config
from tests.fixtures.plant import plant_dict

REPO = Path(__file__).resolve().parents[2]


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "plant.yaml")
    assert str(exc.value).startswith("plant.yaml: ")
    return exc.value.problems


def test_fixture_config_is_valid() -> None:
    cfg = parse_config(plant_dict(), "plant.yaml")
    assert cfg.devices[0].tags[0].address == 0


@pytest.mark.parametrize("name", ["demo-plant.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "config" / name)
    assert cfg.units and cfg.devices


def test_unknown_protocol() -> None:
    d = plant_dict()
    d["devices"][0]["protocol"] = "modbus_tpc"
    assert problems_of(d) == [("devices[0].protocol",
                               "unknown protocol 'modbus_tpc' (known: 'modbus_tcp', "
                               "'modbus_rtu', 'dlt645', 'cjt188')")]


def test_duplicate_tag() -> None:
    d = plant_dict()
    d["devices"][0]["tags"].append(copy.deepcopy(d["devices"][0]["tags"][0]))
    d["devices"][0]["tags"][-1]["register"] = 40
    (path, msg), = problems_of(d)
    assert path == "devices[0].tags[6].id"
    assert msg == "duplicate tag id 's1_velocity' (first at devices[0].tags[0])"


def test_missing_area_for_cems_source() -> None:
    d = plant_dict()
    del d["units"][0]["sources"][0]["area_m2"]
    assert problems_of(d) == [(
        "units[0].sources[0].area_m2",
        "CEMS source with a velocity input needs the duct area 'area_m2'")]


def test_negative_poll_rate() -> None:
    d = plant_dict()
    d["devices"][0]["poll_interval_s"] = -1
    assert problems_of(d) == [("devices[0].poll_interval_s", "Input should be greater than 0")]


def test_unknown_tag_reference_and_unknown_key() -> None:
    d = plant_dict()
    d["units"][0]["sources"][0]["inputs"]["co2_pct"] = {"tag": "nope"}
    assert problems_of(d) == [("units[0].sources[0].inputs.co2_pct.tag", "unknown tag 'nope'")]
    d = plant_dict()
    d["units"][0]["sources"][0]["areaa_m2"] = 3
    assert ("units[0].sources[0].areaa_m2", "unknown key") in problems_of(d)


def test_several_problems_reported_together() -> None:
    d = plant_dict()
    d["devices"][0]["port"] = 70000
    d["clock"]["minute_seconds"] = 0
    paths = [p for p, _ in problems_of(d)]
    assert paths == ["clock.minute_seconds", "devices[0].port"]


def test_alarm_rule_references_are_checked() -> None:
    d = plant_dict()
    d["alarms"] = {"rules": [{"id": "r1", "target": {"source": "S9", "field": "co2_kg"},
                              "alarm": 1.0, "notify": ["mail"]}]}
    assert problems_of(d) == [("alarms.rules[0].target.source", "unknown source 'S9'"),
                              ("alarms.rules[0].notify[0]", "unknown channel 'mail'")]


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("site:\n  id: x\n  name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert str(exc.value).startswith(f"{f}: line ")
    assert "not valid YAML" in str(exc.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        load_config("/nonexistent/plant.yaml")


def test_config_roundtrips_through_yaml(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(plant_dict(), allow_unicode=True), encoding="utf-8")
    assert load_config(f).site.name_zh == "测试电厂"


def test_demo_plant_physics_is_plausible() -> None:
    """The shipped demo at full and at minimum load gives figures a 600 MW coal unit has.

    Bounds by hand: a 600 MW unit burns ≈ 220–260 t coal/h and emits ≈ 400–560 t CO2/h,
    0.75–0.95 t CO2/MWh; stack flue gas ≈ 1.5–2.2 million m³/h standard dry.
    """
    import numpy as np

    from compute import kernels as k
    from compute.minute import MinuteCalculator
    from compute.tagstore import TagStore

    cfg = load_config(REPO / "config" / "demo-plant.yaml")
    calc = MinuteCalculator(load_plant(REPO / "config" / "demo-plant.yaml").plan())
    for level in ("max", "min"):
        store = TagStore(calc.tag_ids, capacity=64)
        for dev in cfg.devices:
            for tag in dev.tags:
                assert tag.sim is not None
                v = tag.sim.value if tag.sim.value is not None else getattr(tag.sim, level)
                for i in range(12):
                    store.append(store.index[tag.id], float(i), float(v), 0)
        a = calc.compute(store.take(0.0, 60.0))
        rate_t_h = a.cems[:, k.OUT_RATE] / 1000
        intensity = a.unit_co2_kg / 1000 / a.unit_output_mwh
        if level == "max":
            assert np.all((rate_t_h > 400) & (rate_t_h < 560)), rate_t_h
            assert np.all((a.cems[:, k.OUT_FLOW_SD] > 1.5e6) & (a.cems[:, k.OUT_FLOW_SD] < 2.2e6))
        assert np.all((intensity > 0.75) & (intensity < 0.95)), (level, intensity)


def source_inputs(d: dict[str, Any]) -> dict[str, Any]:
    inputs: dict[str, Any] = d["units"][0]["sources"][0]["inputs"]
    return inputs


def pitot_plant() -> dict[str, Any]:
    """The fixture plant with its velocity tag read as a pitot's dynamic pressure."""
    d = plant_dict()
    src = d["units"][0]["sources"][0]
    src["inputs"]["dynamic_pressure_pa"] = src["inputs"].pop("velocity_m_s")
    src["pitot"] = {"kp": 0.84}
    return d


def test_pitot_source_with_f_factor_and_moisture_from_o2_is_valid() -> None:
    d = pitot_plant()
    src = d["units"][0]["sources"][0]
    src["co2_from_o2"] = {}
    inputs = source_inputs(d)
    del inputs["moisture_pct"]
    inputs |= {"o2_dry_pct": {"value": 6.0}, "o2_wet_pct": {"value": 5.52}}
    cfg = parse_config(d, "plant.yaml")
    s = cfg.units[0].sources[0]
    assert s.pitot is not None and (s.pitot.kp, s.pitot.kv) == (0.84, 1.0)
    assert s.co2_from_o2 is not None and (s.co2_from_o2.fd, s.co2_from_o2.fc) == (9780, 1800)


def test_two_flow_inputs() -> None:
    d = plant_dict()
    source_inputs(d)["dynamic_pressure_pa"] = {"tag": "s1_static"}
    assert problems_of(d) == [(
        "units[0].sources[0].inputs",
        "give exactly one flow input: 'velocity_m_s', 'flow_act_m3_h' or "
        "'dynamic_pressure_pa' (got 'velocity_m_s' and 'dynamic_pressure_pa')")]


def test_no_flow_input() -> None:
    d = plant_dict()
    del source_inputs(d)["velocity_m_s"]
    assert problems_of(d) == [(
        "units[0].sources[0].inputs",
        "give exactly one flow input: 'velocity_m_s', 'flow_act_m3_h' or "
        "'dynamic_pressure_pa' (got none)")]


def test_dynamic_pressure_without_pitot_coefficients() -> None:
    d = pitot_plant()
    del d["units"][0]["sources"][0]["pitot"]
    assert problems_of(d) == [(
        "units[0].sources[0].pitot",
        "CEMS source with a dynamic pressure input needs 'pitot' with the pitot coefficient "
        "'kp' (from the probe's calibration; nominally 0.84 for an S-type pitot)")]


def test_pitot_without_kp_and_bad_kv() -> None:
    d = pitot_plant()
    d["units"][0]["sources"][0]["pitot"] = {"kv": 0}
    assert problems_of(d) == [("units[0].sources[0].pitot.kp", "required key is missing"),
                              ("units[0].sources[0].pitot.kv", "Input should be greater than 0")]


def test_dynamic_pressure_without_area() -> None:
    d = pitot_plant()
    del d["units"][0]["sources"][0]["area_m2"]
    assert problems_of(d) == [(
        "units[0].sources[0].area_m2",
        "CEMS source with a dynamic pressure input needs the duct area 'area_m2'")]


def test_pitot_block_on_a_velocity_source() -> None:
    d = plant_dict()
    d["units"][0]["sources"][0]["pitot"] = {"kp": 0.84}
    assert problems_of(d) == [("units[0].sources[0].pitot",
                               "only used with a 'dynamic_pressure_pa' input; remove it")]


def test_dry_molar_mass_with_an_o2_input() -> None:
    d = pitot_plant()
    d["units"][0]["sources"][0]["pitot"]["dry_molar_mass_g_mol"] = 30.0
    source_inputs(d)["o2_dry_pct"] = {"value": 6.0}
    assert problems_of(d) == [(
        "units[0].sources[0].pitot.dry_molar_mass_g_mol",
        "not used: with an O2 input the dry molar mass is computed every minute from CO2 and "
        "O2; remove it")]


def test_moisture_needs_a_meter_or_both_o2_analysers() -> None:
    d = plant_dict()
    inputs = source_inputs(d)
    del inputs["moisture_pct"]
    inputs["o2_wet_pct"] = {"value": 5.52}
    assert problems_of(d) == [(
        "units[0].sources[0].inputs",
        "give 'moisture_pct', or both 'o2_wet_pct' and 'o2_dry_pct' to derive the moisture "
        "from them")]


def test_co2_from_o2_without_an_o2_input() -> None:
    d = plant_dict()
    d["units"][0]["sources"][0]["co2_from_o2"] = {"fd": 8710, "fc": 1040}
    assert problems_of(d) == [(
        "units[0].sources[0].co2_from_o2",
        "CO2 from O2 needs an O2 input: 'inputs.o2_dry_pct', or 'inputs.o2_wet_pct' with "
        "'inputs.moisture_pct'")]


def test_f_factor_must_be_positive_and_o2_tags_are_checked() -> None:
    d = plant_dict()
    d["units"][0]["sources"][0]["co2_from_o2"] = {"fd": 0}
    assert problems_of(d) == [("units[0].sources[0].co2_from_o2.fd",
                               "Input should be greater than 0")]
    d = plant_dict()
    source_inputs(d)["o2_dry_pct"] = {"tag": "s1_o2"}
    assert problems_of(d) == [("units[0].sources[0].inputs.o2_dry_pct.tag",
                               "unknown tag 's1_o2'")]


def test_demo_users_only_on_an_all_simulated_plant() -> None:
    d = plant_dict()
    d["web"]["demo_users"] = True
    assert parse_config(d, "plant.yaml").web.demo_users  # every device simulated: allowed
    d["devices"][0]["simulate"] = False
    with pytest.raises(ConfigError) as err:
        parse_config(d, "plant.yaml")
    assert err.value.problems == [(
        "web.demo_users", "demo accounts have known passwords and are only for a demo plant "
        "whose devices are all simulated; real device(s): cems1: create users with "
        "'carbonscada user add'")]


def test_tls_needs_certificate_and_key() -> None:
    d = plant_dict()
    d["web"]["tls_cert"] = "var/web.pem"
    with pytest.raises(ConfigError, match=r"plant.yaml: web: give both 'tls_cert' and 'tls_key'"):
        parse_config(d, "plant.yaml")


def test_alarm_rules_replaced_at_run_time_are_validated_like_the_file() -> None:
    d = plant_dict()
    d["alarms"] = {"rules": [
        {"id": "S1_rate", "target": {"source": "S1", "field": "co2_rate_t_h"},
         "warning": 470.0, "alarm": 520.0},
        {"id": "U1_int", "kind": "intensity", "scope": {"unit": "U1"}, "window": "day",
         "alarm": 0.95}]}
    cfg = parse_config(d, "plant.yaml")
    rules = [r.model_dump(mode="json") for r in cfg.alarms.rules]
    rules[0]["alarm"] = 999.0
    new = with_alarm_rules(cfg, rules, "PUT /api/v1/alarm-rules")
    assert new.alarms.rules[0].alarm == 999.0  # type: ignore[union-attr]
    assert cfg.alarms.rules[0].alarm != 999.0  # type: ignore[union-attr]
    assert new.devices == cfg.devices and new.alarms.channels == cfg.alarms.channels
    bad = [*rules, {"id": "x", "target": {"unit": "U9", "field": "co2_kg"}, "alarm": 3},
           {"id": "y", "kind": "nope"}]
    bad[0] = {**bad[0], "warning": "high"}
    with pytest.raises(ConfigError) as err:
        with_alarm_rules(cfg, bad, "PUT /api/v1/alarm-rules")
    paths = [p for p, _ in err.value.problems]
    assert paths == ["alarms.rules[0].warning", f"alarms.rules[{len(rules) + 1}].kind"]
    assert str(err.value).startswith("PUT /api/v1/alarm-rules: alarms.rules[0].warning: ")
    with pytest.raises(ConfigError) as err:  # types fine, but it names a unit that is not there
        with_alarm_rules(cfg, bad[1:-1], "PUT /api/v1/alarm-rules")
    assert err.value.problems == [(f"alarms.rules[{len(rules) - 1}].target.unit",
                                   "unknown unit 'U9'")]
