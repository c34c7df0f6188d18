"""The plant file's `reports:` section: scheduled reports, custom report definitions and
the figures the reports need that the calculation does not (a unit's rated capacity).

    reports:
      capacity_mw: {U1: 660}          # for the load factor of the platform workbook
      definitions: [reports/stack.yaml]   # custom reports (server/reports/definition.py)
      pdf_font: /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
      schedule:
        - {kind: daily, at: "01:00", channel: mail, email: [env@plant.cn], format: xlsx}

A scheduled report goes out through an e-mail channel of `alarms.channels` (its SMTP
server and login); `email` overrides the channel's recipients.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from model.schema import ConfigModel, Identifier, Problems

FORMATS = ("xlsx", "csv", "pdf")
Format = Literal["xlsx", "csv", "pdf"]
BUILT_IN = ("daily", "monthly", "annual", "platform", "performance", "monitoring_plan")


class ScheduleConfig(ConfigModel):
    """One report made and e-mailed on a schedule, for the period that just ended.

    daily: every day at `at` (plant time), the day before; monthly and platform: on the
    1st, the month before; annual: on 1 January, the year before. `kind` may also be the
    name of a custom definition (its own period decides, as for the built-in kinds).
    """

    kind: str = Field(min_length=1)
    at: str = Field("01:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # HH:MM plant time
    channel: Identifier  # an e-mail channel of alarms.channels
    email: list[str] = Field(default_factory=list)  # recipients; default the channel's
    format: Format = "xlsx"

    @property
    def minutes_after_midnight(self) -> int:
        """`at` as minutes after plant-local midnight."""
        h, m = self.at.split(":")
        return int(h) * 60 + int(m)


class ReportsConfig(ConfigModel):
    """Scheduled and custom reports, and what only the reports need."""

    schedule: list[ScheduleConfig] = Field(default_factory=list)
    definitions: list[str] = Field(default_factory=list)  # YAML files, relative to the cwd
    capacity_mw: dict[str, float] = Field(default_factory=dict)  # unit id → rated MW
    pdf_font: str | None = None  # a TrueType font with Chinese glyphs (else searched)


def report_problems(cfg: Any) -> Problems:
    """Cross-checks of `reports:` against the rest of the plant file: schedule channels are
    e-mail channels, units named exist, kinds are known."""
    problems: Problems = []
    reports: ReportsConfig = cfg.reports
    mail = {c.id for c in cfg.alarms.channels if c.kind == "email"}
    units = {u.id for u in cfg.units}
    for i, s in enumerate(reports.schedule):
        if s.channel not in mail:
            problems.append((f"reports.schedule[{i}].channel",
                             f"{s.channel!r} is no e-mail channel of alarms.channels"
                             + (f" (e-mail channels: {', '.join(sorted(mail))})" if mail
                                else "")))
        if s.kind not in BUILT_IN and not reports.definitions:
            problems.append((f"reports.schedule[{i}].kind",
                             f"unknown report kind {s.kind!r} (built in: "
                             f"{', '.join(BUILT_IN)}; or name a custom definition)"))
    for unit in reports.capacity_mw:
        if unit not in units:
            problems.append((f"reports.capacity_mw.{unit}", f"no unit {unit!r} in units"))
    for unit, mw in reports.capacity_mw.items():
        if not mw > 0:
            problems.append((f"reports.capacity_mw.{unit}", f"must be > 0, not {mw}"))
    return problems
