"""CEMS quality assurance (HJ 75-2017): daily zero and span checks, their drift against the
configured limits, the out-of-control intervals they open, and the periodic comparison
tests (relative accuracy against a reference method). Pure, no I/O.

Sources (HJ 75-2017 "Specifications for continuous emissions monitoring of SO2, NOx and
particulate matter in the flue gas emitted from stationary sources", §10 daily operation
quality assurance and §11 data review; HJ 76-2017 for the test procedures):

- Drift of a check, in % of full scale: (measured − reference) / full scale · 100.
- Two limits per check: the technical requirement (a check within it *passes*), and the
  out-of-control index (a check beyond it makes the analyser *out of control*). A check
  between the two passes neither: the analyser must be adjusted, its data stay valid.
  Defaults, per 24 h automatic calibration: gaseous analysers (HJ 75 names SO2 and NOx;
  CO2 is taken as a gaseous analyser) and O2: requirement zero ±2.5 % F.S. and span
  ±2.5 % F.S., out of control beyond zero ±5.0 % F.S. or span ±10.0 % F.S.; flow
  (velocity) CMS: requirement ±3.0 % F.S., out of control beyond ±8.0 % F.S.
- Out of control: from the check that found it until a later check of the same source,
  parameter and kind meets the technical requirement again; the data between are invalid
  and substituted (compute/entries.py flags them D).
- Automatic checks: the analyser calibrates by itself and its logger shows it on a status
  tag (`AutoCheck`, a source's `qa.auto`); `calibration_episodes` finds the falling edge of
  the status and the check's measured value (the mean reading over the phase's last
  `average_s`), which server/qacapture.py enters as a zero or span check made at the edge.
- Relative accuracy of n paired results (reference method RM_i, CEMS CEMS_i):
  d_i = RM_i − CEMS_i, d̄ = Σd_i/n, S_d = sqrt(Σ(d_i − d̄)²/(n − 1)),
  cc = t(0.975, n − 1) · S_d / √n, RA = (|d̄| + |cc|) / RM̄ · 100 %, with t the two-sided
  95 % Student t of n − 1 degrees of freedom (HJ 75-2017 annex, the t table of the
  comparison test; the same as US EPA PS-2 Table 2-1). Limits: RA ≤ 15 % for gaseous
  analysers and O2; the flow is judged by its relative error (CEMS̄ − RM̄) / RM̄ · 100,
  ≤ 10 % above 10 m/s (≤ 12 % at or below; configure `re_pct` for such a duct). A
  comparison takes at least 9 data pairs.

The limits are configuration (`QaConfig`, a source's `qa:` block); the defaults are the
standard's. The numbers above were taken from the text of HJ 75-2017 as the project knows
it; check them against the edition in force before relying on them in an audit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from model.errors import InvalidValueError
from model.schema import ConfigModel
from model.times import as_utc

CheckKind = Literal["zero", "span"]
Parameter = Literal["co2", "o2", "flow"]
CheckStatus = Literal["pass", "adjust", "out_of_control"]
CHECK_KINDS: tuple[CheckKind, ...] = ("zero", "span")
PARAMETERS: tuple[Parameter, ...] = ("co2", "o2", "flow")

# Two-sided 95 % Student t, t(0.975, f), by degrees of freedom f = n − 1 (HJ 75-2017's t
# table of the comparison test; standard values). Beyond 30 the table steps; a degree of
# freedom between two rows takes the lower row (a larger t: the conservative side).
T_975: Mapping[int, float] = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
    16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
    23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
    30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}
T_975_INF = 1.960


def t_975(dof: int) -> float:
    """t(0.975, dof): the two-sided 95 % Student t of `dof` degrees of freedom."""
    if dof < 1:
        raise InvalidValueError(f"a t value needs at least 1 degree of freedom, not {dof}")
    if dof in T_975:
        return T_975[dof]
    below = [f for f in T_975 if f < dof]
    return T_975[max(below)] if dof <= max(T_975) else T_975_INF


# ---------------------------------------------------------------------------- limits


class DriftLimits(ConfigModel):
    """Daily drift limits of one analyser, in % of full scale (absolute values)."""

    zero_pct_fs: float = Field(2.5, gt=0, le=100)  # technical requirement: passes within
    span_pct_fs: float = Field(2.5, gt=0, le=100)
    zero_out_of_control_pct_fs: float = Field(5.0, gt=0, le=100)  # out of control beyond
    span_out_of_control_pct_fs: float = Field(10.0, gt=0, le=100)

    def model_post_init(self, _ctx: Any) -> None:
        """An out-of-control index is never tighter than the requirement it follows."""
        for kind in CHECK_KINDS:
            if self.out_of_control_pct_fs(kind) < self.requirement_pct_fs(kind):
                raise ValueError(f"'{kind}_out_of_control_pct_fs' must be at least "
                                 f"'{kind}_pct_fs' ({self.requirement_pct_fs(kind)})")

    def requirement_pct_fs(self, kind: CheckKind) -> float:
        """The technical requirement of a zero or span check."""
        return self.zero_pct_fs if kind == "zero" else self.span_pct_fs

    def out_of_control_pct_fs(self, kind: CheckKind) -> float:
        """The out-of-control index of a zero or span check."""
        return self.zero_out_of_control_pct_fs if kind == "zero" else (
            self.span_out_of_control_pct_fs)


class ComparisonLimits(ConfigModel):
    """Limits of a periodic comparison test against the reference method."""

    ra_pct: float | None = Field(15.0, gt=0, le=100)  # relative accuracy; None: not judged
    re_pct: float | None = Field(None, gt=0, le=100)  # |relative error|; None: not judged
    min_pairs: int = Field(9, ge=2)


class ParameterQa(ConfigModel):
    """The QA limits of one measured parameter."""

    drift: DriftLimits = DriftLimits()
    comparison: ComparisonLimits = ComparisonLimits()


_FLOW_QA = ParameterQa(
    drift=DriftLimits(zero_pct_fs=3.0, span_pct_fs=3.0, zero_out_of_control_pct_fs=8.0,
                      span_out_of_control_pct_fs=8.0),
    comparison=ComparisonLimits(ra_pct=None, re_pct=10.0))


class AutoCheck(ConfigModel):
    """A zero or span check the analyser makes by itself, read from its status and reading
    tags (as a CEMS data logger exposes an automatic calibration: a status register that
    reads non-zero while calibrating, or a phase code, e.g. 1 zero gas on, 2 span gas on).

    The check ends at the falling edge of the status: the first sample after the phase
    (`phase_value` given: the status reading that value; else: the status non-zero). Its
    measured value is the mean of `reading_tag` over the last `average_s` seconds of the
    phase, once the reading settled on the gas; it takes `min_samples` valid readings there.
    """

    parameter: Parameter
    check: CheckKind
    reading_tag: str  # what the analyser reads on the gas: its measurement tag or a dedicated one
    reference_value: float = Field(allow_inf_nan=False)  # the zero or span gas, in `unit`
    full_scale: float = Field(gt=0, allow_inf_nan=False)  # the analyser's range, in `unit`
    unit: str = Field(min_length=1)
    status_tag: str | None = None  # default: the `qa:` block's calibration_tag
    phase_value: int | None = None  # the status value of this gas on; None: any non-zero
    average_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    min_samples: int = Field(3, ge=1)

    def model_post_init(self, _ctx: Any) -> None:
        """A phase code is non-zero: 0 is the analyser measuring the flue gas."""
        if self.phase_value == 0:
            raise ValueError("'phase_value' 0 is the status of no calibration; give the "
                             "code of this check's gas, or leave it out for any non-zero")


class QaConfig(ConfigModel):
    """A source's CEMS quality assurance: the analyser's calibration-in-progress status tag,
    the checks it makes by itself (`auto`), and the limits of each parameter's checks and
    comparison tests (HJ 75-2017 defaults)."""

    # A tag that reads non-zero while the analyser calibrates: those minutes get flag C.
    calibration_tag: str | None = None
    # Zero and span checks recorded from the analyser's own calibration (server/qacapture.py).
    auto: tuple[AutoCheck, ...] = ()
    co2: ParameterQa = ParameterQa()
    o2: ParameterQa = ParameterQa()
    flow: ParameterQa = _FLOW_QA

    def model_post_init(self, _ctx: Any) -> None:
        """Each automatic check has a status tag, and one of a parameter's kind at most."""
        seen: set[tuple[str, str]] = set()
        for i, a in enumerate(self.auto):
            if a.status_tag is None and self.calibration_tag is None:
                raise ValueError(f"auto[{i}] ({a.parameter} {a.check}) has no status tag: set "
                                 "'calibration_tag' or the check's 'status_tag'")
            if (a.parameter, a.check) in seen:
                raise ValueError(f"auto[{i}]: a second automatic {a.parameter} {a.check} check")
            seen.add((a.parameter, a.check))

    def limits(self, parameter: Parameter) -> ParameterQa:
        """The limits of one parameter."""
        qa: ParameterQa = getattr(self, parameter)
        return qa

    def status_tag(self, auto: AutoCheck) -> str:
        """The status tag that tells when `auto` runs."""
        tag = auto.status_tag or self.calibration_tag
        assert tag is not None  # model_post_init
        return tag


DEFAULT_QA = QaConfig()


# ---------------------------------------------------------------------------- checks


def _finite(v: float, what: str) -> float:
    x = float(v)
    if not math.isfinite(x):
        raise InvalidValueError(f"{what} = {v!r} must be finite")
    return x


def drift_pct_fs(reference_value: float, measured_value: float, full_scale: float) -> float:
    """Drift of a check in % of full scale: (measured − reference) / full scale · 100."""
    if not (math.isfinite(full_scale) and full_scale > 0):
        raise InvalidValueError(f"full scale {full_scale!r} must be finite and > 0")
    return (measured_value - reference_value) / full_scale * 100.0


@dataclass(frozen=True, slots=True)
class QaCheck:
    """A zero or span check of one analyser: the reference (zero or span gas, or the
    transmitter's reference signal) and what the analyser read, in `unit`."""

    source: str
    t: datetime  # when the check was made, UTC
    kind: CheckKind
    parameter: Parameter
    reference_value: float
    measured_value: float
    full_scale: float  # the analyser's range, same unit
    unit: str  # of the three values, e.g. "%" (CO2, O2) or "m/s" (velocity)
    entry: int = 0  # ledger id of the entry that recorded it

    def __post_init__(self) -> None:
        where = f"{self.kind} check of {self.source!r} {self.parameter}"
        if self.kind not in CHECK_KINDS:
            raise InvalidValueError(f"check kind {self.kind!r} is not one of "
                                    f"{', '.join(CHECK_KINDS)}")
        if self.parameter not in PARAMETERS:
            raise InvalidValueError(f"{where}: parameter is not one of {', '.join(PARAMETERS)}")
        if not self.unit:
            raise InvalidValueError(f"{where}: name the unit of its values")
        object.__setattr__(self, "t", as_utc(self.t, where))
        object.__setattr__(self, "reference_value",
                           _finite(self.reference_value, f"{where}: reference_value"))
        object.__setattr__(self, "measured_value",
                           _finite(self.measured_value, f"{where}: measured_value"))
        fs = _finite(self.full_scale, f"{where}: full_scale")
        if fs <= 0:
            raise InvalidValueError(f"{where}: full_scale = {fs} must be > 0")
        object.__setattr__(self, "full_scale", fs)

    @property
    def drift_pct_fs(self) -> float:
        """(measured − reference) / full scale · 100."""
        return drift_pct_fs(self.reference_value, self.measured_value, self.full_scale)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A check judged against its limits."""

    check: QaCheck
    drift_pct_fs: float
    requirement_pct_fs: float  # |drift| within: pass
    out_of_control_pct_fs: float  # |drift| beyond: out of control
    status: CheckStatus

    @property
    def passed(self) -> bool:
        """Whether the check met the technical requirement."""
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        """Whether the check found the analyser out of control."""
        return self.status == "out_of_control"


def judge_check(check: QaCheck, qa: QaConfig = DEFAULT_QA) -> CheckResult:
    """A check's drift against the limits of its parameter: pass, adjust or out_of_control."""
    limits = qa.limits(check.parameter).drift
    drift = check.drift_pct_fs
    need = limits.requirement_pct_fs(check.kind)
    ooc = limits.out_of_control_pct_fs(check.kind)
    # A small tolerance: a drift of exactly the limit (2.5 % F.S. from 10.25 against
    # 10.00 at 10 % F.S.) must not fail on the binary rounding of the subtraction.
    size = abs(drift) - 1e-9
    status: CheckStatus = "pass" if size <= need else (
        "adjust" if size <= ooc else "out_of_control")
    return CheckResult(check, drift, need, ooc, status)


def out_of_control(checks: Iterable[QaCheck],
                   limits: Mapping[str, QaConfig] | None = None,
                   ) -> dict[str, tuple[tuple[float, float], ...]]:
    """Per source, the [t0, t1) epoch-second intervals its analysers were out of control.

    An interval opens at a check that finds the analyser out of control and closes at the
    next check of the same source, parameter and kind that passes (math.inf while none
    has). A check that only needs an adjustment neither opens nor closes one. A zero
    check does not close a span check's interval (nor the reverse): the failed quantity
    itself must be shown back within the requirement. Intervals of a source's parameters
    are merged. `limits` gives each source's QaConfig (default: the standard's limits).
    Checks at one instant apply in entry order.
    """
    limits = {} if limits is None else limits
    open_at: dict[tuple[str, str, str], float] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    for c in sorted(checks, key=lambda c: (c.t, c.entry)):
        key = (c.source, c.parameter, c.kind)
        result = judge_check(c, limits.get(c.source, DEFAULT_QA))
        t = c.t.timestamp()
        if result.failed:
            open_at.setdefault(key, t)
        elif result.passed and key in open_at:
            t0 = open_at.pop(key)
            if t > t0:
                spans.setdefault(c.source, []).append((t0, t))
    for (source, _, _), t0 in open_at.items():
        spans.setdefault(source, []).append((t0, math.inf))
    return {s: _merged(v) for s, v in sorted(spans.items())}


def _merged(spans: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    out: list[tuple[float, float]] = []
    for t0, t1 in sorted(spans):
        if out and t0 <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], t1))
        else:
            out.append((t0, t1))
    return tuple(out)


# ------------------------------------------------------------- automatic checks


@dataclass(frozen=True, slots=True)
class CalibrationEpisode:
    """One run of an automatic check found in the status samples, epoch seconds: `t0` the
    first sample in the phase, `t1` the first sample after it (the falling edge), and the
    mean of the reading over the phase's last `average_s` seconds (None: fewer than
    `min_samples` readings there)."""

    t0: float
    t1: float
    measured_value: float | None
    n: int  # readings averaged


def _as_f64(x: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(x, np.float64).reshape(-1)


def in_phase(status_v: npt.NDArray[np.float64], phase_value: int | None
             ) -> npt.NDArray[np.bool_]:
    """Whether each status reading is in the phase: reads `phase_value` (rounded: a register
    read as a float), or, without one, non-zero (as compute/minute.py's flag C). NaN: no."""
    if phase_value is not None:
        return np.asarray(np.rint(status_v) == phase_value)
    return np.asarray((status_v != 0.0) & np.isfinite(status_v))


def calibration_episodes(status_t: Sequence[float] | npt.NDArray[np.float64],
                         status_v: Sequence[float] | npt.NDArray[np.float64],
                         reading_t: Sequence[float] | npt.NDArray[np.float64],
                         reading_v: Sequence[float] | npt.NDArray[np.float64], *,
                         phase_value: int | None = None, average_s: float = 30.0,
                         min_samples: int = 1,
                         ) -> tuple[list[CalibrationEpisode], float | None]:
    """The finished episodes of an automatic check in these samples, and the first sample
    time of one still running (None: none runs at the last status sample).

    Samples are valid readings in time order (epoch seconds). The status is *in the phase*
    when it reads `phase_value` (rounded: a register read as a float), or, without one,
    when it reads non-zero (as compute/minute.py's flag C). An episode runs from the first
    status sample in the phase to the first one out of it, `t1`; its measured value is the
    mean of the readings at t with max(t0, t1 − average_s) ≤ t < t1: the window never reaches
    back before the phase, and a reading stamped with the edge belongs to after it.
    A status that is in the phase at the first sample starts an episode there.
    """
    st, sv, rt, rv = (_as_f64(a) for a in (status_t, status_v, reading_t, reading_v))
    if st.shape != sv.shape or rt.shape != rv.shape:
        raise InvalidValueError("calibration samples: each tag needs as many times as values "
                                f"(status {st.shape[0]}/{sv.shape[0]}, reading "
                                f"{rt.shape[0]}/{rv.shape[0]})")
    keep = np.isfinite(sv)  # a status that reads NaN says nothing either way
    st, sv = st[keep], sv[keep]
    on = in_phase(sv, phase_value)
    if not on.size:
        return [], None
    step = np.diff(on.astype(np.int8), prepend=np.int8(0))
    starts = np.flatnonzero(step == 1)
    ends = np.flatnonzero(step == -1)
    good = np.isfinite(rv)
    rt, rv = rt[good], rv[good]
    out: list[CalibrationEpisode] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=False):  # a start pairs its end
        t0, t1 = float(st[a]), float(st[b])
        sel = (rt >= max(t0, t1 - average_s)) & (rt < t1)
        n = int(np.count_nonzero(sel))
        mean = math.fsum(rv[sel].tolist()) / n if n >= max(min_samples, 1) else None
        out.append(CalibrationEpisode(t0, t1, mean, n))
    running = float(st[starts[-1]]) if on[-1] else None
    return out, running


def auto_check(source: str, auto: AutoCheck, episode: CalibrationEpisode) -> QaCheck:
    """The zero or span check an episode of `auto` records, made at its falling edge."""
    if episode.measured_value is None:
        raise InvalidValueError(
            f"automatic {auto.check} check of {source!r} {auto.parameter}: {episode.n} "
            f"readings of {auto.reading_tag} in the last {auto.average_s:g} s before "
            f"{datetime.fromtimestamp(episode.t1, UTC).isoformat()}, {auto.min_samples} needed")
    return QaCheck(source, datetime.fromtimestamp(episode.t1, UTC), auto.check, auto.parameter,
                   auto.reference_value, episode.measured_value, auto.full_scale, auto.unit)


# ---------------------------------------------------------------- comparison tests


@dataclass(frozen=True, slots=True)
class RaTest:
    """A periodic comparison test: paired results of the reference method and the CEMS,
    each pair over the same period, in `unit`."""

    source: str
    t: datetime  # when the test was made, UTC
    parameter: Parameter
    reference: tuple[float, ...]
    cems: tuple[float, ...]
    unit: str
    entry: int = 0

    def __post_init__(self) -> None:
        where = f"comparison test of {self.source!r} {self.parameter}"
        if self.parameter not in PARAMETERS:
            raise InvalidValueError(f"{where}: parameter is not one of {', '.join(PARAMETERS)}")
        if not self.unit:
            raise InvalidValueError(f"{where}: name the unit of its values")
        object.__setattr__(self, "t", as_utc(self.t, where))
        ref = tuple(_finite(v, f"{where}: reference[{i}]") for i, v in enumerate(self.reference))
        cems = tuple(_finite(v, f"{where}: cems[{i}]") for i, v in enumerate(self.cems))
        if len(ref) != len(cems):
            raise InvalidValueError(f"{where}: {len(ref)} reference results but "
                                    f"{len(cems)} CEMS results; they come in pairs")
        if len(ref) < 2:
            raise InvalidValueError(f"{where}: needs at least 2 data pairs, got {len(ref)}")
        object.__setattr__(self, "reference", ref)
        object.__setattr__(self, "cems", cems)


@dataclass(frozen=True, slots=True)
class RaResult:
    """The statistics of a comparison test and its verdict."""

    test: RaTest
    n: int
    mean_reference: float
    mean_cems: float
    mean_d: float  # d̄ = mean(RM − CEMS)
    sd: float  # S_d
    t_value: float  # t(0.975, n − 1)
    cc: float  # confidence coefficient t·S_d/√n
    ra_pct: float  # (|d̄| + |cc|) / RM̄ · 100
    re_pct: float  # (CEMS̄ − RM̄) / RM̄ · 100
    ra_limit_pct: float | None
    re_limit_pct: float | None
    min_pairs: int
    passed: bool


def relative_accuracy(reference: Sequence[float], cems: Sequence[float]
                      ) -> tuple[float, float, float, float, float, float, float, float]:
    """(RM̄, CEMS̄, d̄, S_d, t, cc, RA %, RE %) of paired results (HJ 75-2017)."""
    n = len(reference)
    if n != len(cems) or n < 2:
        raise InvalidValueError(f"relative accuracy needs at least 2 pairs ({n} reference, "
                                f"{len(cems)} CEMS results)")
    d = [r - c for r, c in zip(reference, cems, strict=True)]
    mean_ref = math.fsum(reference) / n
    mean_cems = math.fsum(cems) / n
    if not mean_ref > 0:
        raise InvalidValueError(f"the reference mean {mean_ref} must be > 0")
    mean_d = math.fsum(d) / n
    sd = math.sqrt(math.fsum((x - mean_d) ** 2 for x in d) / (n - 1))
    t = t_975(n - 1)
    cc = t * sd / math.sqrt(n)
    ra = (abs(mean_d) + abs(cc)) / mean_ref * 100.0
    re = (mean_cems - mean_ref) / mean_ref * 100.0
    return mean_ref, mean_cems, mean_d, sd, t, cc, ra, re


def judge_ra(test: RaTest, qa: QaConfig = DEFAULT_QA) -> RaResult:
    """A comparison test's statistics against its parameter's limits.

    It passes with enough pairs and every configured limit met: RA ≤ `ra_pct`,
    |RE| ≤ `re_pct`.
    """
    lim = qa.limits(test.parameter).comparison
    mean_ref, mean_cems, mean_d, sd, t, cc, ra, re = relative_accuracy(test.reference, test.cems)
    n = len(test.reference)
    ok = n >= lim.min_pairs
    if lim.ra_pct is not None:
        ok = ok and ra <= lim.ra_pct + 1e-9
    if lim.re_pct is not None:
        ok = ok and abs(re) <= lim.re_pct + 1e-9
    return RaResult(test, n, mean_ref, mean_cems, mean_d, sd, t, cc, ra, re, lim.ra_pct,
                    lim.re_pct, lim.min_pairs, ok)
