"""Meter-counter deltas against hand-written readings, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import counters as c
from model.flags import DataFlag

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
H = 3600.0
N, T, B, D, C = (int(DataFlag.N), int(DataFlag.T), int(DataFlag.B), int(DataFlag.D),
                 int(DataFlag.C))

# 8+2-digit kWh register; rated 500 kWh/h, so at most 1 000 kWh/h is plausible.
KWH = c.MeterConfig("EM-01", "kWh", register_max=99_999_999.99, resolution=0.01,
                    max_rate_per_h=1_000.0)


def run(values: list[float], flags: list[int] | None = None, hours: list[float] | None = None,
        replacements: tuple[c.MeterReplacement, ...] = (),
        config: c.MeterConfig = KWH) -> np.ndarray:
    t = T0 + H * np.array(hours if hours is not None else range(len(values)), np.float64)
    f = np.array(flags if flags is not None else [N] * len(values), np.uint8)
    return c.meter_deltas(config, t, np.array(values, np.float64), f, replacements)


def table(rows: np.ndarray) -> list[tuple[float | None, str, str]]:
    """(delta, flag, reason) per row, with NaN as None so rows compare with ==."""
    return [(None if math.isnan(d) else round(float(d), 6), str(f), str(r))
            for d, f, r in zip(rows["delta"], rows["flag"], rows["reason"], strict=True)]


def test_normal_increase() -> None:
    rows = run([1000.00, 1400.00, 1900.00])
    assert table(rows) == [(400.0, "N", ""), (500.0, "N", "")]
    assert rows["t_start_s"].tolist() == [T0, T0 + H]
    assert rows["t_end_s"].tolist() == [T0 + H, T0 + 2 * H]


def test_rollover() -> None:
    # 99 999 800.00 → wraps at 100 000 000.00 (99 999 999.99 + 0.01) → 300.00:
    # 200.00 + 300.00 = 500.00 kWh in 1 h ≤ 1 000 plausible
    assert table(run([99_999_800.00, 300.00, 700.00])) == [
        (500.0, "N", "rollover"), (400.0, "N", "")]


def test_last_count_before_wrap_is_one_resolution_step() -> None:
    # 99 999 999.99 → 0.00 is one 0.01 kWh step, not zero
    assert table(run([99_999_999.99, 0.00])) == [(0.01, "N", "rollover")]


def test_decrease_too_large_for_rollover_is_reset() -> None:
    # 99 999 800 → 5 000 would be 200 + 5 000 = 5 200 kWh in 1 h > 1 000: not a roll-over
    assert table(run([99_999_800.00, 5_000.00, 5_100.00])) == [
        (None, "D", "reset_or_replacement"), (100.0, "N", "")]


def test_reset_is_nan_and_continues_from_new_reading() -> None:
    # 5 000 → 12: no roll-over (1e8 − 5 000 + 12 is far above 1 000); then 12 → 212 = 200
    rows = run([4_800.00, 5_000.00, 12.00, 212.00])
    assert table(rows) == [(200.0, "N", ""), (None, "D", "reset_or_replacement"),
                           (200.0, "N", "")]
    assert c.valid_sum(rows, T0, T0 + 3 * H) == pytest.approx(400.0, abs=1e-9)


def test_explicit_replacement_gives_exact_delta() -> None:
    # old meter 5 000.00 at 01:00, swapped at 01:30 reading 5 150.00; new meter starts at
    # 0.00 and reads 320.00 at 02:00: (5 150 − 5 000) + (320 − 0) = 470; then 720 − 320 = 400
    swap = c.MeterReplacement(T0 + 1.5 * H, old_final=5_150.00, new_initial=0.00)
    rows = run([4_600.00, 5_000.00, 320.00, 720.00], replacements=(swap,))
    assert table(rows) == [(400.0, "N", ""), (470.0, "N", "replacement"), (400.0, "N", "")]


def test_replacement_at_a_reading_time_belongs_to_the_new_meter() -> None:
    # the reading at 01:00 comes from the new meter (initial 10.00):
    # (5 250 − 5 000) + (10 − 10) = 250
    swap = c.MeterReplacement(T0 + H, old_final=5_250.00, new_initial=10.00)
    assert table(run([5_000.00, 10.00, 300.00], replacements=(swap,))) == [
        (250.0, "N", "replacement"), (290.0, "N", "")]


def test_two_replacements_in_one_interval() -> None:
    # 1 000 → old final 1 100; 2nd meter 0 → 50 (its final); 3rd meter 5 → 105:
    # 100 + 50 + 100 = 250
    evs = (c.MeterReplacement(T0 + 0.3 * H, 1_100.0, 0.0),
           c.MeterReplacement(T0 + 0.6 * H, 50.0, 5.0))
    assert table(run([1_000.0, 105.0], replacements=evs)) == [(250.0, "N", "replacement")]


def test_inconsistent_replacement_is_flagged_not_invented() -> None:
    # old_final 4 900 is below the previous reading 5 000: the record is wrong
    swap = c.MeterReplacement(T0 + 0.5 * H, old_final=4_900.00, new_initial=0.00)
    assert table(run([5_000.00, 320.00, 400.0], replacements=(swap,))) == [
        (None, "D", "replacement_inconsistent"), (80.0, "N", "")]


def test_implausible_jump_kept_flagged_and_excluded() -> None:
    # 1 500 → 9 000 is 7 500 kWh in 1 h > 1 000: kept as T; 9 000 → 9 400 is normal
    rows = run([1_000.00, 1_500.00, 9_000.00, 9_400.00])
    assert table(rows) == [(500.0, "N", ""), (7_500.0, "T", "implausible_jump"),
                           (400.0, "N", "")]
    assert c.valid_sum(rows, T0, T0 + 3 * H) == pytest.approx(900.0, abs=1e-9)


def test_plausible_limit_scales_with_interval() -> None:
    # 1 900 kWh in 2 h ≤ 2 000: normal; 2 100 kWh in 2 h > 2 000: jump
    assert table(run([0.0, 1_900.0, 4_000.0], hours=[0, 2, 4])) == [
        (1_900.0, "N", ""), (2_100.0, "T", "implausible_jump")]


def test_gap_across_invalid_readings() -> None:
    # 1 000 (N) at 00:00, D at 01:00, NaN at 02:00, 2 200 (N) at 03:00:
    # 2 200 − 1 000 = 1 200 kWh in 3 h ≤ 3 000, attributed to 02:00–03:00
    rows = run([1_000.00, 1_300.00, math.nan, 2_200.00, 2_500.00], [N, D, N, N, N])
    assert table(rows) == [(None, "D", "invalid_reading"), (None, "B", "invalid_reading"),
                           (1_200.0, "N", "gap"), (300.0, "N", "")]
    assert c.valid_sum(rows, T0, T0 + 4 * H) == pytest.approx(1_500.0, abs=1e-9)
    # attribution: the gap's 1 200 falls in the hour it ends in (02:00, 03:00]
    assert c.valid_sum(rows, T0, T0 + 2 * H) == 0.0
    assert c.valid_sum(rows, T0 + 2 * H, T0 + 3 * H) == pytest.approx(1_200.0, abs=1e-9)


def test_gap_implausible() -> None:
    # 1 000 → (C) → 9 000 after 2 h: 8 000 > 2 000 → T
    assert table(run([1_000.0, 5_000.0, 9_000.0], [N, C, N])) == [
        (None, "C", "invalid_reading"), (8_000.0, "T", "implausible_jump,gap")]


def test_gap_with_rollover() -> None:
    # 99 999 900.00 → (B) → 100.00 after 2 h: 100 + 100 = 200 ≤ 2 000
    assert table(run([99_999_900.00, 0.0, 100.00], [N, B, N])) == [
        (None, "B", "invalid_reading"), (200.0, "N", "rollover,gap")]


def test_gap_with_reset() -> None:
    assert table(run([5_000.0, 0.0, 10.0, 60.0], [N, B, N, N])) == [
        (None, "B", "invalid_reading"), (None, "D", "reset_or_replacement,gap"),
        (50.0, "N", "")]


def test_replacement_during_gap() -> None:
    # 5 000 at 00:00; 01:00 invalid; swap at 01:30 (old 5 150, new 0); 320 at 02:00
    swap = c.MeterReplacement(T0 + 1.5 * H, old_final=5_150.00, new_initial=0.00)
    assert table(run([5_000.0, 0.0, 320.0], [N, D, N], replacements=(swap,))) == [
        (None, "D", "invalid_reading"), (470.0, "N", "replacement,gap")]


def test_out_of_range_reading_is_invalid() -> None:
    # a negative count and one above the register's maximum cannot be readings
    assert table(run([1_000.0, -3.0, 1.5e8, 1_500.0])) == [
        (None, "T", "invalid_reading"), (None, "T", "invalid_reading"),
        (500.0, "N", "gap")]


def test_no_valid_start() -> None:
    # nothing valid before 01:00: the first interval's consumption is unknown
    assert table(run([math.nan, 1_000.0, 1_400.0], [B, N, N])) == [
        (None, "B", "no_valid_start"), (400.0, "N", "")]


def test_too_few_readings() -> None:
    assert run([]).size == 0
    assert run([5.0]).size == 0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        run([1.0, 2.0, 3.0], hours=[0, 1, 1])
    with pytest.raises(ValueError, match=r"'EM-01'.*\[9\]"):
        run([1.0, 2.0], [N, 9])
    with pytest.raises(ValueError, match=r"'EM-02'.*max_rate_per_h.*0"):
        c.MeterConfig("EM-02", "kWh", 99_999_999.99, 0.01, 0.0)
    with pytest.raises(ValueError, match=r"old_final.*nan"):
        c.MeterReplacement(T0, math.nan, 0.0)


def test_valid_sum_takes_intervals_ending_in_period() -> None:
    rows = run([0.0, 100.0, 300.0, 600.0])
    # (00:00, 01:00] holds the 100 ending at 01:00; (01:00, 03:00] the 200 and 300
    assert c.valid_sum(rows, T0, T0 + H) == pytest.approx(100.0, abs=1e-9)
    assert c.valid_sum(rows, T0 + H, T0 + 3 * H) == pytest.approx(500.0, abs=1e-9)


# --- properties -------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(first=st.floats(0.0, 9e7),
       steps=st.lists(st.tuples(st.floats(1.0, 7200.0), st.floats(0.0, 1.0)),
                      min_size=1, max_size=200))
def test_monotone_meter_sums_to_last_minus_first(first: float,
                                                 steps: list[tuple[float, float]]) -> None:
    # each step consumes a fraction of the plausible maximum for its duration, so no
    # delta is a jump; values stay well below the register maximum (no roll-over).
    t = [T0]
    v = [first]
    for dt, frac in steps:
        t.append(t[-1] + dt)
        v.append(v[-1] + frac * KWH.max_rate_per_h * dt / H * 0.999)
    rows = c.meter_deltas(KWH, np.array(t), np.array(v), np.zeros(len(v), np.uint8))
    assert (rows["flag"] == "N").all()
    assert c.valid_sum(rows, t[0], t[-1]) == pytest.approx(v[-1] - v[0], rel=1e-12,
                                                           abs=1e-7)


reading = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(0.0, 99_999_999.99))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_readings_never_raise(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 60))
    dts = data.draw(st.lists(st.floats(0.001, 1e6), min_size=n, max_size=n))
    t = T0 + np.cumsum(np.array(dts, np.float64))
    values = np.array(data.draw(st.lists(reading, min_size=n, max_size=n)), np.float64)
    flags = np.array(data.draw(st.lists(st.sampled_from([N, N, N, T, B, D, C]), min_size=n,
                                        max_size=n)), np.uint8)
    evs = tuple(c.MeterReplacement(float(te), *data.draw(st.tuples(
        st.floats(0.0, 1e8), st.floats(0.0, 1e8))))
        for te in sorted(set(data.draw(st.lists(st.floats(T0 - 1e5, T0 + 1e7), max_size=3)))))
    rows = c.meter_deltas(KWH, t, values, flags, evs)
    assert rows.size == max(n - 1, 0)
    ok = rows["flag"] == "N"
    assert np.isfinite(rows["delta"][ok]).all() and (rows["delta"][ok] >= 0).all()
    assert set(rows["flag"].tolist()) <= {x.name for x in DataFlag}
    assert math.isfinite(c.valid_sum(rows, -math.inf, math.inf))
