"""Greenhouse gases other than CO2, and CO2 equivalent by named, versioned GWP sets.
Pure functions and data, no I/O (imports only model).

CO2e = CO2 + Σ gas mass · GWP(gas) over the gases of a result (T/CSES 146 §3.1.1, §3.1.6;
the seven Kyoto gases CO2, CH4, N2O, HFCs, PFCs, SF6, NF3). A GWP set is one IPCC
assessment's 100-year values; the plant's configuration says which set is in force from
which date (compute/gasconfig.py), so a reporting year is accounted under the set its
rules name and every CO2e result records the set's id, like a factor version.

Shipped sets (100-year GWP, t CO2e per t of gas):
- SAR: IPCC Second Assessment Report (1995), WG I, Table 2.9 (as in the UNFCCC reporting
  guidelines until 2014): CH4 21, N2O 310. China's provincial GHG inventory guidelines
  (2011) and the 2013–2015 sector accounting and reporting guidelines (MRV) use them.
- AR4: Fourth Assessment Report (2007), WG I, chapter 2, Table 2.14: CH4 25, N2O 298.
- AR5: Fifth Assessment Report (2013), WG I, chapter 8, Table 8.A.1: CH4 28, N2O 265; fossil
  CH4 30 (the table's footnote: + the CO2 its oxidation makes).
- AR6: Sixth Assessment Report (2021), WG I, chapter 7, Table 7.15 / 7.SM.7: CH4 fossil 29.8,
  non-fossil 27.0, N2O 273 (the values of the GHG Protocol's GWP table, August 2024).

Methane has two entries. "CH4" is methane whose carbon is counted elsewhere or is not
fossil: combustion CH4 (the fuel's carbon is all in its CO2 already, the oxidation factor
aside), biogenic sources — AR6's non-fossil value. "CH4_fossil" is fugitive fossil methane
(coal mine, gas leaks), whose later oxidation to CO2 is counted in its GWP. Before AR5 the
reports give one value for both.

Combustion CH4 and N2O by the IPCC 2006 Guidelines vol. 2 ch. 2 (Tier 1, tables 2.2–2.5):
t gas = FC · NCV (GJ per unit of FC) · EF (kg gas per TJ) · 1e-6 — GJ → TJ is 1e-3 and
kg → t another 1e-3.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from model.errors import InvalidValueError
from model.times import as_utc

CH4 = "CH4"  # non-fossil / combustion methane (AR6 non-fossil)
CH4_FOSSIL = "CH4_fossil"  # fugitive fossil methane
N2O = "N2O"
BUILTIN_GASES = (CH4, CH4_FOSSIL, N2O)
DEFAULT_SET = "SAR"  # China's accounting guidelines' set

# 100-year GWPs of the shipped sets (sources in the module docstring).
GWP_SETS: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "SAR": MappingProxyType({CH4: 21.0, CH4_FOSSIL: 21.0, N2O: 310.0}),  # SAR Table 2.9
    "AR4": MappingProxyType({CH4: 25.0, CH4_FOSSIL: 25.0, N2O: 298.0}),  # AR4 Table 2.14
    "AR5": MappingProxyType({CH4: 28.0, CH4_FOSSIL: 30.0, N2O: 265.0}),  # AR5 Table 8.A.1
    "AR6": MappingProxyType({CH4: 27.0, CH4_FOSSIL: 29.8, N2O: 273.0}),  # AR6 Table 7.15
})


def combustion_gas_t(quantity: float, ncv_gj_per_unit: float, ef_kg_tj: float) -> float:
    """t of CH4 or N2O from burning `quantity` of fuel: FC · NCV · EF · 1e-6 (IPCC 2006)."""
    return quantity * ncv_gj_per_unit * ef_kg_tj * 1e-6


@dataclass(frozen=True, slots=True)
class GwpSet:
    """One named set of 100-year GWPs (t CO2e per t of gas), e.g. AR5."""

    id: str
    gwp: Mapping[str, float] = field(hash=False)  # gas → GWP; CO2 is 1 and not listed

    def of(self, gas: str) -> float:
        """The GWP of `gas` in this set (InvalidValueError naming the set and the gas)."""
        try:
            return self.gwp[gas]
        except KeyError:
            raise InvalidValueError(f"GWP set {self.id!r} has no GWP for gas {gas!r} "
                                    f"(it has: {', '.join(self.gwp)})") from None

    def co2e_t(self, co2_t: float, gases_t: Mapping[str, float]) -> float:
        """CO2 + Σ gas · GWP (t CO2e); the gas terms summed exactly, then added to CO2."""
        return co2_t + self.gas_co2e_t(gases_t)

    def gas_co2e_t(self, gases_t: Mapping[str, float]) -> float:
        """Σ gas · GWP (t CO2e) of the gases other than CO2; NaN when one mass is NaN."""
        terms = [t * self.of(g) for g, t in gases_t.items()]
        if not all(map(math.isfinite, terms)):
            return math.nan
        return math.fsum(terms)


def gwp_set(set_id: str, extra: Mapping[str, Mapping[str, float]] | None = None) -> GwpSet:
    """The shipped set `set_id` with the configured gases' GWPs of that set added.

    `extra`: gas → {set id → GWP} (e.g. SF6 → {AR5: 23500}); a gas without a value for
    this set is left out (an error only when a result has that gas).
    """
    try:
        base = dict(GWP_SETS[set_id])
    except KeyError:
        raise InvalidValueError(f"unknown GWP set {set_id!r} (known: {', '.join(GWP_SETS)})"
                                ) from None
    for gas, by_set in (extra or {}).items():
        if gas in base or gas == "CO2":
            raise InvalidValueError(f"gas {gas!r} is built in; its GWPs are not configurable")
        if set_id in by_set:
            v = float(by_set[set_id])
            if not (math.isfinite(v) and v > 0):
                raise InvalidValueError(f"gas {gas!r}: GWP {set_id} = {v!r} must be finite "
                                        "and > 0")
            base[gas] = v
    return GwpSet(set_id, MappingProxyType(base))


@dataclass(frozen=True, slots=True)
class GwpVersion:
    """A GWP set in force from `effective_from` (UTC, inclusive) on."""

    gwp: GwpSet
    effective_from: datetime | None  # None: in force from the beginning

    def __post_init__(self) -> None:
        if self.effective_from is not None:
            object.__setattr__(self, "effective_from",
                               as_utc(self.effective_from,
                                      f"GWP set {self.gwp.id!r}: effective_from"))


class GwpTable:
    """Which GWP set is in force when: the latest version with effective_from ≤ t."""

    def __init__(self, versions: Iterable[GwpVersion]) -> None:
        vs = list(versions)
        if not vs:
            raise InvalidValueError("a GWP table needs at least one GWP set")
        first = [v for v in vs if v.effective_from is None]
        if len(first) > 1:
            raise InvalidValueError("only one GWP set can be in force from the beginning")
        dated = sorted((v for v in vs if v.effective_from is not None),
                       key=lambda v: v.effective_from or datetime.min)
        for a, b in itertools.pairwise(dated):
            if a.effective_from == b.effective_from:
                raise InvalidValueError(f"GWP sets {a.gwp.id!r} and {b.gwp.id!r} share "
                                        f"effective_from {b.effective_from}")
        self._first = first[0] if first else None
        self._dated = tuple(dated)

    @property
    def versions(self) -> tuple[GwpVersion, ...]:
        """Every version, the undated one first, then by effective_from."""
        return ((self._first,) if self._first else ()) + self._dated

    def at(self, t: datetime) -> GwpSet | None:
        """The set in force at `t`; None before the first dated one when none is undated."""
        t = as_utc(t, "GWP set time")
        found = self._first
        for v in self._dated:
            assert v.effective_from is not None
            if v.effective_from > t:
                break
            found = v
        return found.gwp if found is not None else None


def default_table() -> GwpTable:
    """The table of a plant that configures nothing: DEFAULT_SET from the beginning."""
    return GwpTable([GwpVersion(gwp_set(DEFAULT_SET), None)])
