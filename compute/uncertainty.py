"""Combined relative uncertainty of a result from the accuracy of the instruments entering it.

Convention (stated once, used by the instrument register web/register.py, the totals of
GET /api/v1/uncertainty web/uncertainty.py and OPC UA server/opcua/uncertainty.py):

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
- Sums of sources (a unit's, the site's total of an hour, a day, a year to date):
  `total_uncertainty`. Eq. 3.2 holds for independent sources; two sources that read one
  instrument (a shared barometer) have errors that are the same error, so the total is
  combined per instrument instead: u(ΣG)² = Σ_instruments (Σ_sources c·u·G)². With no
  shared instrument this is eq. 3.2 of the sources' own figures. A source without data
  for the period is left out (and named); one with a mass and an input whose accuracy
  is not known makes the total's uncertainty unknown.
- A substituted hour counts with the source's instrument figure. That is a simplification:
  a substitute from earlier hours carries those hours' instrument errors, but one by the
  factor method (compute/substitute.py) has its own uncertainty, which nothing configures.
- The expanded uncertainty is k = 2 times the standard one (about 95 %, the confidence
  interval IPCC reports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from compute.config import CalculationConfig, Input, SourceConfig

K_EXPANDED: Final = 2.0  # coverage factor of the expanded uncertainty (≈ 95 %)

# (input name, sensitivity) of a CEMS source's inputs, in the order the register lists them.
# Sensitivity = the input's exponent in G = C·ρ·Q_sd (web/register.py says why the five
# after static_pa are upper bounds).
SENSITIVITY: Final = (("co2_pct", 1.0), ("velocity_m_s", 1.0), ("flow_act_m3_h", 1.0),
                      ("dynamic_pressure_pa", 0.5), ("temp_c", 1.0), ("static_pa", 1.0),
                      ("baro_pa", 1.0), ("moisture_pct", 1.0), ("o2_wet_pct", 1.0),
                      ("o2_dry_pct", 1.0))


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


def source_inputs(src: SourceConfig) -> list[tuple[str, Input, float]]:
    """(input name, input, sensitivity) of every input entering the source's CO2 mass."""
    inputs = src.inputs
    out: list[tuple[str, Input, float]] = []
    for name, c in SENSITIVITY:
        inp = getattr(inputs, name)
        if not isinstance(inp, Input):
            continue
        if name == "moisture_pct" and inputs.co2_basis == "wet":
            continue  # C_w/(1−Xsw) · Q·(1−Xsw): the moisture cancels
        if name.startswith("o2_") and (inputs.moisture_pct is not None
                                       or inputs.co2_basis == "wet"):
            continue  # the O2s then enter only the flue-gas density (pitot), not G
        out.append((name, inp, c))
    return out


# (instrument tag, sensitivity × its relative standard uncertainty %) of one source;
# None: an input tag has no known accuracy.
Components = tuple[tuple[str, float], ...] | None


def source_components(src: SourceConfig, accuracy_pct: Mapping[str, float | None],
                      ) -> Components:
    """Each instrument's share c·u (%) of the source's CO2 relative uncertainty.

    `accuracy_pct`: tag → accuracy class (% of reading), None (or absent) when the tag has
    no instrument registered. A constant input adds nothing. A tag entering twice adds
    its sensitivities (one error, exponents add).
    """
    shares: dict[str, float] = {}
    for _name, inp, c in source_inputs(src):
        if inp.tag is None:
            continue
        a = accuracy_pct.get(inp.tag)
        if a is None:
            return None
        shares[inp.tag] = shares.get(inp.tag, 0.0) + c * std_rel_from_accuracy_pct(a)
    return tuple(shares.items())


def components_rel_pct(components: Components) -> float | None:
    """The relative standard uncertainty (%) of one source from its components (eq. 3.1)."""
    if components is None:
        return None
    return product_rel_uncertainty_pct([(u, 1.0) for _tag, u in components])


def plant_components(cfg: CalculationConfig, accuracy_pct: Mapping[str, float | None],
                     ) -> dict[str, tuple[str, Components]]:
    """Source id → (its unit id, its components), for every configured source."""
    return {s.id: (u.id, source_components(s, accuracy_pct)) for u, s in cfg.sources()}


@dataclass(frozen=True, slots=True)
class SourceMass:
    """One source's CO2 mass of a period and the instruments' shares of its uncertainty."""

    source: str
    unit: str
    co2_t: float  # NaN: no data for the period
    components: Components  # None: not known (an input tag without an instrument)

    @property
    def rel_pct(self) -> float | None:
        """The source's relative standard uncertainty (%, k = 1); None when unknown."""
        return components_rel_pct(self.components)


@dataclass(frozen=True, slots=True)
class TotalUncertainty:
    """The uncertainty of a sum of sources' CO2 masses (a unit's, the site's) for a period.

    `co2_t` sums the sources with data (NaN when none has). `rel_pct` is the relative
    standard uncertainty (k = 1, %); None when a source with a mass other than zero has no
    known uncertainty, when no source has data, or when the total is zero (a relative
    figure of nothing). `expanded_t` is the absolute expanded uncertainty (k = 2) in t;
    None when unknown or without data.
    """

    co2_t: float
    rel_pct: float | None
    rel_expanded_pct: float | None
    expanded_t: float | None
    no_data: tuple[str, ...]  # sources left out: NaN mass
    unknown: tuple[str, ...]  # sources with a mass but no known uncertainty


def total_uncertainty(parts: Sequence[SourceMass]) -> TotalUncertainty:
    """The uncertainty of the CO2 total of `parts`, combined per instrument (module doc).

    A source without data (NaN mass) is left out and named in `no_data`; one with a mass
    other than zero and an unknown uncertainty makes the total's unknown (named in
    `unknown`); one of zero mass adds nothing, known or not.
    """
    no_data: list[str] = []
    unknown: list[str] = []
    masses_t: list[float] = []
    # Per instrument, the absolute standard uncertainty it causes in the total (t): its
    # errors in every source that reads it are one error, so they add linearly.
    by_tag: dict[str, float] = {}
    get = by_tag.get
    for p in parts:  # one pass: thousands of sources at every closed hour
        x_t = p.co2_t
        if math.isnan(x_t):
            no_data.append(p.source)
            continue
        masses_t.append(x_t)
        if p.components is None:
            if x_t != 0.0:
                unknown.append(p.source)
            continue
        x_t /= 100.0
        for tag, share_pct in p.components:
            by_tag[tag] = get(tag, 0.0) + share_pct * x_t
    if not masses_t:
        return TotalUncertainty(math.nan, None, None, None, tuple(no_data), tuple(unknown))
    total_t = math.fsum(masses_t)
    if unknown:
        return TotalUncertainty(total_t, None, None, None, tuple(no_data), tuple(unknown))
    std_t = math.sqrt(math.fsum(v * v for v in by_tag.values()))
    expanded_t = K_EXPANDED * std_t
    if total_t == 0.0:
        return TotalUncertainty(total_t, None, None, expanded_t, tuple(no_data), ())
    rel_pct = 100.0 * std_t / abs(total_t)
    return TotalUncertainty(total_t, rel_pct, K_EXPANDED * rel_pct, expanded_t,
                            tuple(no_data), ())


def unit_site_uncertainty(parts: Sequence[SourceMass], units: Sequence[str] = (),
                          ) -> tuple[dict[str, TotalUncertainty], TotalUncertainty]:
    """Per unit and for the whole site, the uncertainty of the sources' CO2 total.

    `units` lists units in the order wanted, also those without a source in `parts`
    (their total is NaN, without data); units only in `parts` follow in order of
    appearance. The site combines every part at once (not the units' figures), so an
    instrument shared across units counts once.
    """
    by_unit: dict[str, list[SourceMass]] = {u: [] for u in units}
    for p in parts:
        by_unit.setdefault(p.unit, []).append(p)
    return ({u: total_uncertainty(ps) for u, ps in by_unit.items()},
            total_uncertainty(parts))
