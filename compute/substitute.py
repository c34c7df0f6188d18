"""Missing-data substitution for invalid CEMS hours, configurable per source.

Rules:
- "mrr_mean_2sigma": EU MRR annex VIII eq. 4, mean + 2σ of the parameter over the
  lookback period's valid hours (σ the sample standard deviation, ddof = 1), for the
  concentration and the flow separately, each only where it is missing.
- "max_previous_n": the maximum of the previous N valid hours of the parameter.
- "factor_method": an emission-factor-method value (t CO2) the caller supplies per hour.

Only measured valid hours enter a lookback, never substitutes. With too few valid hours
in the lookback the result is NaN with a reason: nothing is invented.

Substitutes are returned beside the measured values, never written over them. A
substituted hour keeps its own flag (e.g. D, the reason it is invalid, which the
substitute does not change); the record says `substituted=True` and names the rule
(see compute.rollup.PeriodResult). Flagging it S instead would hide why data were missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit, prange

from compute.rollup import CO2_DENSITY_KG_M3
from model.errors import InvalidValueError

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

MRR_MEAN_2SIGMA = "mrr_mean_2sigma"
MAX_PREVIOUS_N = "max_previous_n"
FACTOR_METHOD = "factor_method"
RULES = (MRR_MEAN_2SIGMA, MAX_PREVIOUS_N, FACTOR_METHOD)  # index = kernel code
_CODE_MRR, _CODE_MAX, _CODE_FACTOR = 0, 1, 2

# Status of a substitution (per hour and parameter).
NOT_NEEDED = 0  # the value is measured and valid
OK = 1
TOO_FEW_VALID = 2  # fewer valid hours in the lookback than the rule's minimum
NO_FACTOR_VALUE = 3  # factor_method without a finite, non-negative value for the hour


@dataclass(frozen=True, slots=True)
class SubstitutionRule:
    """One source's substitution rule and its parameters."""

    rule: str = MRR_MEAN_2SIGMA
    n: int = 24  # hours looked at by max_previous_n
    lookback_h: int = 0  # hours before the invalid one looked at; 0 = all given
    min_valid: int | None = None  # None: 2 for mrr_mean_2sigma, n for max_previous_n

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise InvalidValueError(f"unknown substitution rule {self.rule!r}; one of {RULES}")
        if self.n < 1 or self.lookback_h < 0:
            raise InvalidValueError("n must be ≥ 1 and lookback_h ≥ 0")
        floor = 2 if self.rule == MRR_MEAN_2SIGMA else 1
        if self.min_valid is not None and self.min_valid < floor:
            raise InvalidValueError(f"{self.rule} needs min_valid ≥ {floor}")

    @property
    def min_valid_hours(self) -> int:
        """The least number of valid lookback hours the rule accepts."""
        if self.min_valid is not None:
            return self.min_valid
        return 2 if self.rule == MRR_MEAN_2SIGMA else self.n if self.rule == MAX_PREVIOUS_N else 0


@njit(cache=True, parallel=True)
def param_kernel(values: F64, valid: B1, missing: B1, code: I64, n_prev: I64,
                 lookback: I64, min_valid: I64, out: F64, out_n: I64, out_status: I8,
                 out_mean: F64, out_sigma: F64) -> None:  # pragma: no cover - compiled
    """Substitutes of one parameter for every missing hour, row by row.

    Row i uses rule `code[i]` (index into RULES); the lookback of hour h is hours
    [h − lookback[i], h) (all earlier hours when lookback[i] is 0), of which only
    those with `valid` count. mean + 2σ uses ddof = 1; max_previous_n the last
    `n_prev[i]` valid ones. factor_method rows are left NaN / NOT_NEEDED here.
    """
    for i in prange(values.shape[0]):
        for h in range(values.shape[1]):
            out[i, h] = math.nan
            out_n[i, h] = 0
            out_status[i, h] = NOT_NEEDED
            out_mean[i, h] = math.nan
            out_sigma[i, h] = math.nan
            if not missing[i, h] or code[i] == _CODE_FACTOR:
                continue
            lo = 0 if lookback[i] <= 0 else max(0, h - lookback[i])
            n = 0
            if code[i] == _CODE_MRR:
                s = 0.0
                for k in range(lo, h):
                    if valid[i, k]:
                        n += 1
                        s += values[i, k]
                out_n[i, h] = n
                if n < min_valid[i] or n < 2:
                    out_status[i, h] = TOO_FEW_VALID
                    continue
                mean = s / n
                ss = 0.0
                for k in range(lo, h):
                    if valid[i, k]:
                        d = values[i, k] - mean
                        ss += d * d
                sigma = math.sqrt(ss / (n - 1))
                out_mean[i, h] = mean
                out_sigma[i, h] = sigma
                out[i, h] = mean + 2.0 * sigma
                out_status[i, h] = OK
            else:
                mx = -math.inf
                k = h - 1
                while k >= lo and n < n_prev[i]:
                    if valid[i, k]:
                        n += 1
                        mx = max(mx, values[i, k])
                    k -= 1
                out_n[i, h] = n
                if n < min_valid[i] or n == 0:
                    out_status[i, h] = TOO_FEW_VALID
                    continue
                out[i, h] = mx
                out_status[i, h] = OK


@dataclass(frozen=True, slots=True)
class Substitution:
    """One substitute value of one parameter, with what produced it."""

    value: float  # NaN when it could not be computed (see reason)
    rule: str
    reason: str  # "" when value is usable
    n_used: int  # valid hours the rule looked at
    mean: float = math.nan  # mrr_mean_2sigma only
    sigma: float = math.nan  # mrr_mean_2sigma only (ddof = 1)


def _too_few(param: str, n: int, need: int) -> str:
    return (f"{param}: {n} valid hour{'s' if n != 1 else ''} in the lookback, "
            f"at least {need} needed")


def _one(lookback: npt.ArrayLike, rule: SubstitutionRule) -> Substitution:
    """Substitute for the hour right after `lookback` (NaN entries = invalid hours)."""
    lb = np.asarray(lookback, np.float64).ravel()
    values = np.append(lb, np.nan)[None, :]
    valid = np.isfinite(values)
    missing = np.zeros_like(valid)
    missing[0, -1] = True
    out = _run_param(values, valid, missing, [rule])
    h = lb.size
    if out.status[0, h] == OK:
        reason = ""
    else:
        reason = _too_few("value", int(out.n_used[0, h]), rule.min_valid_hours)
    return Substitution(float(out.value[0, h]), rule.rule, reason, int(out.n_used[0, h]),
                        float(out.mean[0, h]), float(out.sigma[0, h]))


def mean_plus_2sigma(lookback: npt.ArrayLike, *, min_valid: int = 2) -> Substitution:
    """EU MRR annex VIII eq. 4: mean + 2σ (ddof = 1) of the lookback's finite values."""
    return _one(lookback, SubstitutionRule(MRR_MEAN_2SIGMA, min_valid=min_valid))


def max_previous(lookback: npt.ArrayLike, n: int, *,
                 min_valid: int | None = None) -> Substitution:
    """Maximum of the last `n` finite values of the lookback (oldest first)."""
    return _one(lookback, SubstitutionRule(MAX_PREVIOUS_N, n=n, min_valid=min_valid))


def factor_method(co2_t: float) -> Substitution:
    """The caller's emission-factor-method value for the hour, checked to be usable."""
    if math.isfinite(co2_t) and co2_t >= 0.0:
        return Substitution(co2_t, FACTOR_METHOD, "", 0)
    return Substitution(math.nan, FACTOR_METHOD,
                        f"factor-method value {co2_t!r} is not a finite, non-negative t CO2", 0)


@dataclass(frozen=True, slots=True)
class _Param:
    value: F64
    n_used: I64
    status: I8
    mean: F64
    sigma: F64


def _run_param(values: F64, valid: B1, missing: B1, rules: Sequence[SubstitutionRule]) -> _Param:
    r, h = values.shape
    out = _Param(np.empty((r, h)), np.empty((r, h), np.int64), np.empty((r, h), np.int8),
                 np.empty((r, h)), np.empty((r, h)))
    param_kernel(np.ascontiguousarray(values), np.ascontiguousarray(valid),
                 np.ascontiguousarray(missing),
                 np.array([RULES.index(x.rule) for x in rules], np.int64),
                 np.array([x.n for x in rules], np.int64),
                 np.array([x.lookback_h for x in rules], np.int64),
                 np.array([x.min_valid_hours for x in rules], np.int64),
                 out.value, out.n_used, out.status, out.mean, out.sigma)
    return out


@dataclass(frozen=True, slots=True)
class HourSubstitutes:
    """Substitutes for invalid hours, arrays shaped (sources, hours); NaN = none."""

    rules: tuple[SubstitutionRule, ...]  # per source
    co2_dry_pct: F64  # substituted concentration where it was missing
    flow_std_dry_m3_h: F64  # substituted flow where it was missing
    co2_t: F64  # the hour's substitute mass; NaN where valid or not computable
    co2_status: I8  # per parameter: NOT_NEEDED, OK, TOO_FEW_VALID, NO_FACTOR_VALUE
    flow_status: I8
    co2_n_used: I64  # valid lookback hours used
    flow_n_used: I64

    @property
    def substituted(self) -> B1:
        """Whether each hour has a substitute mass."""
        out: B1 = np.isfinite(self.co2_t)
        return out

    @property
    def rule_names(self) -> tuple[str, ...]:
        """The rule name of each source (for PeriodResult.substitution_rule)."""
        return tuple(r.rule for r in self.rules)

    def reason(self, source: int, hour: int) -> str:
        """Why hour `hour` of source `source` has no substitute ("" when it has one)."""
        rule = self.rules[source]
        parts = []
        for name, status, n_used in (
                ("co2_dry_pct", self.co2_status, self.co2_n_used),
                ("flow_std_dry_m3_h", self.flow_status, self.flow_n_used)):
            st = int(status[source, hour])
            if st == TOO_FEW_VALID:
                parts.append(_too_few(name, int(n_used[source, hour]), rule.min_valid_hours))
            elif st == NO_FACTOR_VALUE:
                return "no finite, non-negative factor-method value (t CO2) for the hour"
        return "; ".join(parts)


def substitute_hours(co2_dry_pct: npt.ArrayLike, flow_std_dry_m3_h: npt.ArrayLike,
                     co2_valid: npt.ArrayLike, rules: Sequence[SubstitutionRule], *,
                     flow_valid: npt.ArrayLike | None = None,
                     factor_co2_t: npt.ArrayLike | None = None,
                     rho_kg_m3: float = CO2_DENSITY_KG_M3) -> HourSubstitutes:
    """Substitutes for the invalid hours of each source's hour series (oldest first).

    Inputs are (sources, hours) hour means (compute.rollup.HourArrays stacked over
    hours) and validity. With one mask (`co2_valid`, e.g. `HourArrays.valid`) both
    parameters of an invalid hour are substituted; with `flow_valid` too, a parameter
    still valid in an invalid hour keeps its measured value and only the other is
    substituted. Substitute mass = C·ρ·Q/100 · 1 h / 1000 t. `factor_co2_t` supplies
    the factor_method values (NaN where none).
    """
    c = np.atleast_2d(np.asarray(co2_dry_pct, np.float64))
    q = np.atleast_2d(np.asarray(flow_std_dry_m3_h, np.float64))
    c_ok = np.atleast_2d(np.asarray(co2_valid, np.bool_)) & np.isfinite(c)
    q_ok = (np.atleast_2d(np.asarray(co2_valid if flow_valid is None else flow_valid, np.bool_))
            & np.isfinite(q))
    if not c.shape == q.shape == c_ok.shape == q_ok.shape:
        raise InvalidValueError(f"shapes differ: {c.shape}, {q.shape}, {c_ok.shape}, {q_ok.shape}")
    if len(rules) != c.shape[0]:
        raise InvalidValueError(f"{len(rules)} rules for {c.shape[0]} sources")
    need = ~(c_ok & q_ok)
    pc = _run_param(c, c_ok, need & ~c_ok, rules)
    pq = _run_param(q, q_ok, need & ~q_ok, rules)
    c_used = np.where(c_ok, c, pc.value)
    q_used = np.where(q_ok, q, pq.value)
    mass = c_used * rho_kg_m3 * q_used / 100.0 / 1000.0
    mass = np.where(need, mass, np.nan)
    co2_status, flow_status = pc.status, pq.status
    is_factor = np.array([r.rule == FACTOR_METHOD for r in rules])
    if is_factor.any():
        fac = (np.full(c.shape, np.nan) if factor_co2_t is None
               else np.atleast_2d(np.asarray(factor_co2_t, np.float64)))
        usable = np.isfinite(fac) & (fac >= 0.0)
        rows = is_factor[:, None] & need
        mass = np.where(rows, np.where(usable, fac, np.nan), mass)
        fstat = np.where(usable, OK, NO_FACTOR_VALUE).astype(np.int8)
        co2_status = np.where(rows, fstat, co2_status).astype(np.int8)
        flow_status = np.where(rows, fstat, flow_status).astype(np.int8)
    return HourSubstitutes(tuple(rules), pc.value, pq.value, np.asarray(mass, np.float64),
                           co2_status, flow_status, pc.n_used, pq.n_used)


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the substitution kernel on tiny inputs."""
    mean_plus_2sigma([1.0, 2.0])
