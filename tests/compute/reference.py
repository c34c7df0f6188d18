"""A plain numpy reference of the minute kernels, written from DESIGN.md, to check them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def tag_minute_stats(values: F64, flags: npt.NDArray[np.uint8], counts: npt.NDArray[np.int64],
                     min_valid: int) -> tuple[F64, F64, F64, npt.NDArray[np.int64],
                                              npt.NDArray[np.uint8]]:
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


def cems(v: F64, area: F64, t_c: F64, ba: F64, ps: F64, xsw: F64, co2: F64,
         wet: npt.NDArray[np.bool_], t0: float = 273.15, p0: float = 101325.0,
         rho: float = 1.964) -> dict[str, F64]:
    q_act = 3600.0 * v * area
    q_sd = q_act * t0 / (t0 + t_c) * (ba + ps) / p0 * (1 - xsw)
    c_d = np.where(wet, co2 / (1 - xsw), co2)
    g = c_d / 100 * rho * q_sd
    return {"q_act": q_act, "q_sd": q_sd, "c_dry": c_d, "mg": c_d * rho * 1e4, "rate": g,
            "mass": g / 60}
