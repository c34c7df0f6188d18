"""Derived results: intensity, CEMS-vs-factor reconciliation, uncertainty, allowance position.

Array functions accept scalars or arrays and return float64 arrays (0-d for scalars).
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from compute.clock import PlantClock
from model.errors import InvalidValueError
from model.records import AllowancePosition

F64 = npt.NDArray[np.float64]
B1 = npt.NDArray[np.bool_]

GJ_PER_TCE = 29.3076  # GB/T 2589-2020: 1 kgce = 29 307.6 kJ


def intensity(co2_t: npt.ArrayLike, output: npt.ArrayLike) -> F64:
    """Emission intensity = emissions / product output (t CO2/MWh, t CO2/t); NaN if output ≤ 0."""
    e = np.asarray(co2_t, np.float64)
    o = np.asarray(output, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: F64 = np.asarray(np.where(o > 0.0, e / np.where(o > 0.0, o, 1.0), np.nan),
                              np.float64)
    return out


def energy_intensity_gj(energy_gj: npt.ArrayLike, output: npt.ArrayLike) -> F64:
    """Energy intensity in GJ per unit output; NaN if output ≤ 0."""
    return intensity(energy_gj, output)


def energy_intensity_tce(energy_gj: npt.ArrayLike, output: npt.ArrayLike,
                         gj_per_tce: float = GJ_PER_TCE) -> F64:
    """Energy intensity in t of standard coal equivalent per unit output; NaN if output ≤ 0."""
    return intensity(np.asarray(energy_gj, np.float64) / gj_per_tce, output)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """CEMS vs emission-factor method, per day."""

    diff_pct: F64  # (cems − factor)/factor · 100; NaN when factor ≤ 0 or a value is missing
    exceeds: B1  # |diff_pct| > limit; False where diff_pct is NaN
    comparable: B1  # diff_pct is finite


def reconcile(cems_t: npt.ArrayLike, factor_t: npt.ArrayLike, limit_pct: float) -> Reconciliation:
    """Percent difference of CEMS from factor-method emissions, flagged beyond ±limit_pct."""
    c = np.asarray(cems_t, np.float64)
    f = np.asarray(factor_t, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.asarray(np.where(f > 0.0, (c - f) / np.where(f > 0.0, f, 1.0) * 100.0,
                                   np.nan), np.float64)
    ok = np.isfinite(diff)
    return Reconciliation(diff, ok & (np.abs(np.where(ok, diff, 0.0)) > limit_pct), ok)


def combined_relative_uncertainty(u_rel: npt.ArrayLike) -> float:
    """GUM: relative standard uncertainty of a product / quotient of independent inputs.

    u_rel = sqrt(Σ u_i²), in the unit of the inputs (fractions or %). E.g. the CEMS
    mass C·ρ·Q with ρ exact: sqrt(u_C² + u_Q²).
    """
    u = np.asarray(u_rel, np.float64)
    return float(np.sqrt(np.sum(u * u)))


def standard_uncertainty_rectangular(half_width: float) -> float:
    """Standard uncertainty of an instrument stated as ±a (rectangular): a/√3."""
    return half_width / math.sqrt(3.0)


@dataclass(frozen=True, slots=True)
class SumUncertainty:
    """A sum of results and its standard uncertainty."""

    total_t: float
    u_t: float  # absolute standard uncertainty
    u_rel_pct: float  # u_t / |total_t| · 100; NaN when the total is 0


def sum_uncertainty(values_t: npt.ArrayLike, u_rel_pct: npt.ArrayLike, *,
                    correlated: bool = False) -> SumUncertainty:
    """Uncertainty of a sum of results (e.g. hours into a day) each with relative u in %.

    Independent errors (default; e.g. random instrument noise between hours) add in
    quadrature: u = sqrt(Σ (u_i·x_i)²). A systematic error common to all terms (the
    same uncalibrated instrument) is fully correlated: `correlated=True` adds them
    linearly, u = Σ |u_i·x_i|, the upper bound.
    """
    x = np.asarray(values_t, np.float64)
    u = np.abs(np.broadcast_to(np.asarray(u_rel_pct, np.float64), x.shape) / 100.0 * x)
    total = float(x.sum())
    u_t = float(u.sum()) if correlated else float(np.sqrt(np.sum(u * u)))
    rel = u_t / abs(total) * 100.0 if total != 0.0 else math.nan
    return SumUncertainty(total, u_t, rel)


def allowance_position(annual_t: float, ytd_t: float, trailing_30d_t: float, *,
                       year_fraction: float, days_left: float,
                       carbon_price_cny_t: float = 0.0) -> AllowancePosition:
    """Allowance position from the annual allowance, ytd and trailing-30-day emissions."""
    if not 0.0 <= year_fraction <= 1.0:
        raise InvalidValueError(f"year_fraction must be in [0, 1], got {year_fraction}")
    if days_left < 0.0:
        raise InvalidValueError(f"days_left must be ≥ 0, got {days_left}")
    forecast = ytd_t + trailing_30d_t / 30.0 * days_left
    shortfall = max(0.0, forecast - annual_t) if math.isfinite(forecast) else math.nan
    return AllowancePosition(
        annual_t=annual_t, ytd_t=ytd_t, year_fraction=year_fraction, days_left=days_left,
        trailing_30d_t=trailing_30d_t, prorated_t=annual_t * year_fraction,
        used_pct=ytd_t / annual_t * 100.0 if annual_t > 0.0 else math.nan,
        headroom_t=annual_t - ytd_t, forecast_year_end_t=forecast,
        forecast_shortfall_t=shortfall, carbon_price_cny_t=carbon_price_cny_t,
        shortfall_cost_cny=shortfall * carbon_price_cny_t)


def year_progress(clock: PlantClock, t: datetime) -> tuple[float, float]:
    """(fraction of the plant-local year passed, days left in it) at `t`."""
    frac = clock.year_fraction(t)
    year = clock.scaled_local(t).year
    days_in_year = 366 if calendar.isleap(year) else 365
    return frac, (1.0 - frac) * days_in_year


def allowance_position_at(clock: PlantClock, t: datetime, annual_t: float, ytd_t: float,
                          trailing_30d_t: float, *,
                          carbon_price_cny_t: float = 0.0) -> AllowancePosition:
    """Allowance position at instant `t`, the year fraction from the plant clock."""
    frac, days_left = year_progress(clock, t)
    return allowance_position(annual_t, ytd_t, trailing_30d_t, year_fraction=frac,
                              days_left=days_left, carbon_price_cny_t=carbon_price_cny_t)
