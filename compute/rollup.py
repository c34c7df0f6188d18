"""CEMS period rollups per source: minute → hour → day → month / year.

Rules (DESIGN.md "Calculations"; HJ 75-2017 and HJ 212-2017):

- hour: C_h and Q_h are the means of the valid minutes' dry CO2 % and standard dry
  flow; G_h = C_h·ρ·Q_h/100 kg/h and the hour's mass is G_h · 1 h. This is *not* the
  sum of the minute masses (mean(C)·mean(Q) differs from mean(C·Q) when both vary);
  the standards define the hour from its mean concentration and mean flow.
- an hour is valid with ≥ 45 valid minutes, a day with ≥ 20 valid hours (configurable).
- day mass = Σ of the hours' masses, substituted hours included; month, year = Σ days.

A subperiod (minute, hour) is valid when its flag is 0 (N) and its values are finite.
A subperiod with flag 0 but a non-finite value is a gap (no record): it is invalid but
brings no flag of its own. An invalid period's flag is the highest flag among its
subperiods, or B (communication failure) when none has a flag, e.g. no data at all.
Flags are the integers of server.records.DataFlag (0 = N; higher = higher precedence).

Statistics of the valid subperiods are kept for an invalid period too (traceability);
whether a period counts is `valid`, and what it contributes is `co2_t` (see
PeriodResult). The kernels accept any number of leading axes, e.g. (sources, hours,
minutes) → (sources, hours).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from compute.kernels import period_flag
from model.errors import InvalidValueError
from model.flags import DataFlag
from model.records import PeriodResult

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

HOUR_MIN_VALID_MINUTES = 45
DAY_MIN_VALID_HOURS = 20
CO2_DENSITY_KG_M3 = 1.964  # 44/22.4, HJ 212-2017 annex D



@njit(cache=True, parallel=True)
def hour_kernel(co2_dry_pct: F64, flow_std_dry_m3_h: F64, flags: U8, min_valid: int,
                rho_kg_m3: float, out_co2_dry_pct: F64, out_flow_std_dry_m3_h: F64,
                out_co2_rate_kg_h: F64, out_co2_t: F64, out_n_valid: I64,
                out_flag: U8) -> None:  # pragma: no cover - compiled
    """Hour results per row from its minutes (row i: minutes `[i, :]`).

    C_h, Q_h = means of the valid minutes (NaN if none); rate G_h = C_h·ρ·Q_h/100 kg/h;
    mass = G_h · 1 h / 1000 t. Flag 0 with ≥ `min_valid` valid minutes, else the
    highest minute flag, or B when no minute has one.
    """
    for i in prange(co2_dry_pct.shape[0]):
        n = 0
        sc = 0.0
        sq = 0.0
        worst = 0
        for m in range(co2_dry_pct.shape[1]):
            c = co2_dry_pct[i, m]
            q = flow_std_dry_m3_h[i, m]
            f = flags[i, m]
            if f == 0:
                if math.isfinite(c) and math.isfinite(q):
                    n += 1
                    sc += c
                    sq += q
            elif f > worst:
                worst = f
        out_n_valid[i] = n
        if n > 0:
            c_h = sc / n
            q_h = sq / n
            rate = c_h * rho_kg_m3 * q_h / 100.0
            out_co2_dry_pct[i] = c_h
            out_flow_std_dry_m3_h[i] = q_h
            out_co2_rate_kg_h[i] = rate
            out_co2_t[i] = rate / 1000.0  # × 1 h
        else:
            out_co2_dry_pct[i] = math.nan
            out_flow_std_dry_m3_h[i] = math.nan
            out_co2_rate_kg_h[i] = math.nan
            out_co2_t[i] = math.nan
        out_flag[i] = period_flag(n, min_valid, worst)


@njit(cache=True, parallel=True)
def day_kernel(co2_dry_pct: F64, flow_std_dry_m3_h: F64, co2_t: F64, flags: U8,
               substitute_co2_t: F64, min_valid: int, out_co2_dry_pct: F64,
               out_flow_std_dry_m3_h: F64, out_co2_rate_kg_h: F64, out_co2_t: F64,
               out_co2_measured_t: F64, out_co2_substitute_t: F64, out_n_valid: I64,
               out_n_substituted: I64, out_n_missing: I64,
               out_flag: U8) -> None:  # pragma: no cover - compiled
    """Day results per row from its hours (row i: hours `[i, :]`).

    An hour is valid when its flag is 0 and its mass finite; an invalid hour with a
    finite substitute is substituted, otherwise missing. Measured = Σ valid hours,
    substitute = Σ substituted hours, co2_t = their sum (each NaN when it has no hour).
    C, Q and rate are means over the valid hours. Flag as in `hour_kernel`.
    """
    for i in prange(co2_t.shape[0]):
        n = 0
        n_sub = 0
        n_miss = 0
        sc = 0.0
        sq = 0.0
        sm = 0.0
        ss = 0.0
        worst = 0
        for h in range(co2_t.shape[1]):
            f = flags[i, h]
            m = co2_t[i, h]
            if f == 0 and math.isfinite(m):
                n += 1
                sm += m
                sc += co2_dry_pct[i, h]
                sq += flow_std_dry_m3_h[i, h]
            else:
                worst = max(worst, f)
                s = substitute_co2_t[i, h]
                if math.isfinite(s):
                    n_sub += 1
                    ss += s
                else:
                    n_miss += 1
        out_n_valid[i] = n
        out_n_substituted[i] = n_sub
        out_n_missing[i] = n_miss
        if n > 0:
            out_co2_dry_pct[i] = sc / n
            out_flow_std_dry_m3_h[i] = sq / n
            out_co2_rate_kg_h[i] = sm * 1000.0 / n
            out_co2_measured_t[i] = sm
        else:
            out_co2_dry_pct[i] = math.nan
            out_flow_std_dry_m3_h[i] = math.nan
            out_co2_rate_kg_h[i] = math.nan
            out_co2_measured_t[i] = math.nan
        out_co2_substitute_t[i] = ss if n_sub > 0 else math.nan
        out_co2_t[i] = sm + ss if n + n_sub > 0 else math.nan
        out_flag[i] = period_flag(n, min_valid, worst)


@dataclass(frozen=True, slots=True)
class HourArrays:
    """Hour results, shaped like the minute inputs without their last axis."""

    co2_dry_pct: F64  # mean of the valid minutes, NaN if none
    flow_std_dry_m3_h: F64  # mean of the valid minutes, NaN if none
    co2_rate_kg_h: F64  # C_h·ρ·Q_h/100
    co2_t: F64  # measured: rate · 1 h, kept for an invalid hour too (see `valid`)
    n_valid: I64  # valid minutes
    flag: U8

    @property
    def valid(self) -> B1:
        """Whether each hour had enough valid minutes."""
        out: B1 = self.flag == 0
        return out


@dataclass(frozen=True, slots=True)
class DayArrays:
    """Day results, shaped like the hour inputs without their last axis."""

    co2_dry_pct: F64  # mean over the valid hours
    flow_std_dry_m3_h: F64  # mean over the valid hours
    co2_rate_kg_h: F64  # mean over the valid hours
    co2_t: F64  # measured valid hours + substituted hours; NaN when neither
    co2_measured_t: F64  # Σ valid hours, NaN if none
    co2_substitute_t: F64  # Σ substituted hours, NaN if none
    n_valid: I64  # valid hours
    n_substituted: I64  # invalid hours with a substitute
    n_missing: I64  # invalid hours without one (not in co2_t)
    flag: U8

    @property
    def valid(self) -> B1:
        """Whether each day had enough valid hours."""
        out: B1 = self.flag == 0
        return out


@dataclass(frozen=True, slots=True)
class TotalArrays:
    """Month or year totals: sums over days."""

    co2_t: F64  # Σ day co2_t over days that have one; NaN if none has
    n_substituted: I64  # substituted hours in the period
    n_missing: I64  # hours without a value in the period


def _rows_f(a: npt.ArrayLike) -> F64:
    arr: F64 = np.ascontiguousarray(a, dtype=np.float64)
    if arr.ndim == 0:
        raise InvalidValueError("need at least one axis (the subperiods)")
    return arr.reshape(math.prod(arr.shape[:-1]), arr.shape[-1])


def _rows_u8(a: npt.ArrayLike) -> U8:
    arr: U8 = np.ascontiguousarray(a, dtype=np.uint8)
    if arr.ndim == 0:
        raise InvalidValueError("need at least one axis (the subperiods)")
    return arr.reshape(math.prod(arr.shape[:-1]), arr.shape[-1])


def _check_min_valid(min_valid: int) -> None:
    if min_valid < 1:
        raise InvalidValueError(f"min_valid must be ≥ 1, got {min_valid}")


def rollup_hour(co2_dry_pct: npt.ArrayLike, flow_std_dry_m3_h: npt.ArrayLike,
                flags: npt.ArrayLike, *, min_valid: int = HOUR_MIN_VALID_MINUTES,
                rho_kg_m3: float = CO2_DENSITY_KG_M3) -> HourArrays:
    """Hour results from minute arrays shaped (..., minutes), e.g. (sources, 60)."""
    _check_min_valid(min_valid)
    c = _rows_f(co2_dry_pct)
    q = _rows_f(flow_std_dry_m3_h)
    f = _rows_u8(flags)
    if not c.shape == q.shape == f.shape:
        raise InvalidValueError(f"shapes differ: {c.shape}, {q.shape}, {f.shape}")
    shape = np.shape(co2_dry_pct)[:-1]
    n = c.shape[0]
    co2, flow, rate, mass = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    n_valid = np.empty(n, np.int64)
    flag = np.empty(n, np.uint8)
    hour_kernel(c, q, f, min_valid, rho_kg_m3, co2, flow, rate, mass, n_valid, flag)
    return HourArrays(co2.reshape(shape), flow.reshape(shape), rate.reshape(shape),
                      mass.reshape(shape), n_valid.reshape(shape), flag.reshape(shape))


def rollup_day(hours: HourArrays, substitute_co2_t: npt.ArrayLike | None = None, *,
               min_valid: int = DAY_MIN_VALID_HOURS) -> DayArrays:
    """Day results from hour results shaped (..., hours), e.g. (sources, 24).

    `substitute_co2_t` (same shape, NaN where none) fills invalid hours, e.g.
    `compute.substitute.substitute_hours(...).co2_t`; a full day passes all 24 hours,
    hours without a record as NaN with flag 0 or B.
    """
    _check_min_valid(min_valid)
    shape = np.shape(hours.co2_t)
    if substitute_co2_t is None:
        substitute_co2_t = np.full(shape, np.nan)
    c, q = _rows_f(hours.co2_dry_pct), _rows_f(hours.flow_std_dry_m3_h)
    m, f, sub = _rows_f(hours.co2_t), _rows_u8(hours.flag), _rows_f(substitute_co2_t)
    if len({a.shape for a in (c, q, m, f, sub)}) != 1:
        raise InvalidValueError(f"shapes differ: {[a.shape for a in (c, q, m, f, sub)]}")
    n = c.shape[0]
    co2, flow, rate = np.empty(n), np.empty(n), np.empty(n)
    total, measured, substitute = np.empty(n), np.empty(n), np.empty(n)
    n_valid, n_sub, n_miss = (np.empty(n, np.int64), np.empty(n, np.int64),
                              np.empty(n, np.int64))
    flag = np.empty(n, np.uint8)
    day_kernel(c, q, m, f, sub, min_valid, co2, flow, rate, total, measured, substitute,
               n_valid, n_sub, n_miss, flag)
    lead = shape[:-1]
    return DayArrays(co2.reshape(lead), flow.reshape(lead), rate.reshape(lead),
                     total.reshape(lead), measured.reshape(lead), substitute.reshape(lead),
                     n_valid.reshape(lead), n_sub.reshape(lead), n_miss.reshape(lead),
                     flag.reshape(lead))


def rollup_total(days: DayArrays) -> TotalArrays:
    """Month or year totals from day results shaped (..., days): Σ over the last axis."""
    co2 = np.asarray(days.co2_t, np.float64)
    has = np.isfinite(co2)
    total = np.where(has, co2, 0.0).sum(axis=-1)
    total = np.where(has.any(axis=-1), total, np.nan)
    return TotalArrays(np.asarray(total, np.float64),
                       np.asarray(days.n_substituted, np.int64).sum(axis=-1),
                       np.asarray(days.n_missing, np.int64).sum(axis=-1))


def mass_from_concentration_t(conc_g_m3: npt.ArrayLike, flow_m3_h: npt.ArrayLike,
                              duration_h: npt.ArrayLike = 1.0) -> F64:
    """EU MRR annex VIII eq. 1: Σ over the last axis of conc·flow·duration, in t.

    conc in g/Nm³, flow in Nm³/h, duration in h (1 for hourly values): g → t is 1e-6.
    """
    c = np.asarray(conc_g_m3, np.float64)
    q = np.asarray(flow_m3_h, np.float64)
    h = np.asarray(duration_h, np.float64)
    out: F64 = np.asarray((c * q * h).sum(axis=-1) / 1e6, np.float64)
    return out


def _rule(rules: Sequence[str] | None, i: int) -> str:
    return rules[i] if rules is not None else ""


def hour_records(sources: Sequence[str], t: datetime, hours: HourArrays,
                 substitute_co2_t: npt.ArrayLike | None = None,
                 rules: Sequence[str] | None = None) -> tuple[PeriodResult, ...]:
    """Records of one hour for each source from 1-D (sources,) hour arrays."""
    if np.ndim(hours.co2_t) != 1 or len(hours.co2_t) != len(sources):
        raise InvalidValueError("hour arrays must be shaped (sources,)")
    sub = (np.full(len(sources), np.nan) if substitute_co2_t is None
           else np.asarray(substitute_co2_t, np.float64))
    out = []
    for i, src in enumerate(sources):
        valid = bool(hours.flag[i] == 0)
        measured = float(hours.co2_t[i])
        substituted = not valid and math.isfinite(float(sub[i]))
        co2 = measured if valid else float(sub[i]) if substituted else math.nan
        out.append(PeriodResult(
            src, t, float(hours.co2_dry_pct[i]), float(hours.flow_std_dry_m3_h[i]),
            float(hours.co2_rate_kg_h[i]), co2, measured, valid, DataFlag(int(hours.flag[i])),
            int(hours.n_valid[i]), substituted, _rule(rules, i) if substituted else "",
            int(substituted), int(not math.isfinite(co2))))
    return tuple(out)


def day_records(sources: Sequence[str], t: datetime, days: DayArrays,
                rules: Sequence[str] | None = None) -> tuple[PeriodResult, ...]:
    """Records of one day for each source from 1-D (sources,) day arrays."""
    if np.ndim(days.co2_t) != 1 or len(days.co2_t) != len(sources):
        raise InvalidValueError("day arrays must be shaped (sources,)")
    out = []
    for i, src in enumerate(sources):
        n_sub = int(days.n_substituted[i])
        out.append(PeriodResult(
            src, t, float(days.co2_dry_pct[i]), float(days.flow_std_dry_m3_h[i]),
            float(days.co2_rate_kg_h[i]), float(days.co2_t[i]), float(days.co2_measured_t[i]),
            bool(days.flag[i] == 0), DataFlag(int(days.flag[i])), int(days.n_valid[i]),
            n_sub > 0, _rule(rules, i) if n_sub > 0 else "", n_sub, int(days.n_missing[i])))
    return tuple(out)


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the rollup kernels on tiny inputs."""
    h = rollup_hour(np.ones((1, 2)), np.ones((1, 2)), np.zeros((1, 2), np.uint8), min_valid=1)
    rollup_day(h, min_valid=1)
