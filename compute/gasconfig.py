"""Configuration schema of CO2 equivalent: the GWP set in force and from when, and the
other gases' GWPs (compute/gases.py). Part of the calculation's schema (compute/config.py).

    gwp:
      set: SAR                 # in force before the first dated version (default SAR)
      versions:                # a set in force from a date on (UTC instant, inclusive)
        - {set: AR5, effective_from: 2025-01-01T00:00:00+08:00}
      gases:                   # gases beyond CO2, CH4, N2O: their GWP in each set used
        - {gas: SF6, gwp: {SAR: 23900, AR4: 22800, AR5: 23500, AR6: 25200}}

A version should start at a plant day boundary: a day is accounted under the set in force
at its start (its hours each under the set at theirs).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import AwareDatetime, Field, field_validator

from compute.gases import BUILTIN_GASES, DEFAULT_SET, GWP_SETS, GwpTable, GwpVersion, gwp_set
from model.schema import ConfigModel, Identifier


def _known_set(v: str) -> str:
    if v not in GWP_SETS:
        raise ValueError(f"unknown GWP set {v!r} (known: {', '.join(GWP_SETS)})")
    return v


class GwpVersionConfig(ConfigModel):
    """A GWP set in force from `effective_from` on."""

    set: str
    effective_from: AwareDatetime

    @field_validator("set")
    @classmethod
    def _set(cls, v: str) -> str:
        return _known_set(v)


class GasConfig(ConfigModel):
    """A greenhouse gas beyond CO2, CH4 and N2O (an HFC, a PFC, SF6, NF3) and its GWP per set."""

    gas: Identifier
    gwp: dict[str, float] = Field(min_length=1)  # GWP set id → 100-year GWP

    @field_validator("gas")
    @classmethod
    def _not_builtin(cls, v: str) -> str:
        if v in (*BUILTIN_GASES, "CO2"):
            raise ValueError(f"gas {v!r} is built in (its GWPs come with each set); "
                             "list only other gases")
        return v

    @field_validator("gwp")
    @classmethod
    def _values(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            _known_set(k)
            if not (math.isfinite(x) and x > 0):
                raise ValueError(f"GWP {k} = {x!r} must be finite and > 0")
        return v


class GwpConfig(ConfigModel):
    """The GWP sets CO2e is computed with, and when each is in force."""

    set: str = DEFAULT_SET
    versions: list[GwpVersionConfig] = Field(default_factory=list)
    gases: list[GasConfig] = Field(default_factory=list)

    @field_validator("set")
    @classmethod
    def _set(cls, v: str) -> str:
        return _known_set(v)

    def model_post_init(self, _ctx: Any) -> None:
        """Dates unique; each gas listed once."""
        seen: dict[Any, int] = {}
        for i, v in enumerate(self.versions):
            if v.effective_from in seen:
                raise ValueError(f"versions[{i}] and versions[{seen[v.effective_from]}] share "
                                 f"effective_from {v.effective_from.isoformat()}")
            seen[v.effective_from] = i
        names: dict[str, int] = {}
        for k, g in enumerate(self.gases):
            if g.gas in names:
                raise ValueError(f"gases[{k}]: gas {g.gas!r} is listed twice "
                                 f"(also gases[{names[g.gas]}])")
            names[g.gas] = k

    @property
    def gas_ids(self) -> tuple[str, ...]:
        """Every gas a stream may name: the built-in ones and the configured."""
        return (*BUILTIN_GASES, *(g.gas for g in self.gases))

    def set_ids(self) -> tuple[str, ...]:
        """The sets in use: the initial one and each version's, without repeats."""
        return tuple(dict.fromkeys([self.set, *(v.set for v in self.versions)]))

    def missing_gwp(self, gas: str) -> list[str]:
        """The sets in use that give no GWP for a configured `gas` (built-in: none)."""
        for g in self.gases:
            if g.gas == gas:
                return [s for s in self.set_ids() if s not in g.gwp]
        return []

    def table(self) -> GwpTable:
        """The GwpTable of this configuration (compute/gases.py)."""
        extra = {g.gas: g.gwp for g in self.gases}
        return GwpTable([GwpVersion(gwp_set(self.set, extra), None),
                         *(GwpVersion(gwp_set(v.set, extra), v.effective_from)
                           for v in self.versions)])
