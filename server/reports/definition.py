"""Custom reports defined in YAML: which fields, over which period, grouped how.

    name: stack_daily                 # asked for as KIND (CLI, API, schedule)
    title: {zh: 烟囱日报, en: Stack daily report}
    period: day                       # day | month | year (plant local time)
    grouping: source                  # source | stream | unit | site | allowance
    fields: [co2_cems_t, capture_rate_pct, substituted_hours_h, substitution_rule]
    ids: [S1]                         # optional: only these sources (streams, units)

The fields are the columns of the standard table of that grouping (server/reports/
tables.py, each key with its unit); the period and the id columns always come first.
Every problem is a ConfigError naming the file and the key (e.g. `fields[2]`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from compute.clock import PlantClock
from compute.config import CalculationConfig
from model.errors import ConfigError
from model.schema import ConfigModel, Identifier, validation_problems
from server.reports.tables import (
    GROUPINGS,
    PERIOD_COLUMNS,
    Periods,
    Report,
    ReportData,
    Table,
    grouped_table,
)

_ID_COLUMN = {"source": "source", "stream": "stream", "unit": "unit", "site": "site"}


class Title(ConfigModel):
    """A report's title in both languages."""

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class ReportDefinition(ConfigModel):
    """One custom report."""

    name: Identifier
    title: Title
    period: Literal["day", "month", "year"]
    grouping: Literal["source", "stream", "unit", "site", "allowance"]
    fields: list[str] = Field(min_length=1)
    ids: list[str] = Field(default_factory=list)

    def key_columns(self) -> list[str]:
        """The columns every row starts with: the period, and the id of the grouping."""
        ident = _ID_COLUMN.get(self.grouping)
        return [c.key for c in PERIOD_COLUMNS] + ([ident] if ident else [])


def parse_definition(data: Any, origin: str) -> ReportDefinition:
    """Validate a loaded definition; ConfigError naming `origin` and each wrong key."""
    if not isinstance(data, dict):
        raise ConfigError(origin, "(top level)", "expected a mapping of keys")
    try:
        d = ReportDefinition.model_validate(data)
    except ValidationError as exc:
        raise ConfigError.many(origin, validation_problems(exc, ReportDefinition)) from None
    known = [c.key for c in GROUPINGS[d.grouping]]
    problems = [(f"fields[{i}]", f"unknown field {f!r} of grouping {d.grouping} "
                 f"(fields: {', '.join(k for k in known if k not in d.key_columns())})")
                for i, f in enumerate(d.fields) if f not in known]
    if d.ids and d.grouping not in ("source", "stream", "unit"):
        problems.append(("ids", f"grouping {d.grouping} has no ids to choose"))
    if problems:
        raise ConfigError.many(origin, problems)
    return d


def load_definition(path: str | Path) -> ReportDefinition:
    """Read and validate one definition file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(p), where, "not valid YAML") from None
    return parse_definition(data, str(p))


def load_definitions(paths: list[str], origin: str, cfg: CalculationConfig,
                     ) -> dict[str, ReportDefinition]:
    """Every definition the plant file lists, by name; ids must be the plant's."""
    out: dict[str, ReportDefinition] = {}
    known = {"source": {s.id for _, s in cfg.sources()},
             "stream": {s.id for _, s in cfg.streams()}, "unit": {u.id for u in cfg.units}}
    for i, path in enumerate(paths):
        d = load_definition(path)
        if d.name in out:
            raise ConfigError(origin, f"reports.definitions[{i}]",
                              f"{path}: report name {d.name!r} is used twice")
        for k, ident in enumerate(d.ids):
            if ident not in known.get(d.grouping, set()):
                raise ConfigError(path, f"ids[{k}]", f"no {d.grouping} {ident!r} in the plant")
        out[d.name] = d
    return out


def custom_report(d: ReportDefinition, cfg: CalculationConfig, clock: PlantClock,
                  start: datetime, end: datetime, data: ReportData) -> Report:
    """The report a definition describes."""
    table = grouped_table(d.grouping, cfg, clock, d.period, start, end, data)
    keys = d.key_columns()
    table = table.select([*keys, *(f for f in d.fields if f not in keys)])
    ident = _ID_COLUMN.get(d.grouping)
    if d.ids and ident is not None:
        i = keys.index(ident)
        table.rows[:] = [r for r in table.rows if r[i] in d.ids]
    table = Table(d.name, d.title.zh, d.title.en, table.columns, table.rows)
    per = Periods(clock, d.period, start, end)
    return Report(d.name, d.title.zh, d.title.en, cfg.site.id, cfg.site.name_zh or cfg.site.name,
                  cfg.site.timezone, per.start, per.end, (table,),
                  (f"custom report {d.name}: {d.grouping} by {d.period}",))
