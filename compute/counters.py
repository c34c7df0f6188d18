"""Deltas of cumulative meter registers (kWh, m³, t): roll-over, meter replacement, implausible
jumps and invalid readings, each flagged. Pure functions over numpy arrays, no I/O.

A register counts consumption exactly however seldom it is read, so a delta across
invalid readings ("gap") loses nothing; it is only attributed to the interval it ends in.
What cannot be known (a reset or an unrecorded meter replacement) is never invented:
such a delta is NaN and flagged, for the substitution rule to fill.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from model.errors import InvalidValueError
from model.flags import DataFlag

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]

# Reason bits of a delta (a delta may carry several, e.g. "rollover,gap").
REPLACEMENT = 1  # an explicit replacement event lies in the interval: exact delta
REPLACEMENT_INCONSISTENT = 2  # the event's readings contradict the register: NaN
ROLLOVER = 4  # the register wrapped past its maximum
RESET = 8  # unexplained decrease: reset or unrecorded replacement: NaN
IMPLAUSIBLE_JUMP = 16  # increase above the maximum plausible rate: kept, flagged T
INVALID_READING = 32  # the interval ends in an invalid reading: NaN, counted in the gap
NO_VALID_START = 64  # first valid reading after only invalid ones: NaN
GAP = 128  # the delta spans invalid readings, measured from the last valid one

REASON_NAMES: tuple[tuple[int, str], ...] = (
    (REPLACEMENT, "replacement"),
    (REPLACEMENT_INCONSISTENT, "replacement_inconsistent"),
    (ROLLOVER, "rollover"),
    (RESET, "reset_or_replacement"),
    (IMPLAUSIBLE_JUMP, "implausible_jump"),
    (INVALID_READING, "invalid_reading"),
    (NO_VALID_START, "no_valid_start"),
    (GAP, "gap"),
)

_N = int(DataFlag.N)
_T = int(DataFlag.T)
_B = int(DataFlag.B)
_D = int(DataFlag.D)

# One row per interval between consecutive readings; `delta` is in the meter's unit.
DELTA_DTYPE = np.dtype([
    ("t_start_s", np.float64),  # epoch seconds: the interval's first reading
    ("t_end_s", np.float64),  # epoch seconds: the interval's last reading
    ("delta", np.float64),
    ("flag", "U1"),  # DataFlag letter
    ("reason", "U96"),  # comma-separated REASON_NAMES, "" when normal
])


@dataclass(frozen=True, slots=True)
class MeterConfig:
    """How to read one cumulative register.

    The register counts 0 … register_max in steps of `resolution` and then wraps to 0,
    so one roll-over adds register_max + resolution (e.g. 99999999.99 + 0.01 = 10⁸).
    """

    meter: str
    unit: str  # "kWh", "m3", "t" …
    register_max: float  # largest reading shown, e.g. 99999999.99 for 8+2 digits
    resolution: float  # smallest step, e.g. 0.01
    max_rate_per_h: float  # largest plausible consumption in `unit` per hour

    def __post_init__(self) -> None:
        for name in ("register_max", "resolution", "max_rate_per_h"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise InvalidValueError(f"meter {self.meter!r}: {name} = {v!r} "
                                        "must be finite and > 0")
        if self.resolution > self.register_max:
            raise InvalidValueError(f"meter {self.meter!r}: resolution {self.resolution!r} exceeds "
                                    f"register_max {self.register_max!r}")

    @property
    def modulus(self) -> float:
        """The count at which the register wraps to 0 (register_max + resolution)."""
        return self.register_max + self.resolution


@dataclass(frozen=True, slots=True)
class MeterReplacement:
    """A recorded meter exchange at `t_s`: readings from then on come from the new meter."""

    t_s: float  # epoch seconds
    old_final: float  # last reading of the old meter
    new_initial: float  # first reading of the new meter

    def __post_init__(self) -> None:
        for name in ("t_s", "old_final", "new_initial"):
            v = getattr(self, name)
            if not math.isfinite(v) or (name != "t_s" and v < 0):
                raise InvalidValueError(f"meter replacement at t_s={self.t_s!r}: {name} = {v!r} "
                                        "must be finite" + ("" if name == "t_s" else " and >= 0"))


@njit(cache=True)
def counter_deltas_kernel(t_s: F64, value: F64, flag: U8, register_max: float,
                          modulus: float, max_rate_per_s: float, ev_t_s: F64, ev_old: F64,
                          ev_new: F64, out_delta: F64, out_flag: U8,
                          out_reason: U16) -> None:  # pragma: no cover - compiled
    """Delta, flag and reason bits of each interval (t_s[i-1], t_s[i]], written at i-1.

    A reading is valid when its flag is N and its value finite within [0, register_max].
    Deltas run from the last valid reading to each valid one; `ev_*` are the replacement
    events, sorted by time; an event at t belongs to the interval with t_start < t ≤ t_end.
    """
    n = t_s.shape[0]
    m = ev_t_s.shape[0]
    j = 0  # next replacement event
    base = math.nan
    base_i = -1
    last_bad = _B  # flag of the latest invalid reading
    for i in range(n):
        v = value[i]
        f = flag[i]
        ok = f == _N and math.isfinite(v) and 0.0 <= v <= register_max
        if i == 0:
            if ok:
                base = v
                base_i = 0
            else:
                last_bad = f if f != _N else (_T if math.isfinite(v) else _B)
            while j < m and ev_t_s[j] <= t_s[0]:
                j += 1
            continue
        k = i - 1
        if not ok:
            last_bad = f if f != _N else (_T if math.isfinite(v) else _B)
            out_delta[k] = math.nan
            out_flag[k] = last_bad
            out_reason[k] = INVALID_READING
            continue
        if base_i < 0:
            out_delta[k] = math.nan
            out_flag[k] = last_bad
            out_reason[k] = NO_VALID_START
            while j < m and ev_t_s[j] <= t_s[i]:
                j += 1
            base = v
            base_i = i
            continue
        reason = GAP if base_i < i - 1 else 0
        limit = max_rate_per_s * (t_s[i] - t_s[base_i])
        if j < m and ev_t_s[j] <= t_s[i]:
            # (old_final − prev) + Σ(between events) + (new − new_initial)
            acc = 0.0
            b = base
            consistent = True
            while j < m and ev_t_s[j] <= t_s[i]:
                part = ev_old[j] - b
                if not part >= 0.0:
                    consistent = False
                acc += part
                b = ev_new[j]
                j += 1
            part = v - b
            if not part >= 0.0:
                consistent = False
            acc += part
            if not consistent:
                out_delta[k] = math.nan
                out_flag[k] = _D
                out_reason[k] = reason | REPLACEMENT_INCONSISTENT
            elif acc > limit:
                out_delta[k] = acc
                out_flag[k] = _T
                out_reason[k] = reason | REPLACEMENT | IMPLAUSIBLE_JUMP
            else:
                out_delta[k] = acc
                out_flag[k] = _N
                out_reason[k] = reason | REPLACEMENT
        else:
            d = v - base
            if d >= 0.0:
                out_delta[k] = d
                if d > limit:
                    out_flag[k] = _T
                    out_reason[k] = reason | IMPLAUSIBLE_JUMP
                else:
                    out_flag[k] = _N
                    out_reason[k] = reason
            else:
                roll = (modulus - base) + v
                if roll <= limit:
                    out_delta[k] = roll
                    out_flag[k] = _N
                    out_reason[k] = reason | ROLLOVER
                else:
                    out_delta[k] = math.nan
                    out_flag[k] = _D
                    out_reason[k] = reason | RESET
        base = v
        base_i = i


def reason_text(bits: int) -> str:
    """The comma-separated reason names of reason `bits` ("" for none)."""
    return ",".join(name for bit, name in REASON_NAMES if bits & bit)


def meter_deltas(config: MeterConfig, t_s: F64, value: F64, flag: U8,
                 replacements: Sequence[MeterReplacement] = ()) -> npt.NDArray[np.void]:
    """One DELTA_DTYPE row per interval between consecutive readings of one meter.

    `t_s` (epoch seconds, strictly increasing), `value` and `flag` (DataFlag integers)
    are the meter's readings. Per interval, from the last valid reading `prev` to `new`:
    - increase ≤ max_rate_per_h × hours: delta, N;
    - increase above it: delta kept, T "implausible_jump" (excluded from valid sums);
    - decrease with modulus − prev + new plausible by rate: that delta, N "rollover";
    - other decrease: NaN, D "reset_or_replacement";
    - replacement event in the interval: (old_final − prev) + (new − new_initial), N
      "replacement" (NaN, D "replacement_inconsistent" if either part is negative);
    - ending in an invalid reading (flag ≠ N, NaN, outside [0, register_max]): NaN with
      that reading's flag (N with NaN → B, out of range → T), "invalid_reading"; the
      next valid reading's delta spans the gap and adds "gap".
    The new reading becomes the base in every case but an invalid reading.
    """
    t = np.ascontiguousarray(t_s, np.float64)
    v = np.ascontiguousarray(value, np.float64)
    f = np.ascontiguousarray(flag, np.uint8)
    if t.ndim != 1 or t.shape != v.shape or t.shape != f.shape:
        raise InvalidValueError(f"meter {config.meter!r}: times {t.shape}, values {v.shape} and "
                                f"flags {f.shape} must be 1-D arrays of the same length")
    if not np.isfinite(t).all() or (t.size > 1 and not (np.diff(t) > 0).all()):
        raise InvalidValueError(f"meter {config.meter!r}: reading times must be finite and "
                                "strictly increasing")
    unknown = ~np.isin(f, [int(x) for x in DataFlag])
    if unknown.any():
        raise InvalidValueError(f"meter {config.meter!r}: flag value(s) "
                                f"{sorted(set(f[unknown].tolist()))} are not DataFlag values")
    ev = sorted(replacements, key=lambda e: e.t_s)
    ev_t = np.array([e.t_s for e in ev], np.float64)
    if not np.isfinite(ev_t).all() or (ev_t.size > 1 and not (np.diff(ev_t) > 0).all()):
        raise InvalidValueError(f"meter {config.meter!r}: replacement times must be finite and "
                                "distinct")
    n_out = max(t.size - 1, 0)
    delta = np.empty(n_out, np.float64)
    out_flag = np.empty(n_out, np.uint8)
    reason = np.empty(n_out, np.uint16)
    counter_deltas_kernel(t, v, f, float(config.register_max), float(config.modulus),
                          config.max_rate_per_h / 3600.0, ev_t,
                          np.array([e.old_final for e in ev], np.float64),
                          np.array([e.new_initial for e in ev], np.float64),
                          delta, out_flag, reason)
    rows = np.empty(n_out, DELTA_DTYPE)
    rows["t_start_s"] = t[:-1]
    rows["t_end_s"] = t[1:]
    rows["delta"] = delta
    rows["flag"] = [DataFlag(int(x)).name for x in out_flag]
    texts = {int(b): reason_text(int(b)) for b in np.unique(reason)}
    rows["reason"] = [texts[int(b)] for b in reason]
    return rows


def valid_sum(rows: npt.NDArray[np.void], start_s: float, end_s: float) -> float:
    """Exact (math.fsum) sum of the N-flagged deltas whose interval ends in (start_s, end_s]."""
    t_end = rows["t_end_s"]
    d = rows["delta"]
    keep = (rows["flag"] == "N") & np.isfinite(d) & (t_end > start_s) & (t_end <= end_s)
    return math.fsum(d[keep].tolist())
