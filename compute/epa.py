"""US-units mode: CO2 mass by US EPA 40 CFR part 75 appendix F (section 4).

Hourly CO2 mass emission rate E_h in short tons per hour from the hourly average CO2
concentration (%) and the hourly average stack flow in standard cubic feet per hour
(wet basis), K = 5.7e-7 short ton/scf/%CO2; quarter / year total = Σ E_h · t_h with
t_h the unit's operating time in the hour (h). Arrays or scalars in, float64 arrays
(0-d for scalars) out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

K_CO2_TON_SCF_PCT = 5.7e-7  # short ton CO2 per scf per % CO2
T_PER_SHORT_TON = 0.90718474  # metric t in a short ton (2000 lb × 0.45359237 kg)


def co2_rate_wet_ton_h(co2_wet_pct: npt.ArrayLike, flow_wet_scfh: npt.ArrayLike,
                       k: float = K_CO2_TON_SCF_PCT) -> F64:
    """E_h = K · C_h · Q_h, wet CO2 % and wet flow scfh → short ton/h."""
    c = np.asarray(co2_wet_pct, np.float64)
    q = np.asarray(flow_wet_scfh, np.float64)
    out: F64 = np.asarray(k * c * q, np.float64)
    return out


def co2_rate_dry_ton_h(co2_dry_pct: npt.ArrayLike, flow_wet_scfh: npt.ArrayLike,
                       h2o_pct: npt.ArrayLike, k: float = K_CO2_TON_SCF_PCT) -> F64:
    """E_h = K · C_hd · Q_h · (100 − %H2O)/100, dry CO2 % with wet flow → short ton/h."""
    c = np.asarray(co2_dry_pct, np.float64)
    q = np.asarray(flow_wet_scfh, np.float64)
    w = np.asarray(h2o_pct, np.float64)
    out: F64 = np.asarray(k * c * q * (100.0 - w) / 100.0, np.float64)
    return out


def co2_total_ton(rate_ton_h: npt.ArrayLike, operating_h: npt.ArrayLike) -> F64:
    """Quarterly or annual CO2 mass Σ E_h · t_h over the last axis, in short tons."""
    e = np.asarray(rate_ton_h, np.float64)
    t = np.asarray(operating_h, np.float64)
    out: F64 = np.asarray((e * t).sum(axis=-1), np.float64)
    return out


def short_ton_to_t(short_ton: npt.ArrayLike) -> F64:
    """Short tons to metric tonnes."""
    out: F64 = np.asarray(np.asarray(short_ton, np.float64) * T_PER_SHORT_TON, np.float64)
    return out
