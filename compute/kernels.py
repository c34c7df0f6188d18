"""numba kernels of the minute cycle: pure functions over numpy arrays, no I/O.

Flags are the integer values of server.records.DataFlag (0 = N, normal); a higher
integer is a flag of higher precedence.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit, prange

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
B1 = npt.NDArray[np.bool_]

# Columns of the CEMS input matrix (one row per source).
FLOW = 0  # velocity m/s, or actual flow m³/h when the source's USE_FLOW param is 1
CO2 = 1  # CO2 % (dry or wet per the CO2_WET param)
TEMP = 2  # flue-gas temperature °C
STATIC = 3  # static pressure Pa (gauge)
BARO = 4  # barometric pressure Pa
MOIST = 5  # moisture % vol
N_INPUTS = 6

# Columns of the per-source parameter matrix.
AREA = 0  # duct area m²
CO2_WET = 1  # 1.0 when the analyser reads wet
USE_FLOW = 2  # 1.0 when FLOW is an actual flow in m³/h
N_PARAMS = 3

# Columns of the CEMS output matrix.
OUT_FLOW_ACT = 0  # m³/h actual wet
OUT_FLOW_SD = 1  # m³/h standard dry
OUT_CO2_DRY = 2  # % dry
OUT_CO2_MG = 3  # mg/m³ standard dry
OUT_RATE = 4  # kg/h
OUT_MASS = 5  # kg in the minute
N_OUT = 6

FLAG_B = 3  # communication failure: a tag with no sample at all in its minute


@njit(cache=True, parallel=True)
def tag_minute_stats(values: F64, flags: U8, counts: I64, min_valid: int,
                     out_mean: F64, out_min: F64, out_max: F64, out_count: I64,
                     out_flag: U8) -> None:  # pragma: no cover - compiled
    """Per tag: mean, min, max and count of valid samples, and the minute's flag.

    `values[i, :counts[i]]` are tag i's samples in the minute. A sample is valid when
    its flag is 0 and its value finite. The minute is valid (flag 0) with at least
    `min_valid` valid samples; otherwise its flag is the highest among its invalid
    samples, or B when there were none. Statistics are of the valid samples (NaN if
    none), kept even for an invalid minute for traceability.
    """
    for i in prange(values.shape[0]):
        n = 0
        s = 0.0
        lo = math.inf
        hi = -math.inf
        worst = 0
        for k in range(counts[i]):
            v = values[i, k]
            f = flags[i, k]
            if f == 0 and math.isfinite(v):
                n += 1
                s += v
                lo = min(lo, v)
                hi = max(hi, v)
            elif f > worst:
                worst = f
        out_count[i] = n
        if n > 0:
            out_mean[i] = s / n
            out_min[i] = lo
            out_max[i] = hi
        else:
            out_mean[i] = math.nan
            out_min[i] = math.nan
            out_max[i] = math.nan
        if n >= min_valid:
            out_flag[i] = 0
        elif worst > 0:
            out_flag[i] = worst
        else:
            out_flag[i] = FLAG_B


@njit(cache=True, parallel=True)
def cems_minute(inputs: F64, input_flags: U8, params: F64, t0_k: float, p0_pa: float,
                rho_kg_m3: float, minute_h: float, out: F64,
                out_flag: U8) -> None:  # pragma: no cover - compiled
    """CEMS results per source from the minute means of its inputs (DESIGN.md formulas).

    Q_act = 3600·v·A; Q_sd = Q_act·T0/(T0+t)·(Ba+Ps)/P0·(1−Xsw); C_d = C_w/(1−Xsw) when
    wet; mg/m³ = C_d·ρ·1e4; G = C_d/100·ρ·Q_sd kg/h; minute mass = G·minute_h.
    The source's flag is the highest flag among its inputs (0 when all are valid).
    """
    for s in prange(inputs.shape[0]):
        xsw = inputs[s, MOIST] / 100.0
        if params[s, USE_FLOW] > 0.5:
            q_act = inputs[s, FLOW]
        else:
            q_act = 3600.0 * inputs[s, FLOW] * params[s, AREA]
        q_sd = (q_act * t0_k / (t0_k + inputs[s, TEMP])
                * (inputs[s, BARO] + inputs[s, STATIC]) / p0_pa * (1.0 - xsw))
        c_dry = inputs[s, CO2]
        if params[s, CO2_WET] > 0.5:
            c_dry = c_dry / (1.0 - xsw)
        rate = c_dry / 100.0 * rho_kg_m3 * q_sd
        out[s, OUT_FLOW_ACT] = q_act
        out[s, OUT_FLOW_SD] = q_sd
        out[s, OUT_CO2_DRY] = c_dry
        out[s, OUT_CO2_MG] = c_dry * rho_kg_m3 * 1e4
        out[s, OUT_RATE] = rate
        out[s, OUT_MASS] = rate * minute_h
        worst = 0
        for k in range(N_INPUTS):
            worst = max(worst, input_flags[s, k])
        out_flag[s] = worst


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel on tiny inputs."""
    vals = np.zeros((1, 2), np.float64)
    flags = np.zeros((1, 2), np.uint8)
    counts = np.ones(1, np.int64)
    m, lo, hi = np.empty(1), np.empty(1), np.empty(1)
    tag_minute_stats(vals, flags, counts, 1, m, lo, hi, np.empty(1, np.int64),
                     np.empty(1, np.uint8))
    cems_minute(np.ones((1, N_INPUTS)), np.zeros((1, N_INPUTS), np.uint8),
                np.ones((1, N_PARAMS)), 273.15, 101325.0, 1.964, 1 / 60,
                np.empty((1, N_OUT)), np.empty(1, np.uint8))
