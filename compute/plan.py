"""The plan the calculators take: the calculation's configuration, the tag store's order,
the factor versions and the plain rule objects built from the schema.

`build_plan` is the one adapter from configuration to computation: compute/ never
branches on pydantic classes, and a recalculation builds the same plan as the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from compute.config import CalculationConfig
from compute.entries import Records
from compute.factors import FactorTable
from compute.substitute import SubstitutionRule


@dataclass(frozen=True, slots=True)
class CalculationPlan:
    """Everything the minute and period calculators need of a plant."""

    config: CalculationConfig
    tag_ids: tuple[str, ...]  # rows of the tag store, in configuration order
    factors: FactorTable
    substitution: tuple[SubstitutionRule | None, ...]  # per source; None: no substitute
    # What people entered (compute/entries.py); `factors` already holds its lab versions.
    records: Records = field(default_factory=Records)


def build_plan(config: CalculationConfig, tag_ids: Sequence[str],
               factors: FactorTable, records: Records | None = None) -> CalculationPlan:
    """The plan of a validated configuration, its tag ids, its factor table and entries."""
    records = Records() if records is None else records
    return CalculationPlan(config, tuple(tag_ids), records.factor_table(factors),
                           tuple(s.substitution.plain() for _, s in config.sources()), records)
