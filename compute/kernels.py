"""numba kernels of the minute cycle: pure functions over numpy arrays, no I/O.

Flags are the integer values of server.records.DataFlag (0 = N, normal); a higher
integer is a flag of higher precedence.

Every kernel uses numpy's error model: a division by zero on bad field data gives
inf / NaN in that source's row (which is flagged anyway) instead of raising in the
middle of the minute cycle. Kernels release the GIL, so a caller may run them in a
worker thread without stalling the event loop.
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

# Columns of the CEMS input matrix (one row per source): each input's minute mean.
FLOW = 0  # velocity m/s, actual flow m³/h or pitot dynamic pressure Pa, per FLOW_MODE
CO2 = 1  # CO2 % (dry or wet per the CO2_WET param)
TEMP = 2  # flue-gas temperature °C
STATIC = 3  # static pressure Pa (gauge)
BARO = 4  # barometric pressure Pa
MOIST = 5  # moisture % vol (MOIST_MODE 0)
O2_DRY = 6  # O2 % dry
O2_WET = 7  # O2 % wet
N_INPUTS = 8

# Columns of the per-source parameter matrix.
AREA = 0  # duct area m²
CO2_WET = 1  # 1.0 when the CO2 analyser reads wet
FLOW_MODE = 2  # what the FLOW column holds: one of the FLOW_* values below
KP = 3  # pitot coefficient (FLOW_PITOT)
KV = 4  # velocity field coefficient (FLOW_PITOT)
MD = 5  # dry molar mass g/mol of the flue gas when there is no O2 (FLOW_PITOT)
MOIST_MODE = 6  # 0: moisture from MOIST; 1: Xsw = 1 − O2_WET/O2_DRY
O2_MODE = 7  # dry O2 from: 0 nowhere (no O2 input), 1 O2_DRY, 2 O2_WET/(1 − Xsw)
FC_FD = 8  # Fc/Fd of the fuel for CO2 from O2 (EPA Method 19); 0 disables it
N_PARAMS = 9

FLOW_VELOCITY = 0.0
FLOW_ACTUAL = 1.0
FLOW_PITOT = 2.0

# Columns of the CEMS output matrix.
OUT_FLOW_ACT = 0  # m³/h actual wet
OUT_FLOW_SD = 1  # m³/h standard dry
OUT_CO2_DRY = 2  # % dry
OUT_CO2_MG = 3  # mg/m³ standard dry
OUT_RATE = 4  # kg/h
OUT_MASS = 5  # kg in the minute
OUT_VELOCITY = 6  # m/s used for the flow (NaN when the flow is given as m³/h)
OUT_XSW = 7  # moisture fraction Xsw used
OUT_RHO_FLUE = 8  # actual flue-gas density kg/m³ (pitot sources only, else NaN)
N_OUT = 9

# Substitution rule of a source's minute (the `out_sub` array); 0 = measured values.
SUB_NONE = 0
SUB_F_FACTOR_O2 = 1  # CO2 from O2 by the fuel's F-factors
SUBSTITUTION_RULES = ("", "f_factor_o2")  # rule id by code

FLAG_B = 3  # communication failure: a tag with no sample at all in its minute

O2_AIR_PCT = 20.9  # O2 in dry ambient air, % (EPA Method 19)
MOLAR_VOLUME_L_MOL = 22.414  # ideal gas at 273.15 K, 101 325 Pa
M_CO2, M_O2, M_N2, M_H2O = 44.0, 32.0, 28.0, 18.0  # g/mol as in EPA Methods 2 and 3


@njit(cache=True, nogil=True)
def period_flag(n_valid: int, min_valid: int, worst: int) -> int:  # pragma: no cover
    """A period's flag: N with enough valid parts, else its worst flag, else B (no data)."""
    if n_valid >= min_valid:
        return 0
    if worst > 0:
        return worst
    return FLAG_B


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
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
        out_flag[i] = period_flag(n, min_valid, worst)


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def gather_inputs(tag_mean: F64, tag_flag: U8, src_tag: I64, src_const: F64,
                  inputs: F64, input_flags: U8) -> None:  # pragma: no cover - compiled
    """Fill the CEMS input matrix: input (s, c) is tag `src_tag[s, c]`, or the constant.

    A constant input (`src_tag` −1) takes `src_const[s, c]` with flag 0.
    """
    for s in prange(src_tag.shape[0]):
        for c in range(src_tag.shape[1]):
            t = src_tag[s, c]
            if t >= 0:
                inputs[s, c] = tag_mean[t]
                input_flags[s, c] = tag_flag[t]
            else:
                inputs[s, c] = src_const[s, c]
                input_flags[s, c] = 0


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def cems_minute(inputs: F64, input_flags: U8, params: F64, t0_k: float, p0_pa: float,
                rho_kg_m3: float, minute_h: float, out: F64, out_flag: U8,
                out_sub: U8) -> None:  # pragma: no cover - compiled
    """CEMS results per source from the minute means of its inputs (DESIGN.md formulas).

    Moisture: Xsw = MOIST/100, or from wet and dry O2 analysers Xsw = 1 − O2w/O2d
    (the wet reading is the dry one diluted by the water vapour).

    Dry O2 (for density and the F-factor): O2_DRY, or O2_WET/(1 − Xsw).

    CO2: C_d = CO2, or CO2/(1 − Xsw) when the analyser reads wet. When the CO2
    input's minute is invalid, the source has an F-factor (FC_FD > 0) and its dry
    O2 is valid, C_d = 100·Fc/Fd·(20.9 − O2d)/20.9 instead (US EPA Method 19: the
    F-factor relations E = C·Fd·20.9/(20.9 − %O2d) = C·Fc·100/%CO2d solved for
    %CO2d); `out_sub` gets SUB_F_FACTOR_O2 for that minute.

    Velocity: the FLOW input, or from a pitot's dynamic pressure Pd (US EPA Method 2;
    GB/T 16157 and HJ 75 use the same physics, HJ 75 adds the velocity field
    coefficient Kv):
      v   = Kv·Kp·sqrt(2·Pd/ρs)                        (m/s; Pd < 0 is taken as 0)
      ρs  = Ms/22.414 · T0/(T0+t) · (Ba+Ps)/P0          (kg/m³, actual wet flue gas)
      Ms  = Md·(1 − Xsw) + 18.0·Xsw                     (g/mol wet, EPA Method 2)
      Md  = 0.44·%CO2d + 0.32·%O2d + 0.28·(100 − %CO2d − %O2d)   (g/mol dry, EPA
            Method 3, N2 + CO counted as 28), or the MD param when there is no O2.

    Flows and mass: Q_act = 3600·v·A (or the FLOW input in m³/h);
    Q_sd = Q_act·T0/(T0+t)·(Ba+Ps)/P0·(1−Xsw); mg/m³ = C_d·ρ·1e4;
    G = C_d/100·ρ·Q_sd kg/h; minute mass = G·minute_h.

    The source's flag is the highest flag among the inputs its result used this
    minute (0 when all are valid): flow, temperature, pressures and the moisture
    inputs always; CO2 unless substituted; the O2 inputs when the density or the
    substitute used them. So an F-factor minute keeps flag N when everything it
    used is valid; `out_sub` says it is a substitute.
    """
    for s in prange(inputs.shape[0]):
        x = inputs[s]
        f = input_flags[s]
        p = params[s]
        if p[MOIST_MODE] > 0.5:
            xsw = 1.0 - x[O2_WET] / x[O2_DRY]
            f_xsw = max(f[O2_WET], f[O2_DRY])
        else:
            xsw = x[MOIST] / 100.0
            f_xsw = f[MOIST]
        has_o2 = True
        if p[O2_MODE] > 1.5:
            o2 = x[O2_WET] / (1.0 - xsw)
            f_o2 = max(f[O2_WET], f_xsw)
        elif p[O2_MODE] > 0.5:
            o2 = x[O2_DRY]
            f_o2 = f[O2_DRY]
        else:
            has_o2 = False
            o2 = math.nan
            f_o2 = 0
        worst = max(max(f[FLOW], f[TEMP]), max(max(f[STATIC], f[BARO]), f_xsw))
        o2_used = False
        sub = SUB_NONE
        if has_o2 and p[FC_FD] > 0.0 and f[CO2] != 0 and f_o2 == 0:
            c_dry = 100.0 * p[FC_FD] * (O2_AIR_PCT - o2) / O2_AIR_PCT
            sub = SUB_F_FACTOR_O2
            o2_used = True
        else:
            c_dry = x[CO2]
            if p[CO2_WET] > 0.5:
                c_dry = c_dry / (1.0 - xsw)
            worst = max(worst, f[CO2])
        t_c = x[TEMP]
        p_abs = x[BARO] + x[STATIC]
        rho_s = math.nan
        if p[FLOW_MODE] > 1.5:
            if has_o2:
                md = (M_CO2 / 100.0 * c_dry + M_O2 / 100.0 * o2
                      + M_N2 / 100.0 * (100.0 - c_dry - o2))
                o2_used = True
            else:
                md = p[MD]
            ms = md * (1.0 - xsw) + M_H2O * xsw
            rho_s = ms / MOLAR_VOLUME_L_MOL * t0_k / (t0_k + t_c) * p_abs / p0_pa
            pd = x[FLOW]
            if pd < 0.0:  # zero drift of a transmitter at standstill; NaN stays NaN
                pd = 0.0
            v = p[KV] * p[KP] * math.sqrt(2.0 * pd / rho_s)
            q_act = 3600.0 * v * p[AREA]
        elif p[FLOW_MODE] > 0.5:
            v = math.nan
            q_act = x[FLOW]
        else:
            v = x[FLOW]
            q_act = 3600.0 * v * p[AREA]
        if o2_used:
            worst = max(worst, f_o2)
        q_sd = q_act * t0_k / (t0_k + t_c) * p_abs / p0_pa * (1.0 - xsw)
        rate = c_dry / 100.0 * rho_kg_m3 * q_sd
        out[s, OUT_FLOW_ACT] = q_act
        out[s, OUT_FLOW_SD] = q_sd
        out[s, OUT_CO2_DRY] = c_dry
        out[s, OUT_CO2_MG] = c_dry * rho_kg_m3 * 1e4
        out[s, OUT_RATE] = rate
        out[s, OUT_MASS] = rate * minute_h
        out[s, OUT_VELOCITY] = v
        out[s, OUT_XSW] = xsw
        out[s, OUT_RHO_FLUE] = rho_s
        out_flag[s] = worst
        out_sub[s] = sub


@njit(cache=True, parallel=True, nogil=True)
def any_nonzero(values: F64, flags: U8, counts: I64, rows: I64,
                out: B1) -> None:  # pragma: no cover - compiled
    """Per entry of `rows`: whether a valid (flag 0, finite) sample of that row is non-zero.

    A status tag's minute, e.g. an analyser's calibration-in-progress signal
    (compute.minute flags such minutes C). Stops at the first such sample.
    """
    for j in prange(rows.shape[0]):
        r = rows[j]
        hit = False
        for i in range(counts[r]):
            v = values[r, i]
            if flags[r, i] == 0 and math.isfinite(v) and v != 0.0:
                hit = True
                break
        out[j] = hit


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel on tiny inputs.

    The argument types are those compute.minute passes, so the first real minute
    finds every signature already loaded.
    """
    vals = np.zeros((1, 2), np.float64)
    flags = np.zeros((1, 2), np.uint8)
    counts = np.ones(1, np.int64)
    m, lo, hi = np.empty(1), np.empty(1), np.empty(1)
    tflag = np.zeros(1, np.uint8)
    tag_minute_stats(vals, flags, counts, 1, m, lo, hi, np.empty(1, np.int64), tflag)
    any_nonzero(vals, flags, counts, np.zeros(1, np.int64), np.empty(1, np.bool_))
    inputs = np.empty((1, N_INPUTS))
    input_flags = np.empty((1, N_INPUTS), np.uint8)
    # numba types read-only arrays apart: the calculator freezes its per-source scales and
    # parameters, other callers pass writable ones; load both.
    for writeable in (True, False):
        scales = np.ones((1, N_INPUTS))
        params = np.ones((1, N_PARAMS))
        scales.flags.writeable = params.flags.writeable = writeable
        gather_inputs(m, tflag, np.full((1, N_INPUTS), -1, np.int64), scales, inputs,
                      input_flags)
        cems_minute(inputs, input_flags, params, 273.15, 101325.0, 1.964, 1 / 60,
                    np.empty((1, N_OUT)), np.empty(1, np.uint8), np.empty(1, np.uint8))
