"""The boundary tree site → process → facility: its configuration, and the roll-up of unit
results up the tree (compute/boundaries.py), against sums and shares worked by hand."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from compute.boundaries import (
    FACILITY,
    PROCESS,
    SITE,
    Node,
    accounted_co2_t,
    accounted_co2e_t,
    rollup,
    tree_of,
)
from model.errors import ConfigError
from model.flags import DataFlag
from model.records import UnitPeriod
from server.config import parse_config
from tests.fixtures.boundaries import (
    boundary_plant_dict,
    period,
    source_period,
    unit_period,
)

T0 = datetime(2026, 11, 20, 16, tzinfo=UTC)  # 2026-11-21 00:00 in Asia/Shanghai
H = timedelta(hours=1)


def rel(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def by_id(root: Node) -> dict[str, Node]:
    return {n.id: n for n, _ in root.walk()}


@pytest.fixture(scope="module")
def tree() -> Any:
    return tree_of(parse_config(boundary_plant_dict(), "plant.yaml"))


def problems_of(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(d, "plant.yaml")
    assert str(exc.value).startswith("plant.yaml: ")
    return exc.value.problems


# ------------------------------------------------------------------ configuration


def test_the_tree_follows_the_plant_file(tree: Any) -> None:
    assert [(p.id, p.kind, [f.id for f in p.facilities]) for p in tree.processes] == [
        ("iron", "ironmaking", ["BF1", "BF2"]), ("power", "power", ["G1"])]
    assert tree.processes[0].name_zh == "炼铁"
    assert tree.processes[0].facilities[0].sources == ("S_BF1",)
    assert not tree.processes[0].implicit


def test_without_processes_each_unit_is_its_own_process() -> None:
    tree = tree_of(parse_config(boundary_plant_dict(processes=False), "plant.yaml"))
    assert [(p.id, p.name, p.implicit, [f.id for f in p.facilities])
            for p in tree.processes] == [("BF1", "Blast furnace 1", True, ["BF1"]),
                                          ("BF2", "Blast furnace 2", True, ["BF2"]),
                                          ("G1", "Generator 1", True, ["G1"])]


def test_every_unit_must_name_a_known_process() -> None:
    d = boundary_plant_dict()
    del d["units"][1]["process"]
    d["units"][2]["process"] = "steel"
    problems = problems_of(d)
    assert [p for p, _ in problems] == ["units[1].process", "units[2].process",
                                        "processes[1]"]
    assert "must name its process" in problems[0][1] and "iron, power" in problems[0][1]
    assert "unknown process 'steel'" in problems[1][1]
    assert "process 'power' has no units" in problems[2][1]


def test_a_process_without_the_list_and_a_duplicate_process_are_refused() -> None:
    d = boundary_plant_dict(processes=False)
    d["units"][0]["process"] = "iron"
    [(path, text)] = problems_of(d)
    assert path == "units[0].process" and "no top-level 'processes'" in text
    d = boundary_plant_dict()
    d["processes"].append({"id": "iron", "name": "again"})
    [(path, text)] = problems_of(d)
    assert path == "processes[2].id" and "duplicate process id 'iron'" in text


def test_a_bad_process_id_names_the_key() -> None:
    d = boundary_plant_dict()
    d["processes"][0]["id"] = "1 bad"
    assert any(p.startswith("processes[0].id") for p, _ in problems_of(d))


# ------------------------------------------------------------------ the roll-up


def test_three_units_in_two_processes(tree: Any) -> None:
    # One hour. BF1 120.5 t CO2 (121.0 t CO2e, 250 t of hot metal), BF2 30.25 (30.5, 50 t),
    # G1 49.25 (49.5, 60 MWh).
    # iron  = 120.5 + 30.25 = 150.75 t CO2, 121.0 + 30.5 = 151.5 t CO2e, 300 t
    # power = 49.25 t CO2, 49.5 t CO2e, 60 MWh
    # site  = 200.0 t CO2, 201.0 t CO2e
    # Shares of CO2: BF1 in iron 120.5/150.75 = 482/603 = 79.933665008291874 %, of the site
    # 120.5/200 = 60.25 %; BF2 in iron 121/603 = 20.066334991708126 %, of the site 15.125 %;
    # G1 100 % of power, 24.625 % of the site; iron 75.375 %, power 24.625 % of the site.
    # Shares of CO2e: BF1 in iron 121/151.5 = 79.867986798679868 %, of the site 121/201
    # = 60.199004975124378 %; iron 151.5/201 = 75.373134328358209 %, power 49.5/201
    # = 24.626865671641791 %.
    rec = period("hour", T0, T0 + H, [
        unit_period("BF1", T0, 120.5, 121.0, output_t=250.0),
        unit_period("BF2", T0, 30.25, 30.5, output_t=50.0),
        unit_period("G1", T0, 49.25, 49.5, output_mwh=60.0)],
        [source_period("S_BF1", T0, 120.5), source_period("S_BF2", T0, 30.25),
         source_period("S_G1", T0, 49.25, valid=False)])
    root = rollup(tree, [rec])
    n = by_id(root)
    assert root.level == SITE and n["iron"].level == PROCESS and n["BF1"].level == FACILITY
    assert [c.id for c in root.children] == ["iron", "power"]
    assert rel(root.co2_t, 200.0) and rel(root.co2e_t, 201.0)
    assert rel(n["iron"].co2_t, 150.75) and rel(n["iron"].co2e_t, 151.5)
    assert rel(n["iron"].output_t, 300.0) and math.isnan(n["iron"].output_mwh)
    assert rel(root.output_t, 300.0) and rel(root.output_mwh, 60.0)
    assert rel(n["BF1"].share_of_parent_pct, 79.933665008291874)
    assert rel(n["BF1"].share_of_site_pct, 60.25)
    assert rel(n["BF2"].share_of_parent_pct, 20.066334991708126)
    assert rel(n["BF2"].share_of_site_pct, 15.125)
    assert rel(n["G1"].share_of_parent_pct, 100.0) and rel(n["G1"].share_of_site_pct, 24.625)
    assert rel(n["iron"].share_of_parent_pct, 75.375)
    assert rel(n["power"].share_of_site_pct, 24.625)
    assert rel(n["BF1"].co2e_share_of_parent_pct, 79.867986798679868)
    assert rel(n["BF1"].co2e_share_of_site_pct, 60.199004975124378)
    assert rel(n["iron"].co2e_share_of_site_pct, 75.373134328358209)
    assert rel(n["power"].co2e_share_of_parent_pct, 24.626865671641791)
    assert math.isnan(root.share_of_parent_pct) and rel(root.share_of_site_pct, 100.0)
    assert root.complete and root.valid and root.missing == ()
    assert (root.n_valid, root.n_invalid) == (2, 0)
    assert (n["iron"].n_valid, n["iron"].n_invalid) == (2, 0)
    # G1's one stack was invalid that hour (its value is a substitute): the facility has a
    # valid record still, and one invalid emission point.
    assert (n["G1"].n_valid, n["G1"].n_invalid) == (0, 1)
    assert (n["BF1"].n_valid, n["BF1"].n_invalid) == (1, 0)


def test_an_invalid_unit_without_a_value_leaves_its_process_incomplete(tree: Any) -> None:
    # BF1 100 t, BF2 invalid without a substitute (NaN), G1 50 t.
    # iron = 100 t of what is known, flagged incomplete (BF2 missing), never "100 t" as if
    # whole; its shares and the site's are unknown; power is complete: G1 100 % of it, but
    # its share of the incomplete site is unknown too. Site 150 t known, incomplete.
    rec = period("hour", T0, T0 + H, [unit_period("BF1", T0, 100.0),
                                      unit_period("BF2", T0, math.nan, valid=False),
                                      unit_period("G1", T0, 50.0)])
    root = rollup(tree, [rec])
    n = by_id(root)
    assert rel(n["iron"].co2_t, 100.0) and not n["iron"].complete and not n["iron"].valid
    assert n["iron"].missing == ("BF2",) and root.missing == ("BF2",)
    assert (n["iron"].n_valid, n["iron"].n_invalid) == (1, 1)
    assert math.isnan(n["BF2"].co2_t) and not n["BF2"].complete
    assert math.isnan(n["BF1"].share_of_parent_pct)
    assert math.isnan(n["iron"].share_of_site_pct)
    assert n["power"].complete and rel(n["G1"].share_of_parent_pct, 100.0)
    assert math.isnan(n["power"].share_of_site_pct) and math.isnan(n["G1"].share_of_site_pct)
    assert rel(root.co2_t, 150.0) and not root.complete
    assert (root.n_valid, root.n_invalid) == (1, 1)


def test_a_substituted_unit_counts_but_is_invalid(tree: Any) -> None:
    # BF2's hour is invalid but has a substitute of 50 t: iron = 150 t, complete, with one
    # invalid facility. BF1 100/150 = 66.666666666666667 % of iron; site 150 + 50 = 200 t,
    # iron 75 %.
    rec = period("hour", T0, T0 + H, [unit_period("BF1", T0, 100.0),
                                      unit_period("BF2", T0, 50.0, valid=False),
                                      unit_period("G1", T0, 50.0)])
    n = by_id(rollup(tree, [rec]))
    assert n["iron"].complete and not n["iron"].valid
    assert (n["iron"].n_valid, n["iron"].n_invalid) == (1, 1)
    assert rel(n["BF1"].share_of_parent_pct, 66.666666666666667)
    assert rel(n["iron"].share_of_site_pct, 75.0)


def test_days_of_a_month_and_a_day_without_a_record(tree: Any) -> None:
    # Two stored days. Day 1: BF1 10, BF2 5, G1 5; day 2: BF1 20, BF2 10 and no G1 record.
    # BF1 30, BF2 15 → iron 45 t complete, BF1 30/45 = 66.666666666666667 %; G1 5 t known,
    # missing a day → power and site incomplete, site 50 t known.
    d0, d1 = T0, T0 + 24 * H
    days = [period("day", d0, d1, [unit_period("BF1", d0, 10.0), unit_period("BF2", d0, 5.0),
                                   unit_period("G1", d0, 5.0)],
                   [source_period("S_BF1", d0, 10.0)]),
            period("day", d1, d1 + 24 * H, [unit_period("BF1", d1, 20.0),
                                            unit_period("BF2", d1, 10.0)],
                   [source_period("S_BF1", d1, 20.0, valid=False)])]
    root = rollup(tree, days)
    n = by_id(root)
    assert rel(n["BF1"].co2_t, 30.0) and rel(n["iron"].co2_t, 45.0) and n["iron"].complete
    assert rel(n["BF1"].share_of_parent_pct, 66.666666666666667)
    assert rel(n["G1"].co2_t, 5.0) and not n["power"].complete and root.missing == ("G1",)
    assert rel(root.co2_t, 50.0) and math.isnan(n["iron"].share_of_site_pct)
    # S_BF1 was invalid on day 2, S_BF2 has no record at all: both count as invalid points.
    assert (n["BF1"].n_valid, n["BF1"].n_invalid) == (0, 1)
    assert (n["BF2"].n_valid, n["BF2"].n_invalid) == (0, 1)


def test_nothing_stored_is_incomplete_not_zero(tree: Any) -> None:
    root = rollup(tree, [])
    assert math.isnan(root.co2_t) and not root.complete
    assert root.missing == ("BF1", "BF2", "G1")


def test_a_zero_total_has_no_shares(tree: Any) -> None:
    rec = period("hour", T0, T0 + H, [unit_period(u, T0, 0.0) for u in ("BF1", "BF2", "G1")])
    root = rollup(tree, [rec])
    assert root.complete and root.co2_t == 0.0
    assert all(math.isnan(n.share_of_site_pct) for n, _ in root.walk())


def test_the_accessors_fall_back_for_records_without_the_new_fields() -> None:
    u = UnitPeriod("U", T0, 7.0, 9.0, 1.0, math.nan, True, DataFlag.N)  # no co2_t, co2e_t
    assert accounted_co2_t(u) == 7.0 and accounted_co2e_t(u) == 7.0
    factor_unit = dataclasses.replace(u, basis="factor")
    assert accounted_co2_t(factor_unit) == 9.0
    assert accounted_co2e_t(unit_period("U", T0, 7.0, 7.5)) == 7.5
    # A record with a GWP set whose CO2e is unknown (a gas meter failed) stays unknown:
    # CO2 alone would understate it.
    assert math.isnan(accounted_co2e_t(dataclasses.replace(u, co2_t=7.0, gwp_set="SAR")))
