"""The minute cycle turns kernel arrays into records: flags, substitution, totals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from compute.cycle import MinuteCycle
from compute.tagstore import TagStore
from model.flags import DataFlag
from server.config import parse_plant
from server.historian import Historian
from tests.fixtures.plant import VECTOR, plant_dict

T = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def o2_plant() -> MinuteCycle:
    d = plant_dict()
    d["devices"][0]["tags"].append({"id": "s1_o2", "register": 22, "unit": "%",
                                    "sim": {"value": 6.0}})
    src = d["units"][0]["sources"][0]
    src["inputs"]["o2_dry_pct"] = {"tag": "s1_o2"}
    src["co2_from_o2"] = {}  # bituminous coal: Fd 9780, Fc 1800
    return MinuteCycle(parse_plant(d, "test").plan())


def feed(cycle: MinuteCycle, values: dict[str, float]) -> TagStore:
    store = TagStore(cycle.calc.tag_ids, 64)
    for i in range(12):
        for tag, v in values.items():
            store.append(store.index[tag], T.timestamp() + 5 * i, v, 0)
    return store


VALUES = {"s1_velocity": VECTOR["velocity"], "s1_temp": VECTOR["temp"],
          "s1_static": VECTOR["static"], "s1_moisture": VECTOR["moisture_pct"],
          "u1_power": 600.0, "s1_o2": 6.0}


async def test_co2_from_o2_is_marked_and_stored(tmp_path: Path) -> None:
    cycle = o2_plant()
    # CO2 analyser out (no samples): 100 · 1800/9780 · (20.9 − 6.0)/20.9 = 13.12120 % dry
    result = cycle.run(T, feed(cycle, VALUES).take(T.timestamp(), T.timestamp() + 60))
    (s,) = result.sources
    assert s.substitution == "f_factor_o2"
    assert s.co2_dry_pct == pytest.approx(13.12120, abs=5e-6)
    assert s.flag is DataFlag.N
    h = Historian(tmp_path / "h.sqlite")
    await h.start()
    try:
        await h.on_minute(result)
        (row,) = await h.source_minutes("S1", T, T.replace(minute=1))
    finally:
        await h.stop()
    assert row["substitution"] == "f_factor_o2"


def test_measured_co2_is_not_marked() -> None:
    cycle = o2_plant()
    result = cycle.run(T, feed(cycle, {**VALUES, "s1_co2": 12.0}).take(
        T.timestamp(), T.timestamp() + 60))
    (s,) = result.sources
    assert (s.substitution, s.co2_dry_pct) == ("", 12.0)
    assert s.co2_kg == pytest.approx(3282.70, abs=0.005)
    assert result.units[0].output_mwh == pytest.approx(10.0)
    assert s.co2_today_t == pytest.approx(3.28270, abs=5e-6)
