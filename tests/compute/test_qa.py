"""CEMS quality assurance (HJ 75-2017): drift of zero and span checks against the limits,
the out-of-control intervals they open and close, the relative accuracy of a comparison
test, the `qa:` configuration block, flag C while the analyser calibrates and flag D on
live minutes while it is out of control. Every number is worked by hand in a comment."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from compute import kernels as k
from compute.cycle import MinuteCycle
from compute.entries import Records
from compute.minute import MinuteCalculator
from compute.periods import PeriodCycle, minute_batch
from compute.qa import (
    DEFAULT_QA,
    CheckKind,
    ComparisonLimits,
    DriftLimits,
    Parameter,
    ParameterQa,
    QaCheck,
    QaConfig,
    RaTest,
    judge_check,
    judge_ra,
    out_of_control,
    t_975,
)
from compute.tagstore import TagStore
from model.errors import ConfigError, InvalidValueError
from model.flags import DataFlag
from server.config import parse_config, parse_plant
from tests.fixtures.plant import VECTOR, plant_dict

DAY = datetime(2026, 12, 7, tzinfo=UTC)


def at(h: int, m: int = 0) -> datetime:
    return DAY + timedelta(hours=h, minutes=m)


def span(t: datetime, measured: float, *, source: str = "S1", kind: CheckKind = "span",
         parameter: Parameter = "co2", reference: float = 10.0, fs: float = 20.0,
         entry: int = 0) -> QaCheck:
    return QaCheck(source, t, kind, parameter, reference, measured, fs, "%", entry)


# ---------------------------------------------------------------------------- drift


def test_span_check_within_the_requirement_passes() -> None:
    # (10.30 − 10.00) / 20 · 100 = 1.5 % F.S. ≤ 2.5 % F.S.: pass
    r = judge_check(span(at(8), 10.30))
    assert r.drift_pct_fs == pytest.approx(1.5, abs=1e-12)
    assert r.requirement_pct_fs == 2.5 and r.out_of_control_pct_fs == 10.0
    assert r.status == "pass" and r.passed and not r.failed


@pytest.mark.parametrize(("kind", "reference", "measured", "drift", "status"), [
    # (10.80 − 10.00) / 20 · 100 = 4.0 %: beyond 2.5, within 10: adjust, data valid
    ("span", 10.0, 10.80, 4.0, "adjust"),
    # (7.60 − 10.00) / 20 · 100 = −12.0 %: |−12| > 10: out of control
    ("span", 10.0, 7.60, -12.0, "out_of_control"),
    # (10.50 − 10.00) / 20 · 100 = 2.5 % exactly: on the limit still passes
    ("span", 10.0, 10.50, 2.5, "pass"),
    # zero: (0.80 − 0) / 20 · 100 = 4.0 %: beyond 2.5, within 5: adjust
    ("zero", 0.0, 0.80, 4.0, "adjust"),
    # zero: (1.20 − 0) / 20 · 100 = 6.0 % > 5: out of control (a span would only adjust)
    ("zero", 0.0, 1.20, 6.0, "out_of_control"),
])
def test_drift_against_the_gaseous_limits(kind: CheckKind, reference: float, measured: float,
                                          drift: float, status: str) -> None:
    r = judge_check(span(at(8), measured, kind=kind, reference=reference))
    assert r.drift_pct_fs == pytest.approx(drift, abs=1e-12)
    assert r.status == status


def test_flow_has_its_own_limits() -> None:
    # velocity zero: (1.0 − 0) / 30 m/s · 100 = 3.33 % F.S.: beyond 3.0, within 8.0
    c = QaCheck("S1", at(8), "zero", "flow", 0.0, 1.0, 30.0, "m/s")
    assert judge_check(c).status == "adjust"
    # (2.7 − 0) / 30 · 100 = 9.0 % > 8.0: out of control
    c = QaCheck("S1", at(8), "zero", "flow", 0.0, 2.7, 30.0, "m/s")
    assert judge_check(c).status == "out_of_control"


def test_a_check_needs_a_time_zone_a_unit_and_a_range() -> None:
    with pytest.raises(InvalidValueError, match="no time zone"):
        QaCheck("S1", datetime(2026, 12, 7, 8), "span", "co2", 10, 10.3, 20, "%")
    with pytest.raises(InvalidValueError, match=r"full_scale = 0\.0 must be > 0"):
        QaCheck("S1", at(8), "span", "co2", 10, 10.3, 0, "%")
    with pytest.raises(InvalidValueError, match="name the unit"):
        QaCheck("S1", at(8), "span", "co2", 10, 10.3, 20, "")
    with pytest.raises(InvalidValueError, match="parameter is not one of co2, o2, flow"):
        QaCheck("S1", at(8), "span", "so2", 10, 10.3, 20, "%")  # type: ignore[arg-type]


# ------------------------------------------------------------- out-of-control intervals


def test_a_failed_check_is_out_of_control_until_the_next_passed_one() -> None:
    # 08:00 span −12 % F.S. (out of control); 09:00 span +4 % (adjust: still out of
    # control); 10:00 a passed zero check (not the span: still out); 11:00 span +1.5 %
    # (passed) → [08:00, 11:00). 12:00 span −12 % again, no check after → [12:00, inf).
    checks = [span(at(9), 10.80), span(at(8), 7.60),
              span(at(10), 0.1, kind="zero", reference=0.0), span(at(11), 10.30),
              span(at(12), 7.60), span(at(8), 10.30, source="S2")]
    got = out_of_control(checks)
    assert got == {"S1": ((at(8).timestamp(), at(11).timestamp()),
                          (at(12).timestamp(), math.inf))}


def test_intervals_of_a_sources_parameters_are_merged() -> None:
    # CO2 span out 08:00–10:00, O2 zero out 09:00–12:00 → one interval 08:00–12:00
    checks = [span(at(8), 7.6), span(at(10), 10.3),
              span(at(9), 1.2, parameter="o2", kind="zero", reference=0.0),
              span(at(12), 0.0, parameter="o2", kind="zero", reference=0.0)]
    assert out_of_control(checks) == {"S1": ((at(8).timestamp(), at(12).timestamp()),)}


def test_a_sources_own_limits_decide() -> None:
    # span +4 % F.S.: adjust under the default 10 %, out of control under a 3 % index
    strict = QaConfig(co2=ParameterQa(drift=DriftLimits(span_out_of_control_pct_fs=3.0)))
    checks = [span(at(8), 10.80), span(at(9), 10.30)]
    assert out_of_control(checks) == {}
    assert out_of_control(checks, {"S1": strict}) == {
        "S1": ((at(8).timestamp(), at(9).timestamp()),)}


# ------------------------------------------------------------------ relative accuracy

RM = (10.2, 10.5, 10.1, 10.8, 10.4, 10.6, 10.3, 10.7, 10.4)
CEMS = (10.0, 10.4, 10.2, 10.5, 10.1, 10.5, 10.3, 10.4, 10.2)


def test_relative_accuracy_of_nine_pairs() -> None:
    # d = RM − CEMS = .2 .1 −.1 .3 .3 .1 0 .3 .2; Σd = 1.4, d̄ = 0.155556
    # RM̄ = 94.0 / 9 = 10.444444; CEMS̄ = 92.6 / 9 = 10.288889
    # Σd² = 0.38; Σ(d − d̄)² = 0.38 − 1.4²/9 = 0.162222; S_d = sqrt(0.162222/8) = 0.142400
    # t(0.975, 8) = 2.306; cc = 2.306 · 0.142400 / 3 = 0.109458
    # RA = (0.155556 + 0.109458) / 10.444444 · 100 = 2.5374 % ≤ 15 %: pass
    # RE = (10.288889 − 10.444444) / 10.444444 · 100 = −1.4894 %
    r = judge_ra(RaTest("S1", at(10), "co2", RM, CEMS, "%"))
    assert r.n == 9
    assert r.mean_reference == pytest.approx(10.444444, abs=1e-6)
    assert r.mean_cems == pytest.approx(10.288889, abs=1e-6)
    assert r.mean_d == pytest.approx(0.155556, abs=1e-6)
    assert r.sd == pytest.approx(0.142400, abs=1e-6)
    assert r.t_value == 2.306
    assert r.cc == pytest.approx(0.109458, abs=1e-6)
    assert r.ra_pct == pytest.approx(2.5374, abs=1e-4)
    assert r.re_pct == pytest.approx(-1.4894, abs=1e-4)
    assert r.ra_limit_pct == 15.0 and r.passed


def test_relative_accuracy_limits() -> None:
    # RA 2.5374 % fails a 2.5 % limit; six pairs fail the 9-pair minimum
    tight = QaConfig(co2=ParameterQa(comparison=ComparisonLimits(ra_pct=2.5)))
    assert not judge_ra(RaTest("S1", at(10), "co2", RM, CEMS, "%"), tight).passed
    assert not judge_ra(RaTest("S1", at(10), "co2", RM[:6], CEMS[:6], "%")).passed
    # flow: judged by |RE| ≤ 10 %: CEMS 10 % low passes, 12 % low fails
    ok = judge_ra(RaTest("S1", at(10), "flow", (20.0, 20.0, 22.0) * 3,
                         (18.0, 18.0, 19.8) * 3, "m/s"))
    assert ok.re_pct == pytest.approx(-10.0, abs=1e-9) and ok.passed
    bad = judge_ra(RaTest("S1", at(10), "flow", (20.0,) * 9, (17.6,) * 9, "m/s"))
    assert bad.re_pct == pytest.approx(-12.0, abs=1e-9) and not bad.passed
    with pytest.raises(InvalidValueError, match="9 reference results but 8 CEMS"):
        RaTest("S1", at(10), "co2", RM, CEMS[:8], "%")


def test_t_table() -> None:
    assert (t_975(1), t_975(8), t_975(30), t_975(35), t_975(500)) == (
        12.706, 2.306, 2.042, 2.042, 1.960)


# ---------------------------------------------------------------------- configuration


def with_calibration_tag(tag: str = "s1_cal", qa: dict[str, Any] | None = None
                         ) -> dict[str, Any]:
    d = plant_dict()
    d["devices"][0]["tags"].append({"id": "s1_cal", "register": 30, "sim": {"value": 0.0}})
    d["units"][0]["sources"][0]["qa"] = {"calibration_tag": tag, **(qa or {})}
    return d


def problems_of(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        parse_config(d, "plant.yaml")
    return exc.value.problems


def test_qa_block_defaults_are_hj75s() -> None:
    cfg, _ = parse_plant(with_calibration_tag(), "plant.yaml")
    qa = cfg.units[0].sources[0].qa
    assert qa is not None and qa.calibration_tag == "s1_cal"
    assert (qa.co2.drift.zero_pct_fs, qa.co2.drift.span_pct_fs) == (2.5, 2.5)
    assert (qa.o2.drift.zero_out_of_control_pct_fs, qa.o2.drift.span_out_of_control_pct_fs) == (
        5.0, 10.0)
    assert (qa.flow.drift.zero_pct_fs, qa.flow.drift.span_out_of_control_pct_fs) == (3.0, 8.0)
    assert qa.co2.comparison.ra_pct == 15.0 and qa.flow.comparison.re_pct == 10.0
    assert QaConfig() == DEFAULT_QA


def test_unknown_calibration_tag_names_the_key() -> None:
    assert problems_of(with_calibration_tag("nope")) == [
        ("units[0].sources[0].qa.calibration_tag", "unknown tag 'nope'")]


def test_bad_qa_limits_name_the_key() -> None:
    bad = {"co2": {"drift": {"span_pct_fs": 3.0, "span_out_of_control_pct_fs": 2.0}}}
    assert problems_of(with_calibration_tag(qa=bad)) == [
        ("units[0].sources[0].qa.co2.drift", "'span_out_of_control_pct_fs' must be at least "
         "'span_pct_fs' (3.0)")]
    assert problems_of(with_calibration_tag(qa={"so2": {}})) == [
        ("units[0].sources[0].qa.so2", "unknown key")]


# ------------------------------------------------------------------- flag C (minutes)

SAMPLES = {"s1_velocity": VECTOR["velocity"], "s1_temp": VECTOR["temp"],
           "s1_static": VECTOR["static"], "s1_moisture": VECTOR["moisture_pct"],
           "s1_co2": VECTOR["co2"], "u1_power": 600.0}


def store_of(calc: MinuteCalculator, cal: list[tuple[float, float, int]],
             minutes: int = 1) -> TagStore:
    """12 samples a minute of every input from t = 60 s; the calibration tag's samples
    (seconds after the minute's start, value, flag) are given per minute."""
    store = TagStore(calc.tag_ids, capacity=64)
    for m in range(minutes):
        t0 = 60.0 * (m + 1)
        for i in range(12):
            for tag, v in SAMPLES.items():
                store.append(store.index[tag], t0 + 5 * i, v, 0)
        for dt, v, f in cal:
            if m == 0 or minutes == 1:
                store.append(store.index["s1_cal"], t0 + dt, v, f)
            else:
                store.append(store.index["s1_cal"], t0 + dt, 0.0, 0)
    return store


def test_calibration_tag_flags_the_minute_c() -> None:
    calc = MinuteCalculator(parse_plant(with_calibration_tag(), "t").plan())
    # status 0 all minute: a measurement, flag N and the worked example's 3282.70 kg
    a = calc.compute(store_of(calc, [(5.0 * i, 0.0, 0) for i in range(12)]).take(60, 120))
    assert a.source_flag.tolist() == [0] and a.unit_flag.tolist() == [0]
    # one sample of the status reads 1 (calibration began at 55 s): flag C on the source
    # and its unit; the values stay for traceability (the period stage skips C minutes)
    cal = [(5.0 * i, 1.0 if i == 11 else 0.0, 0) for i in range(12)]
    a = calc.compute(store_of(calc, cal).take(60, 120))
    assert a.source_flag.tolist() == [int(DataFlag.C)] and a.unit_flag.tolist() == [5]
    assert a.cems[0, k.OUT_MASS] == pytest.approx(3282.70, abs=0.005)
    # a non-zero status in a failed poll (flag B) is no reading of the status: N
    cal = [(5.0 * i, 1.0 if i == 11 else 0.0, 3 if i == 11 else 0) for i in range(12)]
    a = calc.compute(store_of(calc, cal).take(60, 120))
    assert a.source_flag.tolist() == [0]


def test_calibration_flag_in_a_batch_is_per_minute() -> None:
    # recalc's path: two minutes in one kernel call, only the first calibrating
    calc = MinuteCalculator(parse_plant(with_calibration_tag(), "t").plan())
    store = store_of(calc, [(0.0, 1.0, 0), (30.0, 1.0, 0)], minutes=2)
    w1, w2 = store.take(60, 120), store.take(120, 180)
    width = max(w1.values.shape[1], w2.values.shape[1])

    def pad(x: np.ndarray, fill: float) -> np.ndarray:
        return np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=fill)

    values = np.stack([pad(w1.values, np.nan), pad(w2.values, np.nan)])
    flags = np.stack([pad(w1.flags, 0), pad(w2.flags, 0)]).astype(np.uint8)
    counts = np.stack([w1.counts, w2.counts])
    a = calc.compute_batch(values, flags, counts)
    assert a.source_flag.tolist() == [[5], [0]]
    assert a.unit_flag.tolist() == [[5], [0]]


def test_a_higher_flag_stays() -> None:
    # the unit stopped (F, 7) outranks calibration (C, 5)
    calc = MinuteCalculator(parse_plant(with_calibration_tag(), "t").plan())
    store = TagStore(calc.tag_ids, capacity=64)
    for i in range(12):
        for tag in calc.tag_ids:
            f = 7 if tag == "s1_co2" else 0
            store.append(store.index[tag], 60.0 + 5 * i, 1.0 if tag == "s1_cal" else
                         SAMPLES[tag], f)
    a = calc.compute(store.take(60, 120))
    assert a.source_flag.tolist() == [7]


# ------------------------------------------------------- flag D (live, out of control)


def minute_store(cycle: MinuteCycle, t: datetime) -> TagStore:
    store = TagStore(cycle.calc.tag_ids, 64)
    for i in range(12):
        for tag, v in SAMPLES.items():
            store.append(store.index[tag], t.timestamp() + 5 * i, v, 0)
    return store


def run(cycle: MinuteCycle, t: datetime) -> tuple[DataFlag, DataFlag, bool]:
    result = cycle.run(t, minute_store(cycle, t).take(t.timestamp(), t.timestamp() + 60))
    (s,) = result.sources
    (u,) = result.units
    return s.flag, u.flag, u.valid


def test_a_failed_span_check_flags_live_minutes_d_until_the_passed_one() -> None:
    # span 08:00 −12 % F.S. (out of control), 11:00 +1.5 % (passed) → [08:00, 11:00)
    checks = [span(at(8), 7.60), span(at(11), 10.30)]
    records = Records(out_of_control=out_of_control(checks))
    cycle = MinuteCycle(parse_plant(plant_dict(), "t").plan())
    assert run(cycle, at(7, 59)) == (DataFlag.N, DataFlag.N, True)
    cycle.use_records(records)  # the record keeper, once the check is entered
    assert run(cycle, at(8)) == (DataFlag.D, DataFlag.D, False)
    assert run(cycle, at(10, 59)) == (DataFlag.D, DataFlag.D, False)
    assert run(cycle, at(11)) == (DataFlag.N, DataFlag.N, True)
    # the intervals of a plan's records apply from the start
    plan = parse_plant(plant_dict(), "t").plan()
    cycle = MinuteCycle(replace(plan, records=records))
    assert run(cycle, at(9, 30)) == (DataFlag.D, DataFlag.D, False)
    # an out-of-control minute's CO2 does not pair with output: today's intensity is
    # of the valid minutes only (none yet)
    t = at(9, 31)
    res = cycle.run(t, minute_store(cycle, t).take(t.timestamp(), t.timestamp() + 60))
    assert math.isnan(res.units[0].intensity_t_mwh)
    assert math.isnan(res.units[0].intensity_today_t_mwh)


# ------------------------------------------ hours: invalid until a passed check (proof)


def hours_of(d: dict[str, Any], records: Records, start: datetime, n_min: int,
             cal: set[datetime] | None = None) -> dict[int, Any]:
    """Minutes from `start` through the live minute cycle and the period stage; the
    closed hours' source results by hour of day."""
    plan = replace(parse_plant(d, "t").plan(), records=records)
    cycle, periods = MinuteCycle(plan), PeriodCycle(plan)
    hours: dict[int, Any] = {}
    for m in range(n_min):
        t = start + timedelta(minutes=m)
        store = minute_store(cycle, t)
        if "s1_cal" in store.index:
            for i in range(12):
                store.append(store.index["s1_cal"], t.timestamp() + 5 * i,
                             1.0 if cal and t in cal else 0.0, 0)
        result = cycle.run(t, store.take(t.timestamp(), t.timestamp() + 60))
        for rec in periods.add(minute_batch(result, periods.counter_tags)):
            if rec.level == "hour":
                hours[rec.t.hour] = rec.sources[0]
    return hours


def test_a_failed_span_check_invalidates_the_hours_until_a_passed_check() -> None:
    # span 08:00 −12 % F.S. out of control, 11:00 +1.5 % passed → minutes [08:00, 11:00)
    # are D: hours 08, 09, 10 invalid and substituted by the last valid hour (07:00,
    # max_previous_n of 1); 07 and 11 measured. Hour mass: the worked example's
    # 3282.70 kg a minute · 60 = 196.962 t, the substitute the same (same conc and flow).
    d = plant_dict()
    d["units"][0]["sources"][0]["substitution"] = {"rule": "max_previous_n", "n_hours": 1,
                                                   "lookback_h": 24}
    records = Records(out_of_control=out_of_control([span(at(8), 7.60), span(at(11), 10.30)]))
    hours = hours_of(d, records, at(7), 5 * 60 + 1)
    assert sorted(hours) == [7, 8, 9, 10, 11]
    for h in (7, 11):
        assert (hours[h].valid, hours[h].flag, hours[h].substituted) == (True, DataFlag.N, False)
        assert hours[h].co2_t == pytest.approx(196.962, abs=3e-4)
    for h in (8, 9, 10):
        assert (hours[h].valid, hours[h].flag, hours[h].n_valid) == (False, DataFlag.D, 0)
        assert hours[h].substituted and hours[h].substitution_rule == "max_previous_n"
        assert hours[h].co2_t == pytest.approx(196.962, abs=3e-4)


def test_calibration_minutes_are_excluded_from_the_hour() -> None:
    # the analyser calibrates 07:00–07:15 (16 minutes C): 44 valid minutes < 45, the hour
    # is invalid with flag C; 15 minutes (07:00–07:14) leave 45: valid, from those 45
    cal16 = {at(7, m) for m in range(16)}
    hours = hours_of(with_calibration_tag(), Records(), at(7), 61, cal16)
    assert (hours[7].valid, hours[7].flag, hours[7].n_valid) == (False, DataFlag.C, 44)
    hours = hours_of(with_calibration_tag(), Records(), at(7), 61, cal16 - {at(7, 15)})
    assert (hours[7].valid, hours[7].flag, hours[7].n_valid) == (True, DataFlag.N, 45)
    assert hours[7].co2_t == pytest.approx(196.962, abs=3e-4)
