"""A plain numpy reference of the minute kernels, written from DESIGN.md, to check them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from compute import kernels as k

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


def tag_minute_stats(values: F64, flags: U8, counts: I64, min_valid: int
                     ) -> tuple[F64, F64, F64, I64, U8]:
    cols = np.arange(values.shape[1])
    present = cols[None, :] < counts[:, None]
    valid = present & (flags == 0) & np.isfinite(values)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, values, 0.0).sum(axis=1) / n
    lo = np.where(valid, values, np.inf).min(axis=1)
    hi = np.where(valid, values, -np.inf).max(axis=1)
    mean[n == 0] = np.nan
    lo[n == 0] = np.nan
    hi[n == 0] = np.nan
    worst = np.where(present & ~valid, flags, 0).max(axis=1)
    flag = np.where(n >= min_valid, 0, np.where(worst > 0, worst, 3)).astype(np.uint8)
    return mean, lo, hi, n.astype(np.int64), flag


def gather(tag_mean: F64, tag_flag: U8, src_tag: I64, src_const: F64) -> tuple[F64, U8]:
    """Per source and input: the tag's minute mean and flag, or the constant with flag 0."""
    bound = src_tag >= 0
    idx = np.where(bound, src_tag, 0)
    if tag_mean.size == 0:
        return src_const.copy(), np.zeros(src_tag.shape, np.uint8)
    return (np.where(bound, tag_mean[idx], src_const),
            np.where(bound, tag_flag[idx], 0).astype(np.uint8))


def cems(v: F64, area: F64, t_c: F64, ba: F64, ps: F64, xsw: F64, co2: F64,
         wet: npt.NDArray[np.bool_], t0: float = 273.15, p0: float = 101325.0,
         rho: float = 1.964) -> dict[str, F64]:
    """DESIGN.md's CEMS formulas for a velocity input and measured values."""
    q_act = 3600.0 * v * area
    q_sd = q_act * t0 / (t0 + t_c) * (ba + ps) / p0 * (1 - xsw)
    c_d = np.where(wet, co2 / (1 - xsw), co2)
    g = c_d / 100 * rho * q_sd
    return {"q_act": q_act, "q_sd": q_sd, "c_dry": c_d, "mg": c_d * rho * 1e4, "rate": g,
            "mass": g / 60}


def cems_full(x: dict[str, F64], f: dict[str, U8], p: dict[str, F64], t0: float = 273.15,
              p0: float = 101325.0, rho: float = 1.964, minute_h: float = 1 / 60
              ) -> dict[str, F64]:
    """Every CEMS mode: `x` input means and `f` their flags, by name; `p` parameters.

    Inputs: flow, co2, temp, static, baro, moist (%), o2_dry, o2_wet (%). Parameters:
    area, co2_wet, flow_mode (0 velocity, 1 actual flow m³/h, 2 pitot Pd), kp, kv, md,
    moist_from_o2, o2_mode (0 none, 1 dry input, 2 wet input), fc_fd (0: no F-factor).
    Returns the results, the source flag and the substitution code (1 = F-factor).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        from_o2 = p["moist_from_o2"] > 0.5
        xsw = np.where(from_o2, 1 - x["o2_wet"] / x["o2_dry"], x["moist"] / 100)
        f_xsw = np.where(from_o2, np.maximum(f["o2_wet"], f["o2_dry"]), f["moist"])
        has_o2 = p["o2_mode"] > 0.5
        o2_from_wet = p["o2_mode"] > 1.5
        o2 = np.where(o2_from_wet, x["o2_wet"] / (1 - xsw),
                      np.where(has_o2, x["o2_dry"], np.nan))
        f_o2 = np.where(o2_from_wet, np.maximum(f["o2_wet"], f_xsw),
                        np.where(has_o2, f["o2_dry"], 0))
        # EPA Method 19: CO2d = 100·Fc/Fd·(20.9 − O2d)/20.9 when the CO2 minute is invalid.
        sub = has_o2 & (p["fc_fd"] > 0) & (f["co2"] != 0) & (f_o2 == 0)
        measured = np.where(p["co2_wet"] > 0.5, x["co2"] / (1 - xsw), x["co2"])
        c_d = np.where(sub, 100 * p["fc_fd"] * (20.9 - o2) / 20.9, measured)
        pitot = p["flow_mode"] > 1.5
        actual = (p["flow_mode"] > 0.5) & ~pitot
        # EPA Method 3 dry molar mass, Method 2 wet molar mass, ideal-gas density.
        md = np.where(has_o2, 0.44 * c_d + 0.32 * o2 + 0.28 * (100 - c_d - o2), p["md"])
        ms = md * (1 - xsw) + 18.0 * xsw
        rho_s = ms / 22.414 * t0 / (t0 + x["temp"]) * (x["baro"] + x["static"]) / p0
        pd = np.where(x["flow"] < 0, 0.0, x["flow"])
        v = np.where(pitot, p["kv"] * p["kp"] * np.sqrt(2 * pd / rho_s),
                     np.where(actual, np.nan, x["flow"]))
        q_act = np.where(actual, x["flow"], 3600 * v * p["area"])
        q_sd = q_act * t0 / (t0 + x["temp"]) * (x["baro"] + x["static"]) / p0 * (1 - xsw)
        g = c_d / 100 * rho * q_sd
    used = [f["flow"], f["temp"], f["static"], f["baro"], f_xsw,
            np.where(sub, 0, f["co2"]), np.where(sub | (pitot & has_o2), f_o2, 0)]
    flag = np.max(np.stack(used).astype(np.int64), axis=0)
    return {"q_act": q_act, "q_sd": q_sd, "c_dry": c_d, "mg": c_d * rho * 1e4, "rate": g,
            "mass": g * minute_h, "v": v, "xsw": xsw,
            "rho_s": np.where(pitot, rho_s, np.nan), "flag": flag.astype(np.uint8),
            "sub": sub.astype(np.uint8)}


INPUT_COLUMNS = {"flow": k.FLOW, "co2": k.CO2, "temp": k.TEMP, "static": k.STATIC,
                 "baro": k.BARO, "moist": k.MOIST, "o2_dry": k.O2_DRY, "o2_wet": k.O2_WET}
PARAM_COLUMNS = {"area": k.AREA, "co2_wet": k.CO2_WET, "flow_mode": k.FLOW_MODE, "kp": k.KP,
                 "kv": k.KV, "md": k.MD, "moist_from_o2": k.MOIST_MODE, "o2_mode": k.O2_MODE,
                 "fc_fd": k.FC_FD}


def cems_matrix(inputs: F64, flags: U8, params: F64, t0: float = 273.15, p0: float = 101325.0,
                rho: float = 1.964, minute_h: float = 1 / 60) -> dict[str, F64]:
    """`cems_full` on the kernels' input, flag and parameter matrices."""
    x = {name: inputs[:, c] for name, c in INPUT_COLUMNS.items()}
    f = {name: flags[:, c] for name, c in INPUT_COLUMNS.items()}
    p = {name: params[:, c] for name, c in PARAM_COLUMNS.items()}
    return cems_full(x, f, p, t0, p0, rho, minute_h)
