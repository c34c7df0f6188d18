"""The plan the calculators take: the calculation's configuration, the tag store's order,
the factor versions and the plain rule objects built from the schema.

`build_plan` is the one adapter from configuration to computation: compute/ never
branches on pydantic classes, and a recalculation builds the same plan as the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from compute.config import CalculationConfig
from compute.factors import FactorTable
from compute.substitute import SubstitutionRule


@dataclass(frozen=True, slots=True)
class CalculationPlan:
    """Everything the minute and period calculators need of a plant."""

    config: CalculationConfig
    tag_ids: tuple[str, ...]  # rows of the tag store, in configuration order
    factors: FactorTable
    substitution: tuple[SubstitutionRule | None, ...]  # per source; None: no substitute


def build_plan(config: CalculationConfig, tag_ids: Sequence[str],
               factors: FactorTable) -> CalculationPlan:
    """The plan of a validated configuration, its tag ids and its factor table."""
    return CalculationPlan(config, tuple(tag_ids), factors,
                           tuple(s.substitution.plain() for _, s in config.sources()))
