"""Combined relative uncertainty of a result from the accuracy of the instruments entering it.

Convention (stated once, used by the instrument register, web/register.py):

- An instrument's accuracy class `a` (% of reading) is taken as the half-width of a
  uniform (rectangular) distribution of its error, so its relative standard uncertainty
  is u = a / √3 (GUM 4.3.7; JJF 1059.1-2012 §4.3.3.4).
- A CEMS CO2 mass is a product of powers of its inputs, G = C·ρ·3600·v·A·T0/(T0+t)·
  (Ba+Ps)/P0·(1−Xsw), so its relative uncertainty is the root-sum-square of the inputs'
  relative uncertainties, each times its sensitivity (the exponent): IPCC 2006 Vol. 1
  Ch. 3 eq. 3.1, the approach of the China MRV guidelines for enterprises (GB/T 32150,
  the sector guidelines' 不确定性 annex). Inputs are taken as independent.
- The instruments' errors are systematic (a calibration offset repeats every minute), so
  an hour, a day and a year of the same source carry the same relative uncertainty: the
  errors are fully correlated in time and do not average down. Sums of independent
  sources combine by IPCC eq. 3.2 (`sum_rel_uncertainty_pct`).
- The expanded uncertainty is k = 2 times the standard one (about 95 %, the confidence
  interval IPCC reports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

K_EXPANDED: Final = 2.0  # coverage factor of the expanded uncertainty (≈ 95 %)


def std_rel_from_accuracy_pct(accuracy_pct: float) -> float:
    """Relative standard uncertainty (%) of an accuracy class read as a uniform bound: a/√3."""
    return accuracy_pct / math.sqrt(3.0)


def product_rel_uncertainty_pct(terms: Sequence[tuple[float, float]]) -> float:
    """Relative standard uncertainty (%) of a product from (relative u %, sensitivity) terms.

    u_c = sqrt(Σ (c_i · u_i)²): IPCC 2006 Vol. 1 eq. 3.1 with the GUM's sensitivity
    coefficients (the exponent of each input in the product).
    """
    return math.sqrt(math.fsum((c * u) ** 2 for u, c in terms))


def sum_rel_uncertainty_pct(parts: Sequence[tuple[float, float]]) -> float:
    """Relative uncertainty (%) of a sum of independent (amount, relative u %) parts.

    IPCC 2006 Vol. 1 eq. 3.2: U = sqrt(Σ (U_i · x_i)²) / |Σ x_i|; NaN for a zero total.
    """
    total = math.fsum(x for x, _ in parts)
    if total == 0.0:
        return math.nan
    return math.sqrt(math.fsum((u * x) ** 2 for x, u in parts)) / abs(total)
