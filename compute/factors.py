"""Emission-factor method (China MRV guidelines): fuels, purchased electricity and heat,
process emissions, with dated factor versions. Pure functions, no I/O.

Formulas (DESIGN.md "Emission-factor method"), all results in t CO2:
- fuel:            E = FC · NCV · CC · OF · 44/12
- measured carbon: E = FC · C_ar · OF · 44/12
- electricity:     E = MWh · EF_grid;  heat: E = GJ · EF_heat;  process: E = quantity · EF
- carbon balance (compute.factors.carbon_balance_co2_t): E = (Σ Q_in · C_in − Σ Q_out · C_out)
  · 44/12, as signed carbon streams: an input + Q · C · 44/12, an output − Q · C · 44/12
- carbonate oxides: E = Q · ((CaO − CaO_raw) · 44/56.08 + (MgO − MgO_raw) · 44/40.30)
- exported electricity / heat: E = − MWh · EF / − GJ · EF (net purchase = purchased − exported)
- green electricity (bought with certificates or over a dedicated line): E = MWh · EF_green,
  kept apart from the grid purchase; EF_green is 0 where the rules in force count it
  zero-emission, else the grid factor: a change of rule is a new factor version

Outputs and exports give a negative t CO2 (their quantity stays ≥ 0): a unit's
factor-method total is then the plain sum of its streams.

FC is in t (solid / liquid fuels) or 10⁴ m³ (gaseous fuels); NCV and C_ar are then per
t or per 10⁴ m³ — the factor names carry which (`ncv_gj_t` / `ncv_gj_1e4m3`), so a gas NCV
can never be applied to a quantity in t. Products are evaluated left to right exactly as
written above, as a verifier's spreadsheet would.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt
from numba import njit

from compute.gases import combustion_gas_t
from model.errors import FactorVersionNotFound, InvalidValueError
from model.times import as_utc

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

Method = Literal["ncv_cc_of", "measured_carbon", "electricity", "heat", "process",
                 "carbon_input", "carbon_output", "carbonate_oxides", "electricity_export",
                 "heat_export", "ghg", "electricity_green"]
QuantityUnit = Literal["t", "1e4m3", "MWh", "GJ"]

EF_GRID_TCO2_MWH = 0.5703  # 2022 national grid average, MEE
EF_HEAT_TCO2_GJ = 0.11  # purchased heat default
CO2_PER_C = 44.0 / 12.0  # t CO2 per t C, as the guidelines write it
# Molar masses (g/mol) of the carbonate method: CO2 44 (as in 44/12), CaO 56.08, MgO 40.30.
# CaCO3 → CaO + CO2: 44/56.08 t CO2 per t CaO; MgCO3 → MgO + CO2: 44/40.30 per t MgO.
M_CO2_G_MOL = 44.0
M_CAO_G_MOL = 56.08
M_MGO_G_MOL = 40.30

# Factor names a version may hold, with their units.
FACTOR_UNITS: Mapping[str, str] = MappingProxyType({
    "ncv_gj_t": "GJ/t",
    "ncv_gj_1e4m3": "GJ/10⁴m³",
    "cc_tc_gj": "tC/GJ",
    "of": "fraction",
    "c_ar_tc_t": "tC/t",
    "c_ar_tc_1e4m3": "tC/10⁴m³",
    "ef_tco2_mwh": "t CO2/MWh",
    "ef_green_tco2_mwh": "t CO2/MWh",  # green electricity: may be 0 (the rules decide)
    "ef_tco2_gj": "t CO2/GJ",
    "ef_tco2_t": "t CO2/t",
    "c_tc_t": "tC/t",  # carbon content of a carbon-balance material (lab entry)
    "cao_fraction": "fraction",  # CaO mass fraction of clinker / lime
    "mgo_fraction": "fraction",  # MgO mass fraction of clinker / lime
    "cao_raw_fraction": "fraction",  # CaO of the product not from carbonates (default 0)
    "mgo_raw_fraction": "fraction",  # MgO of the product not from carbonates (default 0)
    # Combustion CH4 / N2O of a fuel (IPCC 2006 vol. 2 tables 2.2–2.5, kg per TJ of NCV
    # energy; optional, compute.gases.combustion_gas_t), and a ghg stream's t of its gas
    # per t of quantity (1 for a gas measured itself).
    "ef_ch4_kg_tj": "kg CH4/TJ",
    "ef_n2o_kg_tj": "kg N2O/TJ",
    "ef_t_gas_t": "t gas/t",
})
# Optional combustion-gas factors of a fuel version: gas → factor name.
GAS_FACTORS: Mapping[str, str] = MappingProxyType({"CH4": "ef_ch4_kg_tj",
                                                    "N2O": "ef_n2o_kg_tj"})
# The NCV a fuel's combustion gases need, by the unit of its quantity.
NCV_FACTOR: Mapping[str, str] = MappingProxyType({"t": "ncv_gj_t", "1e4m3": "ncv_gj_1e4m3"})
# Fractions that may be 0 (in [0, 1]); c_tc_t lies in (0, 1] (a t of material holds ≤ 1 t C).
_FRACTIONS = frozenset({"cao_fraction", "mgo_fraction", "cao_raw_fraction",
                        "mgo_raw_fraction"})

# Factors each (method, quantity unit) uses, in the order the formula takes them; a
# version may leave out those of FACTOR_DEFAULTS (then that value is used).
REQUIRED_FACTORS: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType({
    ("ncv_cc_of", "t"): ("ncv_gj_t", "cc_tc_gj", "of"),
    ("ncv_cc_of", "1e4m3"): ("ncv_gj_1e4m3", "cc_tc_gj", "of"),
    ("measured_carbon", "t"): ("c_ar_tc_t", "of"),
    ("measured_carbon", "1e4m3"): ("c_ar_tc_1e4m3", "of"),
    ("electricity", "MWh"): ("ef_tco2_mwh",),
    ("heat", "GJ"): ("ef_tco2_gj",),
    ("process", "t"): ("ef_tco2_t",),
    ("carbon_input", "t"): ("c_tc_t",),
    ("carbon_output", "t"): ("c_tc_t",),
    ("carbonate_oxides", "t"): ("cao_fraction", "cao_raw_fraction", "mgo_fraction",
                                "mgo_raw_fraction"),
    ("electricity_export", "MWh"): ("ef_tco2_mwh",),
    ("heat_export", "GJ"): ("ef_tco2_gj",),
    ("electricity_green", "MWh"): ("ef_green_tco2_mwh",),
    ("ghg", "t"): ("ef_t_gas_t",),
})
# Each method's formula over the factor names, as a verifier would type it (recalc rows).
FORMULA_TEXT: Mapping[str, str] = MappingProxyType({
    "ncv_cc_of": "quantity*ncv*cc_tc_gj*of*44/12",
    "measured_carbon": "quantity*c_ar*of*44/12",
    "electricity": "quantity*ef_tco2_mwh",
    "heat": "quantity*ef_tco2_gj",
    "process": "quantity*ef_tco2_t",
    "carbon_input": "quantity*c_tc_t*44/12",
    "carbon_output": "-quantity*c_tc_t*44/12",
    "carbonate_oxides": "quantity*((cao_fraction-cao_raw_fraction)*44/56.08"
                        "+(mgo_fraction-mgo_raw_fraction)*44/40.30)",
    "electricity_export": "-quantity*ef_tco2_mwh",
    "heat_export": "-quantity*ef_tco2_gj",
    "electricity_green": "quantity*ef_green_tco2_mwh",
    "ghg": "0 (gas_t=quantity*ef_t_gas_t)",
})
# Optional factors: the CaO / MgO of clinker or lime not from carbonates is often negligible.
FACTOR_DEFAULTS: Mapping[str, float] = MappingProxyType({
    "cao_raw_fraction": 0.0,
    "mgo_raw_fraction": 0.0,
})


def _where(stream: str | None, version: str | None = None) -> str:
    text = f"stream {stream!r}" if stream else "unnamed stream"
    return f"{text}, factor version {version!r}" if version else text


def check_factor(name: str, value: float, *, stream: str | None = None,
                 version: str | None = None) -> float:
    """Return `value` as a float if it is a valid factor `name`, else raise ValueError.

    OF and a carbon content c_tc_t must lie in (0, 1], the CaO / MgO fractions in [0, 1];
    every other factor (NCV, CC, C_ar, EF) must be finite and > 0.
    """
    v = float(value)
    if name == "of":
        if not (0.0 < v <= 1.0):
            raise InvalidValueError(f"{_where(stream, version)}: OF (of) = {value!r} "
                                    "is outside (0, 1]")
    elif name == "c_tc_t":
        if not (0.0 < v <= 1.0):
            raise InvalidValueError(f"{_where(stream, version)}: factor c_tc_t = {value!r} "
                                    "is outside (0, 1]")
    elif name == "ef_green_tco2_mwh":
        if not (math.isfinite(v) and v >= 0.0):
            raise InvalidValueError(f"{_where(stream, version)}: factor {name} = {value!r} "
                                    "must be finite and >= 0")
    elif name in _FRACTIONS:
        if not (0.0 <= v <= 1.0):
            raise InvalidValueError(f"{_where(stream, version)}: factor {name} = {value!r} "
                                    "is outside [0, 1]")
    elif not (math.isfinite(v) and v > 0.0):
        raise InvalidValueError(f"{_where(stream, version)}: factor {name} = {value!r} "
                                f"must be finite and > 0")
    return v


def check_quantity(name: str, value: float, *, stream: str | None = None) -> float:
    """Return `value` as a float if it is a finite, non-negative quantity, else raise ValueError."""
    v = float(value)
    if not (math.isfinite(v) and v >= 0.0):
        raise InvalidValueError(f"{_where(stream)}: quantity {name} = {value!r} "
                                f"must be finite and >= 0")
    return v


def fuel_co2_t(fc: float, ncv_gj_per_unit: float, cc_tc_gj: float, of: float, *,
               stream: str | None = None) -> float:
    """t CO2 of a fuel: FC · NCV · CC · OF · 44/12 (FC in t or 10⁴ m³, NCV per the same unit)."""
    fc = check_quantity("fc", fc, stream=stream)
    ncv = check_factor("ncv", ncv_gj_per_unit, stream=stream)
    cc = check_factor("cc_tc_gj", cc_tc_gj, stream=stream)
    of = check_factor("of", of, stream=stream)
    return fc * ncv * cc * of * 44.0 / 12.0


def measured_carbon_co2_t(fc: float, c_ar_tc_per_unit: float, of: float, *,
                          stream: str | None = None) -> float:
    """t CO2 of a fuel with measured carbon content: FC · C_ar · OF · 44/12."""
    fc = check_quantity("fc", fc, stream=stream)
    c_ar = check_factor("c_ar", c_ar_tc_per_unit, stream=stream)
    of = check_factor("of", of, stream=stream)
    return fc * c_ar * of * 44.0 / 12.0


def electricity_co2_t(mwh: float, ef_tco2_mwh: float = EF_GRID_TCO2_MWH, *,
                      stream: str | None = None) -> float:
    """t CO2 of purchased electricity: MWh · EF_grid (default 0.5703 t/MWh)."""
    return (check_quantity("mwh", mwh, stream=stream)
            * check_factor("ef_tco2_mwh", ef_tco2_mwh, stream=stream))


def heat_co2_t(gj: float, ef_tco2_gj: float = EF_HEAT_TCO2_GJ, *,
               stream: str | None = None) -> float:
    """t CO2 of purchased heat: GJ · EF_heat (default 0.11 t/GJ)."""
    return (check_quantity("gj", gj, stream=stream)
            * check_factor("ef_tco2_gj", ef_tco2_gj, stream=stream))


def process_co2_t(quantity_t: float, ef_tco2_t: float, *, stream: str | None = None) -> float:
    """t CO2 of a process emission: quantity · EF."""
    return (check_quantity("quantity_t", quantity_t, stream=stream)
            * check_factor("ef_tco2_t", ef_tco2_t, stream=stream))


def carbon_input_co2_t(quantity_t: float, c_tc_t: float, *, stream: str | None = None) -> float:
    """t CO2 of the carbon a material brings into a carbon balance: + Q · C · 44/12.

    China's GHG accounting guidelines for iron and steel producers (carbon balance of
    the process): E = (Σ Q_in · C_in − Σ Q_out · C_out) · 44/12; Q in t, C in t C/t.
    """
    return (check_quantity("quantity_t", quantity_t, stream=stream)
            * check_factor("c_tc_t", c_tc_t, stream=stream) * 44.0 / 12.0)


def carbon_output_co2_t(quantity_t: float, c_tc_t: float, *, stream: str | None = None) -> float:
    """t CO2 of the carbon a product or by-product takes out of a carbon balance: − Q·C·44/12.

    The output side of the steel guidelines' E = (Σ Q_in · C_in − Σ Q_out · C_out) · 44/12:
    negative, so the balance is the sum of its input and output streams.
    """
    return _negated(check_quantity("quantity_t", quantity_t, stream=stream)
                    * check_factor("c_tc_t", c_tc_t, stream=stream) * 44.0 / 12.0)


def _negated(x: float) -> float:
    """−x, but +0.0 for 0: SQLite keeps no sign of zero, so an hour without any export
    stored 0.0 where its recalculation gave −0.0, and the two compared unequal."""
    return 0.0 - x


def carbon_balance_co2_t(inputs: Iterable[tuple[float, float]],
                         outputs: Iterable[tuple[float, float]], *,
                         stream: str | None = None) -> float:
    """t CO2 of a process by carbon balance: (Σ Q_in · C_in − Σ Q_out · C_out) · 44/12.

    `inputs` and `outputs` are (quantity t, carbon content t C/t) pairs (steel guidelines'
    carbon balance; the same form in the cement and lime guidelines' mass balance). The
    carbon sums are exact (math.fsum). Negative when the outputs hold more carbon.
    """
    c_in = [check_quantity("quantity_t", q, stream=stream) * check_factor("c_tc_t", c,
                                                                           stream=stream)
            for q, c in inputs]
    c_out = [check_quantity("quantity_t", q, stream=stream) * check_factor("c_tc_t", c,
                                                                            stream=stream)
             for q, c in outputs]
    return (math.fsum(c_in) - math.fsum(c_out)) * 44.0 / 12.0


def carbonate_oxides_co2_t(quantity_t: float, cao_fraction: float, cao_raw_fraction: float,
                           mgo_fraction: float, mgo_raw_fraction: float, *,
                           stream: str | None = None) -> float:
    """t CO2 of carbonate decomposition from the CaO / MgO content of clinker or lime.

    China's GHG accounting guidelines for cement (clinker) and lime producers:
    E = Q · ((CaO − CaO_raw) · 44/56.08 + (MgO − MgO_raw) · 44/40.30), Q in t of product,
    CaO / MgO its mass fractions, CaO_raw / MgO_raw the part of them in the raw meal not
    from carbonates (e.g. from slag or fly ash). Molar masses: CO2 44, CaO 56.08,
    MgO 40.30 g/mol (the guidelines round to 44/56 and 44/40).
    """
    q = check_quantity("quantity_t", quantity_t, stream=stream)
    cao = check_factor("cao_fraction", cao_fraction, stream=stream)
    cao_raw = check_factor("cao_raw_fraction", cao_raw_fraction, stream=stream)
    mgo = check_factor("mgo_fraction", mgo_fraction, stream=stream)
    mgo_raw = check_factor("mgo_raw_fraction", mgo_raw_fraction, stream=stream)
    if cao_raw > cao or mgo_raw > mgo:
        raise InvalidValueError(f"{_where(stream)}: the non-carbonate part exceeds the "
                                f"content (cao_raw_fraction {cao_raw!r} > cao_fraction {cao!r} "
                                f"or mgo_raw_fraction {mgo_raw!r} > mgo_fraction {mgo!r})")
    if cao + mgo > 1.0:
        raise InvalidValueError(f"{_where(stream)}: cao_fraction {cao!r} + mgo_fraction "
                                f"{mgo!r} exceeds 1")
    return q * ((cao - cao_raw) * M_CO2_G_MOL / M_CAO_G_MOL
                + (mgo - mgo_raw) * M_CO2_G_MOL / M_MGO_G_MOL)


def electricity_export_co2_t(mwh: float, ef_tco2_mwh: float = EF_GRID_TCO2_MWH, *,
                             stream: str | None = None) -> float:
    """t CO2 of exported electricity: − MWh · EF_grid (net purchase = purchased − exported).

    China's GHG accounting guidelines (steel, cement, lime and the power-grid-connected
    sectors): E_electricity = (purchased − exported) MWh · EF_grid.
    """
    return _negated(electricity_co2_t(mwh, ef_tco2_mwh, stream=stream))


def heat_export_co2_t(gj: float, ef_tco2_gj: float = EF_HEAT_TCO2_GJ, *,
                      stream: str | None = None) -> float:
    """t CO2 of exported heat: − GJ · EF_heat (net purchase = purchased − exported).

    China's GHG accounting guidelines: E_heat = (purchased − exported) GJ · EF_heat.
    """
    return _negated(heat_co2_t(gj, ef_tco2_gj, stream=stream))


def green_electricity_co2_t(mwh: float, ef_green_tco2_mwh: float, *,
                            stream: str | None = None) -> float:
    """t CO2 of green electricity bought: MWh · EF_green, kept apart from the grid purchase.

    Where the rules in force let green electricity (with certificates, or over a direct
    line from a renewable plant) count as zero-emission, EF_green is 0; where they do
    not, it is the grid factor. Either way the MWh stay in a stream of their own.
    """
    return (check_quantity("mwh", mwh, stream=stream)
            * check_factor("ef_green_tco2_mwh", ef_green_tco2_mwh, stream=stream))


@dataclass(frozen=True, slots=True)
class FactorVersion:
    """One dated set of factors of one stream, in force from `effective_from` (UTC, inclusive)."""

    id: str
    stream: str
    effective_from: datetime
    values: Mapping[str, float] = field(hash=False)  # factor name (FACTOR_UNITS) → value
    source: str  # document / lab report reference

    def __post_init__(self) -> None:
        if not self.id or not self.stream:
            raise InvalidValueError(f"factor version {self.id!r} of stream {self.stream!r}: "
                                    "id and stream must not be empty")
        object.__setattr__(self, "effective_from",
                           as_utc(self.effective_from,
                                  f"{_where(self.stream, self.id)}: effective_from"))
        checked: dict[str, float] = {}
        for name, value in self.values.items():
            if name not in FACTOR_UNITS:
                raise InvalidValueError(f"{_where(self.stream, self.id)}: unknown factor {name!r} "
                                        f"(known: {', '.join(FACTOR_UNITS)})")
            checked[name] = check_factor(name, value, stream=self.stream, version=self.id)
        object.__setattr__(self, "values", MappingProxyType(checked))

    def factors(self, method: Method, quantity_unit: QuantityUnit) -> tuple[float, ...]:
        """The factors `method` needs for a quantity in `quantity_unit`, in formula order."""
        names = required_factors(method, quantity_unit, stream=self.stream)
        missing = [n for n in names if n not in self.values and n not in FACTOR_DEFAULTS]
        if missing:
            raise InvalidValueError(f"{_where(self.stream, self.id)}: method {method} with "
                                    f"quantity in {quantity_unit} needs factor(s) "
                                    f"{', '.join(missing)}")
        return tuple(self.values.get(n, FACTOR_DEFAULTS.get(n, math.nan)) for n in names)


def required_factors(method: Method, quantity_unit: QuantityUnit, *,
                     stream: str | None = None) -> tuple[str, ...]:
    """Names of the factors `method` needs for a quantity in `quantity_unit`."""
    try:
        return REQUIRED_FACTORS[(method, quantity_unit)]
    except KeyError:
        ok = ", ".join(f"{m} in {u}" for m, u in REQUIRED_FACTORS)
        raise InvalidValueError(f"{_where(stream)}: method {method!r} with quantity in "
                                f"{quantity_unit!r} is not supported (supported: {ok})") from None


def co2_t(method: Method, quantity: float, factors: Sequence[float], *,
          stream: str | None = None) -> float:
    """t CO2 of `quantity` by `method`, given its factors in REQUIRED_FACTORS order."""
    f = tuple(factors)
    if method == "ncv_cc_of" and len(f) == 3:
        return fuel_co2_t(quantity, f[0], f[1], f[2], stream=stream)
    if method == "measured_carbon" and len(f) == 2:
        return measured_carbon_co2_t(quantity, f[0], f[1], stream=stream)
    if method == "electricity" and len(f) == 1:
        return electricity_co2_t(quantity, f[0], stream=stream)
    if method == "heat" and len(f) == 1:
        return heat_co2_t(quantity, f[0], stream=stream)
    if method == "process" and len(f) == 1:
        return process_co2_t(quantity, f[0], stream=stream)
    if method == "carbon_input" and len(f) == 1:
        return carbon_input_co2_t(quantity, f[0], stream=stream)
    if method == "carbon_output" and len(f) == 1:
        return carbon_output_co2_t(quantity, f[0], stream=stream)
    if method == "carbonate_oxides" and len(f) == 4:
        return carbonate_oxides_co2_t(quantity, f[0], f[1], f[2], f[3], stream=stream)
    if method == "electricity_export" and len(f) == 1:
        return electricity_export_co2_t(quantity, f[0], stream=stream)
    if method == "heat_export" and len(f) == 1:
        return heat_export_co2_t(quantity, f[0], stream=stream)
    if method == "electricity_green" and len(f) == 1:
        return green_electricity_co2_t(quantity, f[0], stream=stream)
    if method == "ghg" and len(f) == 1:  # another gas: no CO2 (its mass: ghg_gas_t)
        return 0.0 * check_quantity("quantity_t", quantity, stream=stream)
    raise InvalidValueError(f"{_where(stream)}: method {method!r} does not take {len(f)} factor(s)")


@dataclass(frozen=True, slots=True)
class FactorResult:
    """Emissions of one stream over [period_start, period_end) by one factor version."""

    stream: str
    period_start: datetime  # UTC, inclusive
    period_end: datetime  # UTC, exclusive
    quantity: float
    quantity_unit: QuantityUnit
    co2_t: float  # negative for carbon outputs and exports
    factor_version: str  # FactorVersion.id
    method: Method


def result(version: FactorVersion, method: Method, quantity: float,
           quantity_unit: QuantityUnit, period_start: datetime,
           period_end: datetime) -> FactorResult:
    """Emissions of `quantity` of `version`'s stream by `method` with `version`'s factors."""
    start = as_utc(period_start, f"{_where(version.stream)}: period_start")
    end = as_utc(period_end, f"{_where(version.stream)}: period_end")
    if end <= start:
        raise InvalidValueError(f"{_where(version.stream)}: period_end {end.isoformat()} is not "
                                f"after period_start {start.isoformat()}")
    e = co2_t(method, quantity, version.factors(method, quantity_unit), stream=version.stream)
    return FactorResult(version.stream, start, end, float(quantity), quantity_unit, e,
                        version.id, method)


class FactorTable:
    """The factor versions of every stream; answers which version is in force when."""

    def __init__(self, versions: Iterable[FactorVersion]) -> None:
        by_stream: dict[str, list[FactorVersion]] = {}
        ids: dict[str, FactorVersion] = {}
        for v in versions:
            if v.id in ids:
                raise InvalidValueError(f"factor version id {v.id!r} is used twice "
                                        f"(streams {ids[v.id].stream!r} and {v.stream!r})")
            ids[v.id] = v
            by_stream.setdefault(v.stream, []).append(v)
        self._versions: dict[str, tuple[FactorVersion, ...]] = {}
        self._from_s: dict[str, F64] = {}
        for stream, vs in by_stream.items():
            vs.sort(key=lambda v: v.effective_from)
            for a, b in itertools.pairwise(vs):
                if a.effective_from == b.effective_from:
                    raise InvalidValueError(f"{_where(stream)}: factor versions {a.id!r} and "
                                            f"{b.id!r} share effective_from "
                                            f"{a.effective_from.isoformat()}")
            self._versions[stream] = tuple(vs)
            self._from_s[stream] = np.array([v.effective_from.timestamp() for v in vs])

    @property
    def streams(self) -> tuple[str, ...]:
        """Names of the streams that have factor versions."""
        return tuple(self._versions)

    def versions(self, stream: str) -> tuple[FactorVersion, ...]:
        """All versions of `stream`, oldest first."""
        try:
            return self._versions[stream]
        except KeyError:
            raise FactorVersionNotFound(f"{_where(stream)} has no factor versions") from None

    def at(self, stream: str, t: datetime) -> FactorVersion:
        """The version of `stream` in force at `t`: the latest with effective_from ≤ t."""
        t = as_utc(t, f"{_where(stream)}: time")
        vs = self.versions(stream)
        found: FactorVersion | None = None
        for v in vs:
            if v.effective_from > t:
                break
            found = v
        if found is None:
            raise FactorVersionNotFound(
                f"{_where(stream)}: no factor version in force at {t.isoformat()} "
                f"(first is {vs[0].id!r}, effective from {vs[0].effective_from.isoformat()})")
        return found

    def indices(self, stream: str, t_s: F64) -> I64:
        """Per time (epoch seconds), the index into versions(stream) of the version in force."""
        vs = self.versions(stream)
        t_s = np.asarray(t_s, np.float64)
        bad_t = ~np.isfinite(t_s)
        if bad_t.any():
            raise InvalidValueError(f"{_where(stream)}: {int(bad_t.sum())} time(s) are not finite")
        idx = np.searchsorted(self._from_s[stream], t_s, side="right").astype(np.int64) - 1
        if t_s.size and idx.min() < 0:
            first = datetime.fromtimestamp(float(t_s[np.argmin(idx)]), UTC)
            raise FactorVersionNotFound(
                f"{_where(stream)}: no factor version in force at {first.isoformat()} "
                f"(first is {vs[0].id!r}, effective from {vs[0].effective_from.isoformat()})")
        return idx

    def in_force_indices(self, stream: str, period_start: datetime,
                         period_end: datetime) -> range:
        """Indices into versions(stream) of the versions in force during [start, end)."""
        start = as_utc(period_start, f"{_where(stream)}: period_start")
        end = as_utc(period_end, f"{_where(stream)}: period_end")
        self.at(stream, start)  # raises if nothing is in force at the start
        from_s = self._from_s[stream]
        first = int(np.searchsorted(from_s, start.timestamp(), side="right")) - 1
        stop = int(np.searchsorted(from_s, end.timestamp(), side="left"))
        return range(first, max(stop, first + 1))

    def in_force(self, stream: str, period_start: datetime,
                 period_end: datetime) -> tuple[FactorVersion, ...]:
        """The versions of `stream` in force during [period_start, period_end), oldest first."""
        vs = self.versions(stream)
        return tuple(vs[i] for i in self.in_force_indices(stream, period_start, period_end))

    def period_result(self, stream: str, method: Method, quantity: float,
                      quantity_unit: QuantityUnit, period_start: datetime,
                      period_end: datetime) -> FactorResult:
        """Emissions of a period total; ValueError if a factor version changes within it."""
        vs = self.in_force(stream, period_start, period_end)
        if len(vs) > 1:
            changes = ", ".join(f"{v.id!r} from {v.effective_from.isoformat()}" for v in vs[1:])
            raise InvalidValueError(f"{_where(stream)}: factors change within the period "
                                    f"({changes}); split the quantity at the effective dates "
                                    "(period_emissions)")
        return result(vs[0], method, quantity, quantity_unit, period_start, period_end)


@njit(cache=True)
def interval_co2_kernel(quantity: F64, version_idx: I64, co2_t_per_unit: F64,
                        out: F64) -> None:  # pragma: no cover - compiled
    """out[i] = quantity[i] · co2_t_per_unit[version_idx[i]] (t CO2 per interval)."""
    for i in range(quantity.shape[0]):
        out[i] = quantity[i] * co2_t_per_unit[version_idx[i]]


def co2_t_per_unit(version: FactorVersion, method: Method, quantity_unit: QuantityUnit) -> float:
    """t CO2 per unit of quantity under `version` (the formula with quantity 1)."""
    return co2_t(method, 1.0, version.factors(method, quantity_unit), stream=version.stream)


def _check_quantities(stream: str, t_s: F64, quantity: F64) -> tuple[F64, F64]:
    t_s = np.ascontiguousarray(t_s, np.float64)
    q = np.ascontiguousarray(quantity, np.float64)
    if t_s.shape != q.shape or t_s.ndim != 1:
        raise InvalidValueError(f"{_where(stream)}: times {t_s.shape} and quantities {q.shape} "
                                "must be 1-D arrays of the same length")
    bad = ~(np.isfinite(q) & (q >= 0.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidValueError(f"{_where(stream)}: quantity = {q[i]!r} at "
                                f"{datetime.fromtimestamp(float(t_s[i]), UTC).isoformat()} must be "
                                f"finite and >= 0 ({int(bad.sum())} such value(s))")
    return t_s, q


def interval_co2_t(table: FactorTable, stream: str, method: Method,
                   quantity_unit: QuantityUnit, t_s: F64, quantity: F64) -> F64:
    """t CO2 of each interval's quantity by the version in force at its time `t_s` (epoch s).

    For live per-minute values. Report figures come from period_emissions, which applies
    the formula to each version's total quantity; the two agree to float rounding.
    """
    t_s, q = _check_quantities(stream, t_s, quantity)
    idx = table.indices(stream, t_s)
    per_unit = np.array([co2_t_per_unit(v, method, quantity_unit)
                         for v in table.versions(stream)])
    out = np.empty_like(q)
    interval_co2_kernel(q, idx, per_unit, out)
    return out


def period_emissions(table: FactorTable, stream: str, method: Method,
                     quantity_unit: QuantityUnit, t_s: F64, quantity: F64,
                     period_start: datetime, period_end: datetime) -> tuple[FactorResult, ...]:
    """Emissions of [period_start, period_end) from interval quantities, split at factor changes.

    Each quantity is attributed to the version in force at its time `t_s` (epoch seconds,
    the interval's start), which must lie in the period. One FactorResult per version in
    force during the period, covering the part of the period it governs, oldest first; its
    quantity is the exact (math.fsum) sum of the quantities attributed to it, and its
    co2_t the formula applied to that sum. A version in force with no quantities gives a
    zero result, so the results always tile the period.
    """
    start = as_utc(period_start, f"{_where(stream)}: period_start")
    end = as_utc(period_end, f"{_where(stream)}: period_end")
    if end <= start:
        raise InvalidValueError(f"{_where(stream)}: period_end {end.isoformat()} is not after "
                                f"period_start {start.isoformat()}")
    t_s, q = _check_quantities(stream, t_s, quantity)
    outside = (t_s < start.timestamp()) | (t_s >= end.timestamp())
    if outside.any():
        i = int(np.argmax(outside))
        raise InvalidValueError(f"{_where(stream)}: quantity at "
                                f"{datetime.fromtimestamp(float(t_s[i]), UTC).isoformat()} lies "
                                f"outside the period [{start.isoformat()}, {end.isoformat()})")
    versions = table.versions(stream)
    in_force = table.in_force_indices(stream, start, end)
    idx = table.indices(stream, t_s)
    results = []
    for i in in_force:
        v = versions[i]
        seg_start = max(start, v.effective_from)
        seg_end = versions[i + 1].effective_from if i + 1 < in_force.stop else end
        total = math.fsum(q[idx == i].tolist())
        results.append(result(v, method, total, quantity_unit, seg_start, seg_end))
    return tuple(results)



_FUEL_METHODS = ("ncv_cc_of", "measured_carbon")


def gas_factor_problem(version: FactorVersion, method: Method,
                       quantity_unit: QuantityUnit) -> str | None:
    """Why `version`'s combustion-gas factors cannot apply to `method`; None when they can.

    ef_ch4_kg_tj / ef_n2o_kg_tj are per TJ of NCV energy: only fuels take them, and a fuel
    by measured carbon (no NCV in its formula) then needs its NCV in the version as well.
    """
    given = [n for n in GAS_FACTORS.values() if n in version.values]
    where = _where(version.stream, version.id)
    if not given:
        return None
    if method not in _FUEL_METHODS:
        return (f"{where}: {', '.join(given)} only apply to fuels (kg per TJ of NCV energy), "
                f"not to method {method}")
    ncv = NCV_FACTOR[quantity_unit]
    if ncv not in version.values:
        return (f"{where}: {', '.join(given)} need the fuel's NCV: add {ncv} to the version "
                f"(method {method} does not use it for CO2, CH4 and N2O do)")
    return None


def gases_t(version: FactorVersion, method: Method, quantity_unit: QuantityUnit,
            quantity: float, gas: str | None = None) -> dict[str, float]:
    """t of each gas other than CO2 `quantity` emits under `version`: a fuel's combustion
    CH4 and N2O (FC · NCV · EF · 1e-6, for the factors the version gives), a ghg stream's
    `gas` (quantity · ef_t_gas_t). Empty when the version has none."""
    if method == "ghg":
        if gas is None:
            raise InvalidValueError(f"{_where(version.stream, version.id)}: a ghg stream "
                                    "needs its gas")
        (ef,) = version.factors(method, quantity_unit)
        return {gas: quantity * ef}
    problem = gas_factor_problem(version, method, quantity_unit)
    if problem is not None:
        raise InvalidValueError(problem)
    out: dict[str, float] = {}
    for g, name in GAS_FACTORS.items():
        if name in version.values:
            out[g] = combustion_gas_t(quantity, version.values[NCV_FACTOR[quantity_unit]],
                                      version.values[name])
    return out
