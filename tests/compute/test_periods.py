"""The period stage: hours and days with substitution, factor method, counters, allowance.

Worked examples are built on the calc_vectors.md CEMS minute (C 12.0 % dry, Q_sd
835 718.9 m³/h, ρ 1.964 kg/m³): an hour of such minutes is G_h = 12.0·1.964·835 718.9/100
= 196 962.23 kg/h → 196.96223 t. Plant day 2026-01-01 in Asia/Shanghai (UTC+8), so the
demo coal's first factor version (NCV 17.2 GJ/t, CC 0.03085 tC/GJ, OF 0.99) is in force.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compute.periods import MinuteBatch, PeriodCycle, Readings, minute_batch
from compute.plan import CalculationPlan
from model.flags import DataFlag
from model.records import (
    MinuteResult,
    PeriodRecords,
    SiteMinute,
    SourceColumns,
    TagColumns,
)
from server.config import parse_plant
from tests.fixtures.plant import plant_dict

REPO = Path(__file__).resolve().parents[2]
Q = 835_718.9
DAY0 = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 in Shanghai
HOUR_T = 196.96223035  # 12.0 · 1.964 · 835 718.9 / 100 / 1000


def printed(value: float, decimals: int) -> Any:
    return pytest.approx(value, abs=0.5 * 10.0**-decimals, rel=0)


def config(**changes: Any) -> CalculationPlan:
    """The fixture plant plus a coal feeder tag (t/h) and an auxiliary-power meter (kWh)."""
    d = plant_dict()
    d["devices"][0]["tags"] += [
        {"id": "u1_coal", "register": 30, "unit": "t/h", "sim": {"value": 100.0}},
        {"id": "u1_aux_kwh", "register": 32, "type": "float64", "unit": "kWh",
         "sim": {"value": 0.0}}]
    d["factor_table"] = str(REPO / "config" / "factors.yaml")
    d["reconciliation"] = {"limit_pct": 5.0}
    d["units"][0]["streams"] = [
        {"id": "U1_coal", "kind": "solid_fuel", "factors": "demo_coal",
         "rate_per_h": {"tag": "u1_coal"}},
        {"id": "U1_aux", "kind": "electricity", "factors": "grid_electricity",
         "counter": {"tag": "u1_aux_kwh", "rollover_count": 1_000_000,
                     "max_jump_per_h": 100_000, "quantity_per_count": 0.001}}]
    d["allowance"] = {"annual_t": 1_000_000.0, "carbon_price_cny_t": 80.0}
    d["units"][0]["sources"][0]["substitution"] = {"rule": "mrr_mean_2sigma", "lookback_h": 3}
    for key, value in changes.items():  # a top-level key, or else one of source S1
        (d if key in d else d["units"][0]["sources"][0])[key] = value
    return parse_plant(d, "test").plan()


TAGS = ["s1_velocity", "s1_temp", "s1_static", "s1_moisture", "s1_co2", "u1_power", "u1_coal",
        "u1_aux_kwh"]


def hours_of_minutes(start: datetime, hours: int, conc: dict[int, float] | None = None,
                     bad: dict[int, DataFlag] | None = None, coal_t_h: float = 100.0,
                     kwh: list[float] | None = None) -> MinuteBatch:
    """`hours` hours of minutes from `start`: C 12.0 % (or conc[hour]), Q 835 718.9 m³/h,
    600 MW, coal `coal_t_h`; hours in `bad` flagged so for all their minutes; one meter
    reading 30 s into each minute from `kwh` (one value per minute)."""
    n = hours * 60
    t_s = start.timestamp() + 60.0 * np.arange(n)
    c = np.full((n, 1), 12.0)
    flag = np.zeros((n, 1), np.uint8)
    for h, value in (conc or {}).items():
        c[h * 60:(h + 1) * 60] = value
    for h, f in (bad or {}).items():
        flag[h * 60:(h + 1) * 60] = int(f)
    means = np.zeros((n, len(TAGS)))
    means[:, TAGS.index("u1_power")] = 600.0
    means[:, TAGS.index("u1_coal")] = coal_t_h
    readings = (Readings(t_s + 30.0, np.asarray(kwh, np.float64), np.zeros(n, np.uint8))
                if kwh is not None else Readings.empty())
    return MinuteBatch(t_s, c, np.full((n, 1), Q), flag, means,
                       np.zeros((n, len(TAGS)), np.uint8), (readings,))


def run(cycle: PeriodCycle, batch: MinuteBatch, one_by_one: bool = False) -> list[PeriodRecords]:
    if not one_by_one:
        return cycle.add(batch)
    out = []
    for j in range(batch.t_s.size):
        one = MinuteBatch(batch.t_s[j:j + 1], batch.co2_dry_pct[j:j + 1],
                          batch.flow_std_dry_m3_h[j:j + 1], batch.source_flag[j:j + 1],
                          batch.tag_mean[j:j + 1], batch.tag_flag[j:j + 1],
                          tuple(Readings(r.t_s[(r.t_s >= batch.t_s[j]) & (
                              r.t_s < batch.t_s[j] + 60)], r.value[(r.t_s >= batch.t_s[j]) & (
                                  r.t_s < batch.t_s[j] + 60)], r.flag[(r.t_s >= batch.t_s[j]) & (
                                      r.t_s < batch.t_s[j] + 60)]) for r in batch.counters))
        out += cycle.add(one)
    return out


def kwh_readings(n: int, jump_at: int | None = None) -> list[float]:
    """From 999 000 kWh, +1 000 kWh a minute on a register that wraps at 1 000 000;
    minute `jump_at` adds 11 000 instead."""
    out, v = [], 999_000.0
    for m in range(n):
        out.append(v)
        v = (v + (11_000.0 if m + 1 == jump_at else 1_000.0)) % 1_000_000
    return out


def worked_day(one_by_one: bool = False) -> list[PeriodRecords]:
    # Hours 0–2: C 12.0, 12.5, 13.0 %; hour 3: instrument fault (D) all hour; 4–23: 12.0 %;
    # then hour 0 of the next day. The aux meter jumps at 05:30.
    batch = hours_of_minutes(DAY0, 25, conc={1: 12.5, 2: 13.0}, bad={3: DataFlag.D},
                             kwh=kwh_readings(25 * 60, jump_at=5 * 60 + 30))
    return run(PeriodCycle(config()), batch, one_by_one)


def test_hours_with_mrr_substitute() -> None:
    hours = [r for r in worked_day() if r.level == "hour"]
    assert [h.t for h in hours] == [DAY0 + timedelta(hours=i) for i in range(25)]
    s = [h.sources[0] for h in hours]
    assert s[0].co2_t == printed(196.96223, 5) and s[0].valid and s[0].n_valid == 60
    assert s[1].co2_t == printed(205.16899, 5)  # 12.5 · 1.964 · 835 718.9 / 1e5
    assert s[2].co2_t == printed(213.37575, 5)  # 13.0 · …
    # Hour 3: mean of (12.0, 12.5, 13.0) = 12.5 %, σ = 0.5 → 13.5 %; flow σ = 0 → Q.
    # 13.5 · 1.964 · 835 718.9 / 1e5 = 221.58251 t
    sub = s[3]
    assert (sub.valid, sub.flag, sub.substituted) == (False, DataFlag.D, True)
    assert sub.substitution_rule == "mrr_mean_2sigma"
    assert sub.co2_t == printed(221.58251, 5)
    assert math.isnan(sub.co2_measured_t)  # no valid minute; the substitute stays apart
    # Hour 4: the lookback (hours 1–3) has only 2 valid hours, still enough (min 2).
    assert s[4].co2_t == printed(196.96223, 5) and not s[4].substituted
    # The unit's hours say which of them holds a substitute: hour 3 alone; so does its day.
    assert [h.units[0].n_substituted for h in hours[:5]] == [0, 0, 0, 1, 0]
    day = next(r for r in worked_day() if r.level == "day")
    assert day.units[0].n_substituted == 1


def test_day_totals_factor_method_and_reconciliation() -> None:
    day = next(r for r in worked_day() if r.level == "day")
    assert (day.t, day.t_end) == (DAY0, DAY0 + timedelta(days=1))
    (s1,) = day.sources
    # 21 hours at 196.96223 + 205.16899 + 213.37575 + substituted 221.58251 = 4 776.33409 t
    assert s1.co2_t == printed(4776.33409, 5)
    assert s1.co2_measured_t == printed(4776.33409 - 221.58251, 5)
    assert (s1.valid, s1.n_valid, s1.n_substituted, s1.n_missing) == (True, 23, 1, 0)
    assert s1.substitution_rule == "mrr_mean_2sigma"
    coal, aux = day.streams
    # 24 h × 100 t/h = 2 400 t; 2 400 · 17.2 · 0.03085 · 0.99 · 44/12 = 4 622.76144 t
    assert (coal.quantity, coal.quantity_unit, coal.factor_version) == (
        pytest.approx(2400.0, rel=1e-12), "t", "demo-coal-2020-01")
    assert coal.co2_t == printed(4622.76144, 5) and coal.flag is DataFlag.N
    # Meter: 59 deltas of 1 000 kWh in hour 0 (the first reading opens), 60 in hours 1–23,
    # the 11 000 kWh jump at 05:30 (660 000 kWh/h > 100 000) left out: 59 + 59 + 22·60 =
    # 1 438 MWh; × 0.5703 t/MWh = 820.0914 t
    assert aux.quantity == pytest.approx(1438.0, rel=1e-12) and aux.quantity_unit == "MWh"
    assert aux.co2_t == printed(820.0914, 4) and aux.factor_version == "grid-cn-0.5703"
    assert "implausible_jump" in aux.note and "rollover" in aux.note
    (u1,) = day.units
    assert u1.co2_cems_t == printed(4776.33409, 5)
    assert u1.co2_factor_t == printed(4622.76144, 5)  # purchased electricity is not stack CO2
    assert u1.output_mwh == pytest.approx(24 * 600.0, rel=1e-12)
    # (4 776.33409 − 4 622.76144) / 4 622.76144 · 100 = 3.32210 % < 5 %
    assert u1.reconciliation_diff_pct == printed(3.32210, 5)
    assert not u1.reconciliation_exceeded


def test_counter_hours() -> None:
    hours = [r for r in worked_day() if r.level == "hour"]
    aux = [h.streams[1] for h in hours]
    assert aux[0].quantity == pytest.approx(59.0, rel=1e-12)  # 999 000 → 0 wraps: 1 000 kWh
    assert aux[0].co2_t == printed(33.6477, 4) and aux[0].note == "rollover"
    assert aux[1].quantity == pytest.approx(60.0, rel=1e-12) and aux[1].valid
    assert (aux[5].quantity, aux[5].flag, aux[5].note) == (
        pytest.approx(59.0, rel=1e-12), DataFlag.T, "implausible_jump")
    coal = [h.streams[0] for h in hours]
    # 100 t · 17.2 · 0.03085 · 0.99 · 44/12 = 192.61506 t an hour
    assert coal[7].quantity == pytest.approx(100.0, rel=1e-12)
    assert coal[7].co2_t == printed(192.61506, 5)


def test_allowance_position_at_the_end_of_an_hour() -> None:
    hours = [r for r in worked_day() if r.level == "hour"]
    last = hours[-1].allowance
    assert last is not None
    # ytd = day 1 (4 776.33409) + hour 0 of day 2 (196.96223) = 4 973.29632 t
    assert last.ytd_t == printed(4973.29632, 5)
    # 25 h of the 8 760 h of 2026: 365 · (1 − 25/8 760) = 363.958333 days left
    assert last.year_fraction == pytest.approx(25 / 8760, rel=1e-12)
    assert last.days_left == pytest.approx(363.958333, rel=1e-8)
    # forecast = 4 973.29632 + 4 776.33409 · 363.958333 = 1 743 359.890 t
    assert last.forecast_year_end_t == printed(1_743_359.890, 3)
    assert last.used_pct == printed(0.4973296, 7) and last.headroom_t == printed(
        995_026.70368, 5)
    # 743 359.890 t short at 80 CNY/t = 59 468 791.2 CNY
    assert last.forecast_shortfall_t == printed(743_359.890, 3)
    assert last.shortfall_cost_cny == printed(59_468_791.2, 1)
    assert hours[0].allowance is not None
    assert math.isnan(hours[0].allowance.forecast_year_end_t)  # no closed day yet


def test_minute_by_minute_and_batched_give_identical_records() -> None:
    assert repr(worked_day(one_by_one=True)) == repr(worked_day())


def test_input_arrays_are_not_changed() -> None:
    batch = hours_of_minutes(DAY0, 2, bad={1: DataFlag.D})
    before = batch.co2_dry_pct.copy(), batch.source_flag.copy()
    PeriodCycle(config()).add(batch)
    assert np.array_equal(batch.co2_dry_pct, before[0])
    assert np.array_equal(batch.source_flag, before[1])


def test_too_short_a_lookback_gives_no_substitute_and_says_why() -> None:
    # Hour 0 D: nothing before it in the lookback.
    (h0,) = PeriodCycle(config()).add(hours_of_minutes(DAY0, 1, bad={0: DataFlag.D}))
    s = h0.sources[0]
    assert not s.substituted and math.isnan(s.co2_t) and s.substitution_rule == ""
    assert s.substitution_note == ("co2_dry_pct: 0 valid hours in the lookback, at least 2 "
                                   "needed; flow_std_dry_m3_h: 0 valid hours in the lookback, "
                                   "at least 2 needed")


def test_factor_method_substitute() -> None:
    cycle = PeriodCycle(config(substitution={"rule": "factor_method"}))
    hours = cycle.add(hours_of_minutes(DAY0, 2, bad={1: DataFlag.B}))
    s = hours[1].sources[0]
    # the hour's coal: 100 t → 192.61506 t CO2
    assert s.substituted and s.substitution_rule == "factor_method"
    assert s.co2_t == printed(192.61506, 5) and s.flag is DataFlag.B


def test_max_previous_substitute() -> None:
    cycle = PeriodCycle(config(substitution={"rule": "max_previous_n", "n_hours": 2,
                                             "lookback_h": 24}))
    hours = cycle.add(hours_of_minutes(DAY0, 4, conc={0: 13.0, 1: 12.5, 2: 12.0},
                                       bad={3: DataFlag.C}))
    # max of the previous 2 valid hours: C 12.5 (hour 1), Q → 205.16899 t
    assert hours[3].sources[0].co2_t == printed(205.16899, 5)
    assert hours[3].sources[0].substitution_rule == "max_previous_n"


def test_stopped_unit_is_not_substituted() -> None:
    cycle = PeriodCycle(config())
    hours = cycle.add(hours_of_minutes(DAY0, 4, bad={3: DataFlag.F}))
    s = hours[3].sources[0]
    assert not s.substituted and s.substitution_note == "unit stopped (F): no substitute"


def test_hours_without_minutes_are_closed_as_gaps() -> None:
    cycle = PeriodCycle(config())
    first = hours_of_minutes(DAY0, 1)
    later = hours_of_minutes(DAY0 + timedelta(hours=3), 1)
    out = cycle.add(first) + cycle.add(later)
    assert [(h.t.hour, h.sources[0].flag, h.sources[0].n_valid) for h in out] == [
        (16, DataFlag.N, 60), (17, DataFlag.B, 0), (18, DataFlag.B, 0), (19, DataFlag.N, 60)]
    # one valid hour in the lookback is too few for mean + 2σ (it needs 2): no substitute
    assert not out[1].sources[0].substituted and not out[2].sources[0].substituted


def test_a_partial_hour_closes_only_at_the_end() -> None:
    cycle = PeriodCycle(config())
    one = MinuteBatch(np.array([DAY0.timestamp()]), np.array([[12.0]]), np.array([[Q]]),
                      np.zeros((1, 1), np.uint8), np.zeros((1, len(TAGS))),
                      np.zeros((1, len(TAGS)), np.uint8), (Readings.empty(),))
    assert cycle.add(one) == []
    hour, day = cycle.flush()
    assert (hour.level, day.level) == ("hour", "day")
    assert hour.sources[0].flag is DataFlag.B and hour.sources[0].n_valid == 1
    assert day.sources[0].n_missing == 24 and day.sources[0].flag is DataFlag.B


def test_minutes_must_come_in_order() -> None:
    cycle = PeriodCycle(config())
    cycle.add(hours_of_minutes(DAY0 + timedelta(hours=1), 1))
    with pytest.raises(ValueError, match="time order"):
        cycle.add(hours_of_minutes(DAY0, 1))


def test_a_factor_version_change_within_the_day_splits_the_stream(tmp_path: Path) -> None:
    table = tmp_path / "f.yaml"
    text = (REPO / "config" / "factors.yaml").read_text(encoding="utf-8")
    table.write_text(text + """
  - id: demo-coal-2026-01-01-noon
    stream: demo_coal
    effective_from: 2026-01-01T12:00:00+08:00
    source: test
    factors: {ncv_gj_t: 20.0, cc_tc_gj: 0.03085, of: 0.99}
""", encoding="utf-8")
    cycle = PeriodCycle(config(factor_table=str(table)))
    out = cycle.add(hours_of_minutes(DAY0, 24))
    day = next(r for r in out if r.level == "day")
    morning, afternoon = day.streams[0], day.streams[1]
    # 12 h × 100 t: 1 200 · 17.2 · 0.03085 · 0.99 · 44/12 = 2 311.38072 t;
    # 1 200 · 20.0 · 0.03085 · 0.99 · 44/12 = 2 687.6520 t
    assert (morning.factor_version, morning.quantity) == ("demo-coal-2020-01",
                                                          pytest.approx(1200.0))
    assert morning.co2_t == printed(2311.38072, 5)
    assert (afternoon.factor_version, afternoon.t) == ("demo-coal-2026-01-01-noon",
                                                       DAY0 + timedelta(hours=12))
    assert afternoon.co2_t == printed(2687.6520, 4)
    assert day.units[0].co2_factor_t == printed(2311.38072 + 2687.6520, 4)


def test_restart_continues_from_stored_records() -> None:
    batch = hours_of_minutes(DAY0, 25, conc={1: 12.5, 2: 13.0}, bad={3: DataFlag.D})
    whole = PeriodCycle(config()).add(batch)

    def part(a: int, b: int) -> MinuteBatch:
        return MinuteBatch(batch.t_s[a:b], batch.co2_dry_pct[a:b],
                           batch.flow_std_dry_m3_h[a:b], batch.source_flag[a:b],
                           batch.tag_mean[a:b], batch.tag_flag[a:b], (Readings.empty(),))
    before = PeriodCycle(config()).add(part(0, 5 * 60))  # stopped after hour 4
    resumed = PeriodCycle(config())
    resumed.restore([r for r in before if r.level == "hour"], [])
    after = resumed.add(part(5 * 60, 25 * 60))
    assert repr(after) == repr(whole[len(before):])


# --------------------------------------------------------------- ratio validity, missing data

def _power_lost(batch: MinuteBatch, minutes: slice, mean: float = math.nan) -> MinuteBatch:
    """The batch with u1_power's minutes `minutes` flagged B (mean `mean`: NaN when the meter
    did not answer at all, a number when it answered too few times)."""
    p = TAGS.index("u1_power")
    tag_mean, tag_flag = batch.tag_mean.copy(), batch.tag_flag.copy()
    tag_mean[minutes, p], tag_flag[minutes, p] = mean, int(DataFlag.B)
    return MinuteBatch(batch.t_s, batch.co2_dry_pct, batch.flow_std_dry_m3_h,
                       batch.source_flag, tag_mean, tag_flag, batch.counters)


def _from(batch: MinuteBatch, j: int) -> MinuteBatch:
    """The batch without its first j minutes (the server started later)."""
    r = batch.counters[0]
    keep = r.t_s >= batch.t_s[j]
    return MinuteBatch(batch.t_s[j:], batch.co2_dry_pct[j:], batch.flow_std_dry_m3_h[j:],
                       batch.source_flag[j:], batch.tag_mean[j:], batch.tag_flag[j:],
                       (Readings(r.t_s[keep], r.value[keep], r.flag[keep]),))


def test_an_hour_without_a_valid_output_has_no_intensity() -> None:
    # Hour 0: the power meter answered in 40 minutes only (the other 20 flagged B, with a
    # partial 300 MW): 40 < 45 valid output minutes, the output hour is invalid, so is its
    # intensity — NaN with flag B, although its CO2 hour (60 valid minutes) is valid. Before,
    # it read 196.96223 / 600 = 0.32827 from the 40 minutes. Hour 1 is whole:
    # 196.96223 t / (600 MW · 1 h) = 0.3282704 t/MWh.
    cycle = PeriodCycle(config())
    out = cycle.add(_power_lost(hours_of_minutes(DAY0, 2), slice(0, 20), 300.0))
    h0, h1 = (r.units[0] for r in out)
    assert out[0].sources[0].valid and h0.output_mwh == 600.0
    assert math.isnan(h0.intensity_t_mwh)
    assert (h0.intensity_flag, h0.intensity_n_valid) == (DataFlag.B, 40)
    assert h1.intensity_t_mwh == printed(0.3282704, 7)
    assert (h1.intensity_flag, h1.intensity_n_valid) == (DataFlag.N, 60)


def test_a_day_intensity_is_over_its_hours_with_a_valid_intensity() -> None:
    # Hour 5 of the day without any output (the meter did not answer: NaN, B). Its CO2 is
    # valid, so the day's CEMS CO2 has 24 hours but its output only 23 · 600 = 13 800 MWh:
    # their ratio, 24 · 196.96223 / 13 800 = 0.342543, is what the day read before. Over
    # the 23 hours with a valid intensity: 23 · 196.96223 / (23 · 600) = 0.3282704.
    cycle = PeriodCycle(config())
    out = cycle.add(_power_lost(hours_of_minutes(DAY0, 24), slice(5 * 60, 6 * 60)))
    day = out[-1]
    assert day.level == "day"
    u = day.units[0]
    assert u.co2_cems_t == printed(24 * HOUR_T, 4) and u.output_mwh == 13_800.0
    assert u.intensity_t_mwh == printed(0.3282704, 7)
    assert (u.intensity_flag, u.intensity_n_valid) == (DataFlag.N, 23)
    # Five such hours: 19 < 20 hours with a valid intensity, the day's is invalid.
    cycle = PeriodCycle(config())
    out = cycle.add(_power_lost(hours_of_minutes(DAY0, 24), slice(0, 5 * 60)))
    u = out[-1].units[0]
    assert math.isnan(u.intensity_t_mwh)
    assert (u.intensity_flag, u.intensity_n_valid) == (DataFlag.B, 19)


def test_a_start_up_hour_is_missing_because_the_server_did_not_run() -> None:
    # The server starts at 00:21: the hour has 39 valid minutes (< 45), it is invalid, and
    # no calculated minute carries a flag: "not_running", not a communication failure of a
    # device (the flag stays B: HJ 212 has no letter for it). The day has 1 invalid hour of
    # that kind and 0 of the others, and is flushed after 2 hours: 1 valid < 20, so it is
    # invalid for the same reason. Hour 1 (valid) has no reason.
    cycle = PeriodCycle(config())
    out = cycle.add(_from(hours_of_minutes(DAY0, 2), 21)) + cycle.flush()
    h0, h1, day = (r.sources[0] for r in out)
    assert (h0.valid, h0.flag, h0.n_valid, h0.missing_reason) == (
        False, DataFlag.B, 39, "not_running")
    assert (h1.valid, h1.missing_reason) == (True, "")
    assert (day.valid, day.flag, day.missing_reason) == (False, DataFlag.B, "not_running")


def test_a_device_failure_is_no_missing_reason() -> None:
    # Minutes 0–20 calculated with the CEMS not answering (flag B from the minute kernel):
    # a real communication failure, the hour keeps its B and has no missing reason. An hour
    # without any minute (the server was down) and a day of such hours do.
    cycle = PeriodCycle(config())
    batch = hours_of_minutes(DAY0, 1)
    batch.source_flag[:21] = int(DataFlag.B)
    out = cycle.add(batch) + cycle.add(hours_of_minutes(DAY0 + timedelta(hours=2), 1))
    assert [(r.sources[0].flag, r.sources[0].missing_reason) for r in out] == [
        (DataFlag.B, ""), (DataFlag.B, "not_running"), (DataFlag.N, "")]
    # A day whose every hour was closed without minutes: missing for that reason.
    cycle = PeriodCycle(config())
    out = cycle.add(hours_of_minutes(DAY0 - timedelta(hours=1), 1))
    out += cycle.add(hours_of_minutes(DAY0 + timedelta(days=1), 1))
    day = next(r for r in out if r.level == "day" and r.t == DAY0)
    s = day.sources[0]
    assert (s.valid, s.n_valid, s.n_missing, s.missing_reason) == (False, 0, 24, "not_running")


BERLIN_2026 = (datetime(2025, 12, 31, 23, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC))
FALL_BACK = datetime(2026, 10, 24, 22, tzinfo=UTC)  # 2026-10-25 00:00 CEST: a 25-hour day


def test_missing_hours_of_absent_days_follow_daylight_saving_time() -> None:
    # Europe/Berlin 2026: 365 days, 8760 hours (the 23-hour 29 March and the 25-hour
    # 25 October cancel out). Without the 25 October day record, 25 hours are missing (24
    # before: every absent day counted 24); without 29 March, 23.
    from compute.clock import PlantClock
    from compute.periods import hours_of_absent_days
    clock = PlantClock(60.0, "Europe/Berlin")
    start, end = BERLIN_2026
    days, d = [], start
    while d < end:
        days.append(d)
        d = clock.next_day(d)
    assert len(days) == 365 and clock.hours_in(start, end) == 8760
    spring = datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert clock.hours_in(FALL_BACK, clock.next_day(FALL_BACK)) == 25
    assert hours_of_absent_days(clock, start, end, [x for x in days if x != FALL_BACK]) == 25
    assert hours_of_absent_days(clock, start, end, [x for x in days if x != spring]) == 23
    assert hours_of_absent_days(clock, start, end, []) == 8760


def test_a_year_total_counts_the_25_hour_day_as_25_missing_hours() -> None:
    # The year rows of `carbonscada recalc --level year`: 364 valid days of 2026 in Berlin,
    # 25 October absent from the export: n_missing = 25.
    from compute.clock import PlantClock
    from model.records import PeriodResult
    from server.recalc import _totals
    plan = config(site={"id": "testsite", "name": "T", "name_zh": "测", "timezone":
                        "Europe/Berlin"})
    clock = PlantClock(60.0, "Europe/Berlin")
    start, end = BERLIN_2026
    days, d = [], start
    while d < end:
        if d != FALL_BACK:
            src = PeriodResult("S1", d, 12.0, Q, 1.0, 24.0, 24.0, True, DataFlag.N, 24)
            days.append(PeriodRecords("day", d, clock.next_day(d), (src,), (), ()))
        d = clock.next_day(d)
    ((t, (row,)),) = list(_totals(plan.config, days, "year"))
    assert t == start and row.n_missing == 25 and row.co2_t == 364 * 24.0


def test_a_25_hour_day_closes_with_25_hours() -> None:
    # The live stage on Berlin's 25 October 2026: 25 hours of minutes, the day has 25 valid
    # hours; a day with hours 3–4 (local) lost has 23 valid and 2 invalid (substituted).
    plan = config(site={"id": "testsite", "name": "T", "name_zh": "测", "timezone":
                        "Europe/Berlin"})
    out = PeriodCycle(plan).add(hours_of_minutes(FALL_BACK, 26))
    day = next(r for r in out if r.level == "day")
    s = day.sources[0]
    assert (day.t, s.n_valid, s.n_missing, s.valid) == (FALL_BACK, 25, 0, True)
    cycle = PeriodCycle(plan)
    out = cycle.add(hours_of_minutes(FALL_BACK, 3))
    out += cycle.add(hours_of_minutes(FALL_BACK + timedelta(hours=5), 21))
    s = next(r for r in out if r.level == "day").sources[0]
    assert (s.n_valid, s.n_substituted + s.n_missing, s.valid, s.missing_reason) == (
        23, 2, True, "")


def test_minute_batch_from_columns_is_the_batch_of_records() -> None:
    # The live minute comes as columns (no record per source or tag): the same batch.
    t = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    cols = SourceColumns(
        sources=("S1", "S2"), units=("U1", "U1"), flow_act_m3_h=np.array([1.0, 2.0]),
        flow_std_dry_m3_h=np.array([835_718.9, math.nan]), co2_dry_pct=np.array([12.0, 11.5]),
        co2_mg_m3=np.array([1.0, 2.0]), co2_rate_kg_h=np.array([1.0, 2.0]),
        co2_kg=np.array([3282.7, math.nan]), flag=np.array([0, 3], np.uint8),
        substitution=np.zeros(2, np.int64), rules=("",), co2_hour_t=np.zeros(2),
        co2_today_t=np.zeros(2), co2_ytd_t=np.zeros(2))
    tags = TagColumns(tags=("a", "b", "c"), mean=np.array([1.5, math.nan, 7.0]),
                      min=np.zeros(3), max=np.zeros(3), count=np.array([60, 0, 59]),
                      flag=np.array([0, 3, 4], np.uint8))
    site = SiteMinute(t, 0, 0, 0, 0, 0, 0)
    live = MinuteResult(t, site=site, source_columns=cols, tag_columns=tags)
    as_records = MinuteResult(t, live.sources, (), site, live.tags)
    a, b = minute_batch(live, ()), minute_batch(as_records, ())
    for name in ("t_s", "co2_dry_pct", "flow_std_dry_m3_h", "source_flag", "tag_mean",
                 "tag_flag"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    np.testing.assert_array_equal(a.co2_dry_pct, [[12.0, 11.5]])
    np.testing.assert_array_equal(a.tag_flag, [[0, 3, 4]])
